import { randomBytes } from 'node:crypto';
import { chmod, mkdir, open, readFile, rm, rmdir, statfs, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Logger } from 'pino';
import { failedPrecondition, unavailable } from '../csi/errors.js';
import type { CacheMedium, DatasetSpec } from '../dataset/params.js';
import {
  ControlUnreachableError,
  baseEnvironment,
  type ClientPaths,
  type ControlEndpoint,
  type Engine,
  type EngineRegistry,
  type EngineStats,
  type LaunchPlan,
} from '../engines/engine.js';
import type { ClientRecord, MountIdentity } from '../mount/journal.js';
import type { Mounter } from '../kernel/mounter.js';
import { PathProbe } from '../kernel/path-probe.js';
import type { MountEntry, MountTable } from '../kernel/mountinfo.js';
import { freePort } from '../util/net.js';
import { isSameProcess, processIo, processStartTime, sleep } from '../kernel/proc.js';
import { copyRoot, ENGINE_SHARE } from '../copy/local-copy.js';
import { CacheVolumes } from './cache-volume.js';
import type { ProcessRunner } from '../kernel/runner.js';

export interface ClientLayout {
  stateDir: string;
  /** Root of MEM caches (a tmpfs such as /dev/shm). */
  memCacheDir: string;
  /**
   * Root of per-client runtime files: config, log and the credentials a restart needs. On a tmpfs
   * such as /run, so credentials never reach a disk and never sit in the state directory.
   */
  runtimeDir: string;
  /**
   * How repeat reads reach the page cache. 'bindfs': a bindfs -o auto_cache layer over the engine's
   * mount keeps file pages across opens (rclone drops them at every open), so warm reads run at
   * memory speed; pages are dropped at open when a file's size or mtime changed. 'none': the
   * engine's mount is the dataset mount.
   */
  pageCache: 'bindfs' | 'none';
}

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

export type ClientState = 'healthy' | 'dead' | 'unmounted' | 'hung';

/** What stopping a client left: its cache (kept warm, or holding writes the remote lacks). */
export interface StoppedClient {
  cacheKept: boolean;
  flushed: boolean;
}

export interface RemoteProblem {
  /** The client did not answer at all (so nothing is known about the remote). */
  clientSilent: boolean;
  reason: string;
}

export interface ClientStats {
  cacheUsedBytes?: number;
  cacheCapacityBytes?: number;
  engine: EngineStats;
  /** Bytes the page-cache layer process has read from the engine since it started. */
  served?: { pid: number; bytes: number };
}

/** The file-system type of the page-cache layer's mounts. */
export const LAYER_FS_TYPE = 'fuse.dataset-cache';

export function clientPaths(layout: ClientLayout, key: string, spec: DatasetSpec): ClientPaths {
  const base = join(layout.stateDir, 'datasets', key);
  const cacheDir =
    spec.cache.medium === 'MEM'
      ? join(layout.memCacheDir, key)
      : spec.cache.path !== undefined
        ? join(spec.cache.path, key)
        : join(base, 'cache');
  const runtimeDir = join(layout.runtimeDir, key);
  return {
    mountPoint: join(base, 'mount'),
    cacheDir,
    runtimeDir,
    logFile: join(runtimeDir, 'client.log'),
  };
}

/** The device name our clients give their mounts, so mountinfo tells them from anything else. */
export const DEVICE_PREFIX = 'dataset-cache-csi:';
export const deviceName = (key: string): string => `${DEVICE_PREFIX}${key}`;

/** Whether a mount (a dataset mount or a bind of one) was made by one of our clients. */
export const isDatasetCacheMount = (entry: MountEntry): boolean =>
  entry.source.startsWith(DEVICE_PREFIX) || entry.fsType === LAYER_FS_TYPE;

/** Where the engine mounts when a page-cache layer is stacked on top of it. */
/**
 * The stack's mount points and the dataset directory, once unmounted; empty directories only: an
 * SSD cache kept under the dataset directory stays warm for the next client.
 */
async function removeMountDirectories(mountPoint: string): Promise<void> {
  for (const dir of [
    mountPoint,
    backingMount(mountPoint),
    fuseMount(mountPoint),
    dirname(mountPoint),
  ]) {
    await rmdir(dir).catch(() => undefined);
  }
}

const backingMount = (mountPoint: string): string => join(dirname(mountPoint), 'backing');
/** Where the page-cache layer mounts when the copy overlay is the top of the stack. */
const fuseMount = (mountPoint: string): string => join(dirname(mountPoint), 'fuse');

