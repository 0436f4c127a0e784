// The cache clients of a node: start, check, restart and stop each dataset's client stack; knows nothing of volumes.
import { rm, rmdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { Logger } from 'pino';
import type { CacheMedium, DatasetSpec } from '../dataset/params.js';
import type { Engine, EngineRegistry } from '../engines/engine.js';
import type { Mounter } from '../kernel/mounter.js';
import type { MountTable } from '../kernel/mountinfo.js';
import { PathProbe } from '../kernel/path-probe.js';
import { isSameProcess, sleep } from '../kernel/proc.js';
import type { ProcessRunner } from '../kernel/runner.js';
import { CacheVolumes } from './cache-volume.js';
import { clientCredentials } from './client-credentials.js';
import {
  clientPaths,
  isDatasetMountPath,
  isUnderDatasetDirectory,
  LAYER_FS_TYPE,
  removeMountDirectories,
  type ClientLayout,
} from './client-layout.js';
import { ClientProcesses, logTail } from './client-processes.js';
import type {
  ClientRecord,
  ClientState,
  ClientStats,
  RemoteProblem,
  StoppedClient,
} from './client-record.js';
import { startClientStack, type StackParts } from './client-start.js';
import { cacheUsage, clientStats, remoteProblem } from './client-stats.js';

export interface ClientTimings {
  readyTimeoutMs: number;
  stopTimeoutMs: number;
  /** How long a stop waits for written files to reach the remote. */
  flushTimeoutMs: number;
  /** How long a health probe of a mount may take before it counts as hung. */
  probeTimeoutMs: number;
}

const DEFAULT_TIMINGS: ClientTimings = {
  readyTimeoutMs: 30_000,
  stopTimeoutMs: 5_000,
  flushTimeoutMs: 120_000,
  probeTimeoutMs: 2_000,
};

/** Starts, checks and stops the cache-client processes; knows nothing of volumes. */
export class CacheClients {
  private readonly timings: ClientTimings;
  /** One probe per mount at a time: a hung FUSE mount must not pile up stuck prober processes. */
  private readonly probes = new Map<string, Promise<boolean>>();
  readonly probe: PathProbe;
  private readonly cacheVolumes: CacheVolumes;
  private readonly processes: ClientProcesses;
  private readonly stack: StackParts;

  constructor(
    private readonly engines: EngineRegistry,
    runner: ProcessRunner,
    private readonly mounter: Mounter,
    private readonly layout: ClientLayout,
    private readonly log: Logger,
    timings: Partial<ClientTimings> = {},
    /** Told when a client this process started exits (adopted ones are found by polling). */
    onExit: (key: string) => void = () => undefined,
  ) {
    this.timings = { ...DEFAULT_TIMINGS, ...timings };
    this.probe = new PathProbe(runner, this.timings.probeTimeoutMs);
    this.cacheVolumes = new CacheVolumes(mounter, runner, log);
    this.processes = new ClientProcesses(runner, mounter, log, this.timings, onExit);
    this.stack = {
      engineOf: (spec) => this.engineOf(spec),
      runner,
      mounter,
      layout,
      log,
      processes: this.processes,
      cacheVolumes: this.cacheVolumes,
      probe: this.probe,
      readyTimeoutMs: this.timings.readyTimeoutMs,
    };
  }

  /** Where dataset mounts live (pod binds elsewhere are never treated as orphans). */
  isDatasetMountPath(path: string): boolean {
    return isDatasetMountPath(this.layout, path);
  }

  engineOf(spec: DatasetSpec): Engine {
    return this.engines.get(spec.engine);
  }

  /** Whether the mount at mountPoint is the client's own (type and source recorded at start). */
  isOwnMount(table: MountTable, record: ClientRecord): boolean {
    const mount = table.at(record.mountPoint);
    return (
      mount?.fsType === record.mountIdentity.fsType && mount.source === record.mountIdentity.source
    );
  }

  /** Processes alive (same start identity), the mount present, of its type and answering. */
  async state(record: ClientRecord, table?: MountTable): Promise<ClientState> {
    if (!(await isSameProcess(record.pid, record.startTime))) return 'dead';
    if (record.layer && !(await isSameProcess(record.layer.pid, record.layer.startTime)))
      return 'dead';
    const mounts = table ?? (await this.mounter.table());
    if (!this.isOwnMount(mounts, record)) return 'unmounted';
    if (record.copy && mounts.at(record.copy.fuseMount)?.fsType !== LAYER_FS_TYPE)
      return 'unmounted';
    return (await this.probeOnce(record.mountPoint)) ? 'healthy' : 'hung';
  }

  async isHealthy(record: ClientRecord): Promise<boolean> {
    return (await this.state(record)) === 'healthy';
  }

  /** Whether the path answers a stat in time; callers asking at once share one probe. */
  probeOnce(path: string): Promise<boolean> {
    const pending = this.probes.get(path);
    if (pending) return pending;
    const probe = this.probe.answers(path).finally(() => this.probes.delete(path));
    this.probes.set(path, probe);
    return probe;
  }

  start(key: string, spec: DatasetSpec, secrets: Record<string, string>): Promise<ClientRecord> {
    return startClientStack(this.stack, key, spec, secrets);
  }

  /**
   * Starts a client again with the credentials its first start received (kept 0600 on tmpfs), on
   * the same cache: a crash must not cost the warm cache, nor unsent writes in it.
   */
  async restart(record: ClientRecord): Promise<ClientRecord> {
    const paths = clientPaths(this.layout, record.key, record.spec);
    const secrets = await this.credentials(record);
    this.log.warn(
      { dataset: record.key, pid: record.pid, clientLog: await logTail(paths.logFile) },
      'restarting cache client',
    );
    await this.kill(record);
    return this.start(record.key, record.spec, secrets);
  }

  /** The credentials the client was started with, for its restarts and transfers. */
  credentials(record: ClientRecord): Promise<Record<string, string>> {
    return clientCredentials(record);
  }

  /**
   * Waits for written files to reach the remote, unmounts, stops the process, removes runtime files
   * (they hold credentials) and a RAM cache. A cache that may still hold unsent writes is kept: the
   * next client of the dataset sends them.
   */
  async stop(record: ClientRecord): Promise<StoppedClient> {
    const started = Date.now();
    const flushed = await this.waitForUploads(record);
    await this.detachAll(record.mountPoint);
    if (record.layer) {
      await this.processes.terminate(record.layer.pid, record.layer.startTime);
      if (record.copy) await this.detachAll(record.copy.fuseMount);
      await this.detachAll(record.layer.mountPoint);
    }
    await this.processes.terminate(record.pid, record.startTime);
    await rm(record.runtimeDir, { recursive: true, force: true });
    if (!flushed) {
      this.log.error(
        { dataset: record.key, cacheDir: record.cacheDir },
        'writes may not have reached the remote; cache kept for the next client of this dataset',
      );
    }
    const cacheKept = await this.cacheVolumes.release(record.spec, record.cacheDir, flushed);
    await removeMountDirectories(record.mountPoint);
    this.log.info(
      { dataset: record.key, pid: record.pid, durationMs: Date.now() - started },
      'cache client stopped',
    );
    return { cacheKept, flushed };
  }

  /** Where a client of this dataset keeps its cache. */
  cacheDirOf(key: string, spec: DatasetSpec): string {
    return clientPaths(this.layout, key, spec).cacheDir;
  }

  /** Removes a cache kept after its client stopped (see NodeCaches), and its dataset directory. */
  async discardCache(medium: CacheMedium, cacheDir: string): Promise<void> {
    await this.cacheVolumes.discard(medium, cacheDir);
    if (isUnderDatasetDirectory(this.layout, cacheDir)) {
      await rmdir(dirname(cacheDir)).catch(() => undefined);
    }
  }

  /** Stops a client that does not answer: SIGKILL, then a lazy detach of its mount. */
  async kill(record: ClientRecord): Promise<void> {
    // Bottom up: a layer blocked on a hung engine mount only dies once the engine is gone.
    await this.processes.kill(record.pid, record.startTime);
    if (record.layer) await this.processes.kill(record.layer.pid, record.layer.startTime);
    await this.detachAll(record.mountPoint);
    if (record.copy) await this.detachAll(record.copy.fuseMount);
    if (record.layer) await this.detachAll(record.layer.mountPoint);
  }

  /** Figures for metrics and volume health; never touches the FUSE mount. */
  stats(record: ClientRecord): Promise<ClientStats> {
    return clientStats(this.engineOf(record.spec), record);
  }

  cacheUsage(
    record: ClientRecord,
  ): Promise<Pick<ClientStats, 'cacheUsedBytes' | 'cacheCapacityBytes'>> {
    return cacheUsage(record);
  }

  /** Why the client cannot reach its remote now; undefined when it can or its engine cannot tell. */
  remoteProblem(record: ClientRecord): Promise<RemoteProblem | undefined> {
    return remoteProblem(this.engineOf(record.spec), record);
  }

  /** Makes the client re-read a directory of the dataset from the remote, when it can. */
  async refreshDirectory(record: ClientRecord, dir: string): Promise<void> {
    const engine = this.engineOf(record.spec);
    if (!engine.refreshDirectory || !record.control) return;
    try {
      await engine.refreshDirectory(record.control, dir);
    } catch (err) {
      this.log.warn({ dataset: record.key, dir, err: String(err) }, 'directory refresh failed');
    }
  }

  /** True when nothing written through the mount is still waiting for upload. */
  async waitForUploads(record: ClientRecord): Promise<boolean> {
    if (record.spec.readOnly) return true;
    const engine = this.engineOf(record.spec);
    if (!engine.pendingWrites || !record.control) return true;
    if (!(await isSameProcess(record.pid, record.startTime))) return false;
    const deadline = Date.now() + this.timings.flushTimeoutMs;
    let logged = false;
    let emptyBefore = false;
    while (Date.now() < deadline || emptyBefore) {
      let pending: number;
      try {
        pending = await engine.pendingWrites(record.control);
      } catch (err) {
        this.log.warn(
          { dataset: record.key, err: String(err) },
          'could not ask the client for pending writes',
        );
        return false;
      }
      // A file closed a moment ago enters the upload queue when the client handles its release,
      // which the kernel sends after close() returns: the queue must be empty twice in a row.
      if (pending === 0 && emptyBefore) return true;
      emptyBefore = pending === 0;
      if (pending > 0 && !logged)
        this.log.info({ dataset: record.key, pending }, 'waiting for writes to reach the remote');
      logged ||= pending > 0;
      await sleep(200);
    }
    return false;
  }

  /** Removes every mount stacked at a path (see ClientProcesses.detachAll). */
  detachAll(path: string): Promise<void> {
    return this.processes.detachAll(path);
  }
}