/** The file-system type of the copy overlay, the top of a read-only dataset's stack. */
export const OVERLAY_FS_TYPE = 'overlay';
const overlayName = (key: string): string => `${deviceName(key)}:copy`;

/**
 * Whether a dataset gets the local-copy layer: read-only (a copy is never written back), served by
 * rclone (whose cache files can be promoted) under the page-cache layer (rclone itself cannot be
 * an overlay layer: it answers the overlay's xattr look-ups with EIO; bindfs --xattr-none can).
 */
export const hasCopyLayer = (spec: DatasetSpec, pageCache: ClientLayout['pageCache']): boolean =>
  spec.localCopy && spec.engine === 'rclone' && pageCache === 'bindfs';

/** The share of the cache file system the engine's own limit is taken from (a copy keeps the rest). */
const engineCacheShare = (withCopy: boolean): number => (withCopy ? ENGINE_SHARE : 1);

async function logTail(file: string, bytes = 2048): Promise<string> {
  try {
    const handle = await open(file, 'r');
    try {
      const { size } = await handle.stat();
      const buffer = Buffer.alloc(Math.min(bytes, size));
      await handle.read(buffer, 0, buffer.length, Math.max(0, size - buffer.length));
      return buffer.toString('utf8').trim().split('\n').slice(-5).join(' | ');
    } finally {
      await handle.close();
    }
  } catch {
    return '';
  }
}

const SECRETS_FILE = 'secrets.json';

/** The credentials a client was started with (kept 0600 in its runtime directory on tmpfs). */
export async function clientCredentials(
  record: Pick<ClientRecord, 'runtimeDir'>,
): Promise<Record<string, string>> {
  try {
    return JSON.parse(await readFile(join(record.runtimeDir, SECRETS_FILE), 'utf8')) as Record<
      string,
      string
    >;
  } catch {
    return {}; // no credentials were given, or the runtime dir was lost (node reboot)
  }
}

/** A process of a client that is up and mounted; watch() turns on exit reporting. */
interface Spawned {
  pid: number;
  startTime: string;
  mountPoint: string;
  watch(): void;
}

/** Starts, checks and stops the cache-client processes; knows nothing of volumes. */
export class CacheClients {
  private readonly timings: ClientTimings;
  /** One probe per mount at a time: a hung FUSE mount must not pile up stuck prober processes. */
  private readonly probes = new Map<string, Promise<boolean>>();
  readonly probe: PathProbe;
  private readonly cacheVolumes: CacheVolumes;

  constructor(
    private readonly engines: EngineRegistry,
    private readonly runner: ProcessRunner,
    private readonly mounter: Mounter,
    private readonly layout: ClientLayout,
    private readonly log: Logger,
    timings: Partial<ClientTimings> = {},
    /** Told when a client this process started exits (adopted ones are found by polling). */
    private readonly onExit: (key: string) => void = () => undefined,
  ) {
    this.timings = { ...DEFAULT_TIMINGS, ...timings };
    this.probe = new PathProbe(runner, this.timings.probeTimeoutMs);
    this.cacheVolumes = new CacheVolumes(mounter, runner, log);
  }

  /** Where dataset mounts live (pod binds elsewhere are never treated as orphans). */
  isDatasetMountPath(path: string): boolean {
    const root = join(this.layout.stateDir, 'datasets');
    return (
      path.startsWith(`${root}/`) &&
      (path.endsWith('/mount') || path.endsWith('/backing') || path.endsWith('/fuse'))
    );
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

  private probeOnce(path: string): Promise<boolean> {
    const pending = this.probes.get(path);
    if (pending) return pending;
    const probe = this.probe.answers(path).finally(() => this.probes.delete(path));
    this.probes.set(path, probe);
    return probe;
  }

  async start(
    key: string,
    spec: DatasetSpec,
    secrets: Record<string, string>,
  ): Promise<ClientRecord> {
    try {
      return await this.startOnce(key, spec, secrets);
    } catch (err) {
      // The control port was free when chosen but taken before the client bound it: once more.
      if (!(err instanceof Error) || !/remote control/.test(err.message)) throw err;
      return this.startOnce(key, spec, secrets);
    }
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

  private async newControlEndpoint(engine: Engine): Promise<ControlEndpoint | undefined> {
    if (!engine.hasControl) return undefined;
    return {
      port: await freePort(),
      user: 'dataset-cache-csi',
      password: randomBytes(24).toString('base64url'),
    };
  }

  private async startOnce(
    key: string,
    spec: DatasetSpec,
    secrets: Record<string, string>,
  ): Promise<ClientRecord> {
    const started = Date.now();
    const engine = this.engineOf(spec);
    const paths = clientPaths(this.layout, key, spec);
    // An absent local directory would be served as an empty dataset: say so instead.
    if (spec.source.kind === 'local' && (await this.probe.kind(spec.source.path)) !== 'directory') {
      throw failedPrecondition(`source directory ${spec.source.path} does not exist on this node`);
    }
    const layered = this.layout.pageCache === 'bindfs' && !engine.keepsPageCache;
    const withCopy = layered && hasCopyLayer(spec, this.layout.pageCache);
    const engineMount = layered ? backingMount(paths.mountPoint) : paths.mountPoint;
    const layerMount = withCopy ? fuseMount(paths.mountPoint) : paths.mountPoint;
    // Planned before anything is created, so that a refused plan leaves nothing behind.
    const control = await this.newControlEndpoint(engine);
    const planWith = (cacheBytes: number): LaunchPlan =>
      engine.plan(
        {
          ...spec,
          cache: { ...spec.cache, quotaBytes: Math.floor(cacheBytes * engineCacheShare(withCopy)) },
        },
        { ...paths, mountPoint: engineMount },
        secrets,
        deviceName(key),
        control,
      );
    let plan = planWith(spec.cache.quotaBytes);
    await this.detachAll(paths.mountPoint);
    await this.detachAll(layerMount);
    await this.detachAll(engineMount);
    await mkdir(engineMount, { recursive: true });
    await mkdir(layerMount, { recursive: true });
    await mkdir(paths.mountPoint, { recursive: true });
    await mkdir(paths.cacheDir, { recursive: true, mode: 0o700 });
    const cache = await this.cacheVolumes.ensure(key, spec, paths.cacheDir);
    const newCache = cache.created;
    // The engine must evict before its file system is full, and a disk image's file-system
    // overhead leaves less room than the quota.
    if (cache.capacityBytes < spec.cache.quotaBytes) plan = planWith(cache.capacityBytes);
    await mkdir(paths.runtimeDir, { recursive: true, mode: 0o700 });
    await chmod(paths.runtimeDir, 0o700);
    const files = [
      ...plan.files,
      { path: join(paths.runtimeDir, SECRETS_FILE), content: JSON.stringify(secrets) },
    ];
    for (const file of files) await writeFile(file.path, file.content, { mode: 0o600 });

    const deadline = Date.now() + this.timings.readyTimeoutMs;
    const spawned: Spawned[] = [];
    let identity: MountIdentity = { fsType: engine.fsType, source: deviceName(key) };
    let overlaid = false;
    try {
      spawned.push(
        await this.spawnUntilMounted(
          key,
          plan,
          paths.logFile,
          paths.runtimeDir,
          engineMount,
          identity,
          deadline,
        ),
      );
      // A mount comes up even when the remote is unreachable; one listing of the root tells.
      const listing = await this.runner.run(
        'find',
        [engineMount, '-mindepth', '1', '-maxdepth', '1', '-print', '-quit'],
        Math.max(1000, deadline - Date.now()),
      );
      if (listing.exitCode !== 0) {
        const why = listing.exitCode === -1 ? 'no answer in time' : listing.stderr.trim();
        throw unavailable(
          `cache client for dataset ${key} mounted but cannot list the remote (${why}): ${await logTail(paths.logFile)}`,
        );
      }
      // A listing may be answered before the engine asked the remote (s3fs checks credentials on
      // its first request and exits when they are refused): the engine's own check settles it.
      await engine
        .checkRemote?.({
          spec,
          ...(control ? { control } : {}),
          credentials: () => Promise.resolve(secrets),
          runtimeDir: paths.runtimeDir,
        })
        .catch((err: unknown) => {
          throw unavailable(
            `cache client for dataset ${key} mounted but its remote refused a request (${err instanceof Error ? err.message : String(err)})`,
          );
        });
      if (layered) {
        identity = { fsType: LAYER_FS_TYPE, source: engineMount };
        const layer: LaunchPlan = {
          command: 'bindfs',
          args: [
            '-f',
            '--multithreaded',
            ...(spec.readOnly ? ['-r'] : []),
            // An overlay layer must answer xattr look-ups; rclone's answers are EIO.
            ...(withCopy ? ['--xattr-none'] : []),
            '-o',
            `auto_cache,allow_other,subtype=${LAYER_FS_TYPE.slice('fuse.'.length)}`,
            engineMount,
            layerMount,
          ],
          env: baseEnvironment(paths.runtimeDir),
          files: [],
        };
        const layerLog = join(paths.runtimeDir, 'page-cache.log');
        spawned.push(
          await this.spawnUntilMounted(
            key,
            layer,
            layerLog,
            paths.runtimeDir,
            layerMount,
            identity,
            deadline,
          ),
        );
      }
      if (withCopy) {
        // Files of the copy are served by the kernel; the rest falls through to the engine.
        const copy = copyRoot(paths.cacheDir);
        await mkdir(copy, { recursive: true, mode: 0o755 });
        await this.mounter.mountOverlay([copy, layerMount], paths.mountPoint, overlayName(key));
        overlaid = true;
        identity = { fsType: OVERLAY_FS_TYPE, source: overlayName(key) };
      }
    } catch (err) {
      if (overlaid) await this.detachAll(paths.mountPoint);
      for (const process of spawned.reverse()) {
        await this.detachAll(process.mountPoint);
        await this.terminate(process.pid, process.startTime);
      }
      await rm(paths.runtimeDir, { recursive: true, force: true });
      // A cache made for this start holds nothing yet; one kept from before stays.
      if (newCache) await this.cacheVolumes.release(spec, paths.cacheDir, true);
      await removeMountDirectories(paths.mountPoint);
      this.log.warn(
        { dataset: key, durationMs: Date.now() - started },
        'cache client failed to start',
      );
      throw err;
    }
    for (const process of spawned) process.watch();
    const [client, layer] = spawned as [Spawned, Spawned | undefined];
    const record: ClientRecord = {
      key,
      spec,
      pid: client.pid,
      startTime: client.startTime,
      mountPoint: paths.mountPoint,
      mountIdentity: identity,
      cacheDir: paths.cacheDir,
      runtimeDir: paths.runtimeDir,
      startedAt: new Date().toISOString(),
    };
    if (layer)
      record.layer = { pid: layer.pid, startTime: layer.startTime, mountPoint: engineMount };
    if (withCopy) record.copy = { fuseMount: layerMount, root: copyRoot(paths.cacheDir) };
    if (control) record.control = control;
    this.log.info(
      {
        dataset: key,
        pid: client.pid,
        layerPid: layer?.pid,
        engine: spec.engine,
        durationMs: Date.now() - started,
      },
      'cache client started',
    );
    return record;
  }

  /** Starts one process of a client and waits until its mount shows up with the expected identity. */
  private async spawnUntilMounted(
    key: string,
    plan: LaunchPlan,
    logFile: string,
    cwd: string,
    mountPoint: string,
    identity: MountIdentity,
    deadline: number,
  ): Promise<Spawned> {
    const child = await this.runner.spawnDetached(plan.command, plan.args, {
      env: plan.env,
      cwd,
      logFile,
    });
    let exitCode: number | null | undefined;
    let watched = false;
    void child.exited.then((code) => {
      exitCode = code;
      if (!watched) return;
      this.log.warn(
        { dataset: key, pid: child.pid, command: plan.command, exitCode: code },
        'cache client process exited',
      );
      this.onExit(key);
    });
    const startTime = await processStartTime(child.pid);
    if (startTime === undefined) {
      throw unavailable(
        `${plan.command} for dataset ${key} exited at once: ${await logTail(logFile)}`,
      );
    }
    for (;;) {
      const mount = (await this.mounter.table()).at(mountPoint);
      if (mount?.fsType === identity.fsType && mount.source === identity.source) break;
      if (exitCode !== undefined) {
        throw unavailable(
          `${plan.command} for dataset ${key} exited (code ${String(exitCode)}) before mounting: ${await logTail(logFile)}`,
        );
      }
      if (Date.now() > deadline) {
        await this.terminate(child.pid, startTime);
        throw unavailable(
          `${plan.command} for dataset ${key} did not mount within ${this.timings.readyTimeoutMs} ms: ${await logTail(logFile)}`,
        );
      }
      await sleep(15);
    }
    return {
      pid: child.pid,
      startTime,
      mountPoint,
      watch: () => {
        watched = true;
      },
    };
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
      await this.terminate(record.layer.pid, record.layer.startTime);
      if (record.copy) await this.detachAll(record.copy.fuseMount);
      await this.detachAll(record.layer.mountPoint);
    }
    await this.terminate(record.pid, record.startTime);
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
    // The dataset's own directory under the state dir; never a cachePath the administrator made.
    if (dirname(dirname(cacheDir)) === join(this.layout.stateDir, 'datasets')) {
      await rmdir(dirname(cacheDir)).catch(() => undefined);
    }
  }

  /** Stops a client that does not answer: SIGKILL, then a lazy detach of its mount. */
  async kill(record: ClientRecord): Promise<void> {
    // Bottom up: a layer blocked on a hung engine mount only dies once the engine is gone.
    await this.signalAndWait(record.pid, record.startTime, 'SIGKILL', this.timings.stopTimeoutMs);
    if (record.layer) {
      await this.signalAndWait(
        record.layer.pid,
        record.layer.startTime,
        'SIGKILL',
        this.timings.stopTimeoutMs,
      );
    }
    await this.detachAll(record.mountPoint);
    if (record.copy) await this.detachAll(record.copy.fuseMount);
    if (record.layer) await this.detachAll(record.layer.mountPoint);
  }

  /**
   * Figures for metrics and volume health. Never touches the FUSE mount: the cache is a local file
   * system, the engine answers over its control API, the layer's reads come from procfs.
   */
  async stats(record: ClientRecord): Promise<ClientStats> {
    const stats: ClientStats = { engine: {}, ...(await this.cacheUsage(record)) };
    const engine = this.engineOf(record.spec);
    if (engine.stats && record.control) {
      stats.engine = await engine.stats(record.control).catch(() => ({}));
    }
    if (record.layer && (await isSameProcess(record.layer.pid, record.layer.startTime))) {
      // Every byte the layer read from the engine's mount is a page-cache miss served by the client.
      const io = await processIo(record.layer.pid);
      if (io) stats.served = { pid: record.layer.pid, bytes: io.readBytes };
    }
    return stats;
  }

  /** Use and room of the cache's own file system (tmpfs or ext4: local, safe to ask directly). */
  async cacheUsage(
    record: ClientRecord,
  ): Promise<Pick<ClientStats, 'cacheUsedBytes' | 'cacheCapacityBytes'>> {
    try {
      const fs = await statfs(record.cacheDir);
      return {
        cacheCapacityBytes: fs.blocks * fs.bsize,
        cacheUsedBytes: (fs.blocks - fs.bfree) * fs.bsize,
      };
    } catch {
      return {}; // the cache is not mounted (client restarting)
    }
  }

  /** Why the client cannot reach its remote now; undefined when it can or its engine cannot tell. */
  async remoteProblem(record: ClientRecord): Promise<RemoteProblem | undefined> {
    const engine = this.engineOf(record.spec);
    if (!engine.checkRemote) return undefined;
    try {
      await engine.checkRemote({
        spec: record.spec,
        ...(record.control ? { control: record.control } : {}),
        credentials: () => this.credentials(record),
        runtimeDir: record.runtimeDir,
      });
      return undefined;
    } catch (err) {
      const reason = err instanceof Error ? err.message : String(err);
      return { clientSilent: err instanceof ControlUnreachableError, reason };
    }
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
    while (Date.now() < deadline) {
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
      if (pending === 0) return true;
      if (!logged)
        this.log.info({ dataset: record.key, pending }, 'waiting for writes to reach the remote');
      logged = true;
      await sleep(200);
    }
    return false;
  }

  /**
   * Removes every mount stacked at a path; a busy or dead mount is detached lazily. Only the mount
   * table decides success: an unmount that fails because another one got there first is fine.
   */
  async detachAll(path: string): Promise<void> {
    let lastError: unknown;
    for (let attempt = 0; attempt < 16; attempt += 1) {
      if (!(await this.mounter.table()).at(path)) return;
      try {
        await this.mounter.unmount(path);
      } catch {
        await this.mounter.unmount(path, { lazy: true }).catch((err: unknown) => {
          lastError = err;
        });
      }
    }
    throw new Error(`could not detach the mounts at ${path}: ${String(lastError)}`);
  }

  /** SIGTERM, then SIGKILL after the grace period; only ever the PID we started. */
  private async terminate(pid: number, startTime: string | undefined): Promise<void> {
    if (startTime === undefined) return;
    if (await this.signalAndWait(pid, startTime, 'SIGTERM', this.timings.stopTimeoutMs)) return;
    await this.signalAndWait(pid, startTime, 'SIGKILL', Infinity);
  }

  /** Signals our process (PID and start identity) and waits for it to go; true when it went. */
  private async signalAndWait(
    pid: number,
    startTime: string,
    signal: NodeJS.Signals,
    timeoutMs: number,
  ): Promise<boolean> {
    if (!(await isSameProcess(pid, startTime))) return true;
    try {
      process.kill(pid, signal);
    } catch {
      return true;
    }
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (!(await isSameProcess(pid, startTime))) return true;
      await sleep(20);
    }
    return false;
  }
}
