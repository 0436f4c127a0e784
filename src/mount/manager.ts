import { mkdir, rmdir } from 'node:fs/promises';
import { join, posix } from 'node:path';
import type { Logger } from 'pino';
import {
  alreadyExists,
  failedPrecondition,
  notFound,
  resourceExhausted,
  unavailable,
} from '../csi/errors.js';
import { KeyedMutex, type VolumeLocks } from '../csi/locks.js';
import { datasetKey, type VolumeParameters } from '../dataset/params.js';
import {
  isDatasetCacheMount,
  type CacheClients,
  type ClientState,
  type ClientStats,
  type RemoteProblem,
} from '../supervisor/clients.js';
import { engineMountOf, type ClientRecord, type Journal, type VolumeRecord } from './journal.js';
import type { Mounter } from '../kernel/mounter.js';
import type { MountTable } from '../kernel/mountinfo.js';
import type { FsUsage } from '../kernel/path-probe.js';
import type { Prefetcher, PrefetchStatus, PrefetchTarget } from '../prefetch/prefetcher.js';
import type { LocalCopies } from '../copy/copies.js';
import type { CopyFigures } from '../copy/local-copy.js';

export interface VolumeHealth {
  abnormal: boolean;
  message: string;
}

/** A point where tests can stop the process, as a crash would (see --fault-point). */
export type FaultHook = (point: string) => void;

interface RestartBackoff {
  failures: number;
  notBefore: number;
}

const MAX_BACKOFF_MS = 30_000;

/** How an unhealthy client state reads in a volume condition. */
const CLIENT_PROBLEM: Record<Exclude<ClientState, 'healthy'>, string> = {
  dead: 'is not running',
  unmounted: 'lost its mount',
  hung: 'does not answer',
};
/** A cache this full is evicting all the time: worth an abnormal volume condition. */
const CACHE_FULL_FRACTION = 0.99;
const REMOTE_CHECK_TTL_MS = 10_000;
/** A health-loop answer this fresh stands in for a probe before a bind. */
const RECENT_ANSWER_MS = 2_000;

export interface DatasetStatus {
  key: string;
  /** The client process: engine totals start again with a new one. */
  pid: number;
  engine: string;
  medium: string;
  quotaBytes: number;
  up: boolean;
  volumes: number;
  /** Serving no volume, kept for keepWarm. */
  warm: boolean;
  /** Restarts of the client by this driver process. */
  restarts: number;
  stats: ClientStats;
  prefetch?: PrefetchStatus;
  /** The local copy of a read-only dataset, when it has one. */
  copy?: CopyFigures;
}

/** Consecutive hung probes after which a client is killed and restarted. */
const HUNG_PROBES_BEFORE_KILL = 3;

/**
 * Staging and publishing of volumes on one node: one cache client per Dataset, shared by all its
 * volumes, bound into staging paths and from there into pod targets. Callers hold the volume lock;
 * client start, stop and repair are serialized per dataset here.
 */
export class MountManager {
  private readonly datasetLocks = new KeyedMutex();
  private readonly backoff = new Map<string, RestartBackoff>();
  private readonly hungProbes = new Map<string, number>();
  private readonly restarts = new Map<string, number>();
  /** When the health loop last saw each dataset's mount answer. */
  private readonly answeredAt = new Map<string, number>();
  private readonly remoteChecks = new Map<string, { at: number; problem?: RemoteProblem }>();

  constructor(
    private readonly journal: Journal,
    private readonly clients: CacheClients,
    private readonly mounter: Mounter,
    private readonly locks: VolumeLocks,
    private readonly log: Logger,
    private readonly settings: {
      memCacheBytes: number;
      /** Where inline volumes are staged (the driver's own, not kubelet's). */
      ephemeralDir: string;
      prefetcher?: Prefetcher;
      copies?: LocalCopies;
    },
    private readonly fault: FaultHook = () => undefined,
  ) {}

  /** Loads the journal and reconciles it with the mount table and the running clients. */
  async init(): Promise<void> {
    await this.journal.load();
    await this.reconcile();
  }

  async stage(
    volumeId: string,
    params: VolumeParameters,
    stagingPath: string,
    secrets: Record<string, string>,
    ephemeral = false,
  ): Promise<void> {
    const started = Date.now();
    const key = datasetKey(params.dataset);
    const existing = this.journal.volume(volumeId);
    if (existing) {
      if (existing.stagingPath !== stagingPath) {
        throw alreadyExists(`volume ${volumeId} is already staged at ${existing.stagingPath}`);
      }
      if (existing.datasetKey !== key || existing.subPath !== params.subPath) {
        throw alreadyExists(
          `volume ${volumeId} is already staged with other parameters (dataset ${existing.datasetKey})`,
        );
      }
    }
    await this.datasetLocks.run(key, async () => {
      const client = await this.ensureClient(key, params, secrets);
      this.fault('stage:client-ready');
      if (existing && (await this.isBoundTo(stagingPath, client))) return;
      // A bind left by a crash before it was journaled may be dead: mkdir on it would fail.
      await this.detachLeftover(stagingPath);
      await mkdir(stagingPath, { recursive: true });
      let bound = false;
      try {
        if (params.subPath !== '') {
          await this.requireDirectory(client, params.subPath);
        }
        await this.bindStaging(client, params.subPath, stagingPath, params.dataset.readOnly);
        bound = true;
        this.fault('stage:bound');
        this.journal.setVolume({
          volumeId,
          datasetKey: key,
          subPath: params.subPath,
          stagingPath,
          readOnly: params.dataset.readOnly,
          targets: existing?.targets ?? {},
          ...(params.keepWarmMs > 0 ? { keepWarmMs: params.keepWarmMs } : {}),
          ...(ephemeral ? { ephemeral } : {}),
          ...(params.prefetch.length > 0 ? { prefetch: params.prefetch } : {}),
        });
        await this.journal.save();
      } catch (err) {
        if (bound) await this.clients.detachAll(stagingPath);
        // A failed repair keeps the record (kubelet still considers the volume staged).
        if (!existing) {
          this.journal.deleteVolume(volumeId);
          await this.releaseIfUnused(key, params.keepWarmMs);
        }
        throw err;
      }
      this.event('volume staged', started, { volumeId, dataset: key, stagingPath });
      this.settings.prefetcher?.request(await this.prefetchTarget(client), params.prefetch);
    });
  }

  async unstage(volumeId: string, stagingPath: string): Promise<void> {
    const started = Date.now();
    const volume = this.journal.volume(volumeId);
    if (!volume) {
      await this.detachLeftover(stagingPath);
      return;
    }
    if (volume.stagingPath !== stagingPath) {
      throw failedPrecondition(
        `volume ${volumeId} is staged at ${volume.stagingPath}, not at ${stagingPath}`,
      );
    }
    const table = await this.mounter.table();
    const published = Object.keys(volume.targets).filter((target) => table.at(target));
    if (published.length > 0) {
      throw failedPrecondition(
        `volume ${volumeId} is still published at ${published.join(', ')}; unpublish it first`,
      );
    }
    await this.datasetLocks.run(volume.datasetKey, async () => {
      // Journal first: after a crash here the retried call finds an unrecorded mount of ours and
      // detaches it, while the supervisor never re-binds a volume that is on its way out.
      this.journal.deleteVolume(volumeId);
      await this.journal.save();
      this.fault('unstage:journaled');
      await this.clients.detachAll(stagingPath);
      this.fault('unstage:detached');
      await this.releaseIfUnused(volume.datasetKey, volume.keepWarmMs ?? 0);
    });
    // A client still serving other volumes keeps running; what this volume wrote must still be on
    // the remote when the call returns, as it is when the last volume stops the client. Waited for
    // outside the dataset lock: an upload must not hold up stages of the same dataset.
    const sharedClient = this.journal.client(volume.datasetKey);
    if (sharedClient && !volume.readOnly && !(await this.clients.waitForUploads(sharedClient))) {
      this.log.warn(
        { volumeId, dataset: volume.datasetKey },
        'unstaged with uploads still queued; the running client keeps sending them',
      );
    }
    this.event('volume unstaged', started, { volumeId, dataset: volume.datasetKey, stagingPath });
  }

  async publish(
    volumeId: string,
    stagingPath: string,
    targetPath: string,
    readOnly: boolean,
  ): Promise<void> {
    const started = Date.now();
    const volume = this.journal.volume(volumeId);
    if (!volume) {
      throw failedPrecondition(
        `volume ${volumeId} is not staged on this node; call NodeStageVolume first`,
      );
    }
    if (volume.stagingPath !== stagingPath) {
      throw failedPrecondition(
        `volume ${volumeId} is staged at ${volume.stagingPath}, not at ${stagingPath}`,
      );
    }
    const effectiveReadOnly = readOnly || volume.readOnly;
    const client = this.journal.client(volume.datasetKey);
    if (!client) throw unavailable(`cache client of dataset ${volume.datasetKey} is not running`);
    const table = await this.mounter.table();
    const recorded = volume.targets[targetPath];
    if (recorded && this.isBindOf(table, targetPath, client)) {
      if (recorded.readOnly !== effectiveReadOnly) {
        throw alreadyExists(
          `volume ${volumeId} is already published at ${targetPath} ${recorded.readOnly ? 'read-only' : 'read-write'}`,
        );
      }
      return;
    }
    if (!this.isBindOf(table, stagingPath, client)) {
      throw unavailable(
        `staging mount of volume ${volumeId} at ${stagingPath} is not live; the node is repairing it`,
      );
    }
    // The table read above serves the whole call unless something must be detached first: each
    // read parses every mount of the node, and publish storms are what this path is for.
    const leftover = table.at(targetPath) !== undefined;
    if (leftover) await this.detachLeftover(targetPath);
    const created = await mkdir(targetPath, { recursive: true });
    let bound = false;
    try {
      await this.bindTarget(
        client,
        stagingPath,
        targetPath,
        effectiveReadOnly,
        leftover ? undefined : table,
      );
      bound = true;
      this.fault('publish:bound');
      volume.targets[targetPath] = { readOnly: effectiveReadOnly };
      await this.journal.save();
    } catch (err) {
      delete volume.targets[targetPath];
      if (bound) await this.clients.detachAll(targetPath);
      if (created !== undefined) await rmdir(targetPath).catch(() => undefined);
      throw err;
    }
    this.event('volume published', started, {
      volumeId,
      dataset: volume.datasetKey,
      targetPath,
      readOnly: effectiveReadOnly,
    });
  }

  async unpublish(volumeId: string, targetPath: string): Promise<void> {
    const started = Date.now();
    const volume = this.journal.volume(volumeId);
    if (volume?.targets[targetPath]) {
      delete volume.targets[targetPath];
      await this.journal.save();
      this.fault('unpublish:journaled');
    }
    await this.clients.detachAll(targetPath);
    try {
      await rmdir(targetPath);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      // Something written into the bare directory while it was not mounted stays for inspection.
      if (code !== 'ENOENT') {
        this.log.warn({ volumeId, targetPath, code }, 'target path left in place');
      }
    }
    this.event('volume unpublished', started, {
      volumeId,
      dataset: volume?.datasetKey,
      targetPath,
    });
  }

  /**
   * An inline volume: kubelet only publishes it, so the driver stages it itself (at a path of its
   * own) and publishes from there. A failed publish leaves nothing staged.
   */
  async publishEphemeral(
    volumeId: string,
    params: VolumeParameters,
    targetPath: string,
    readOnly: boolean,
    secrets: Record<string, string>,
  ): Promise<void> {
    const existing = this.journal.volume(volumeId);
    if (existing && !existing.ephemeral) {
      throw alreadyExists(`volume ${volumeId} is staged as a persistent volume on this node`);
    }
    const stagingPath = join(this.settings.ephemeralDir, volumeId);
    await this.stage(volumeId, params, stagingPath, secrets, true);
    try {
      await this.publish(volumeId, stagingPath, targetPath, readOnly);
    } catch (err) {
      const volume = this.journal.volume(volumeId);
      if (volume && Object.keys(volume.targets).length === 0) {
        await this.unstage(volumeId, stagingPath).catch((cleanup: unknown) =>
          this.log.error(
            { volumeId, err: String(cleanup) },
            'could not unstage a failed inline volume',
          ),
        );
      }
      throw err;
    }
  }

  isEphemeral(volumeId: string): boolean {
    return this.journal.volume(volumeId)?.ephemeral === true;
  }

  /** Unpublishes an inline volume and, with its last target gone, unstages it. */
  async unpublishEphemeral(volumeId: string, targetPath: string): Promise<void> {
    await this.unpublish(volumeId, targetPath);
    const volume = this.journal.volume(volumeId);
    if (volume?.ephemeral && Object.keys(volume.targets).length === 0) {
      await this.unstage(volumeId, volume.stagingPath);
      await rmdir(volume.stagingPath).catch(() => undefined);
    }
  }

  /** Bytes and inodes of a volume's file system, or undefined when it does not answer in time. */
  usage(path: string): Promise<FsUsage | undefined> {
    return this.clients.probe.usage(path);
  }

  /** NOT_FOUND unless the path is where this node staged or published the volume. */
  async locate(volumeId: string, path: string): Promise<VolumeRecord> {
    const volume = this.journal.volume(volumeId);
    if (!volume) throw notFound(`volume ${volumeId} is not staged or published on this node`);
    if (volume.stagingPath !== path && !volume.targets[path]) {
      throw notFound(`volume ${volumeId} is not staged or published at ${path}`);
    }
    return volume;
  }

  async health(volume: VolumeRecord, path: string): Promise<VolumeHealth> {
    const dataset = volume.datasetKey;
    const client = this.journal.client(dataset);
    const state = client ? await this.clients.state(client) : 'dead';
    if (!client || state !== 'healthy') {
      return {
        abnormal: true,
        message: `cache client of dataset ${dataset} ${CLIENT_PROBLEM[state === 'healthy' ? 'dead' : state]}; the node is restarting it`,
      };
    }
    if (!this.isBindOf(await this.mounter.table(), path, client)) {
      return {
        abnormal: true,
        message: `${path} is not a live mount of dataset ${dataset}; the node is repairing it`,
      };
    }
    const remote = await this.remoteProblem(client);
    if (remote?.clientSilent) {
      return {
        abnormal: true,
        message: `cache client of dataset ${dataset} does not answer (${remote.reason}); the node is checking it`,
      };
    }
    if (remote) {
      return {
        abnormal: true,
        message: `remote of dataset ${dataset} is unreachable (${remote.reason}); files already cached are still served`,
      };
    }
    const copy = this.copyProblem(client);
    if (copy) return { abnormal: true, message: copy };
    const { cacheUsedBytes: used, cacheCapacityBytes: capacity } =
      await this.clients.cacheUsage(client);
    if (used !== undefined && capacity !== undefined && used >= capacity * CACHE_FULL_FRACTION) {
      const mib = (bytes: number) => (bytes / 2 ** 20).toFixed(0);
      return {
        abnormal: true,
        message: `cache of dataset ${dataset} is full (${mib(used)} of ${mib(capacity)} MiB): files are evicted and fetched again; raise cacheQuota`,
      };
    }
    return { abnormal: false, message: 'cache client running, mount live, remote reachable' };
  }

  /** Why the local copy stopped growing, when it did for want of room. */
  private copyProblem(client: ClientRecord): string | undefined {
    const figures = this.settings.copies?.get(client.key)?.current();
    if (!figures || figures.refusedForRoom === 0) return undefined;
    const mib = (bytes: number) => (bytes / 2 ** 20).toFixed(0);
    return `local copy of dataset ${client.key} is incomplete: ${figures.files} files (${mib(figures.bytes)} MiB) copied, ${figures.refusedForRoom} left out for want of room in cacheQuota; they are still served through the cache client; raise cacheQuota`;
  }

  /**
   * Where the dataset's prefetch goes. A client with a copy layer gets its copy kept (promotion
   * and visibility) from now on, whether or not anything is prefetched.
   */
  private async prefetchTarget(client: ClientRecord): Promise<PrefetchTarget> {
    const target: PrefetchTarget = { key: client.key, engineMount: engineMountOf(client) };
    if (client.copy && this.settings.copies) {
      const copy = await this.settings.copies.attach({
        key: client.key,
        spec: client.spec,
        cacheDir: client.cacheDir,
        overlay: client.mountPoint,
        fuseMount: client.copy.fuseMount,
      });
      target.copy = {
        copy,
        source: {
          spec: client.spec,
          secrets: await this.clients.credentials(client),
          runtimeDir: client.runtimeDir,
        },
      };
    }
    return target;
  }

  /** The remote check costs a request: its answer is reused for a while per dataset. */
  private async remoteProblem(client: ClientRecord): Promise<RemoteProblem | undefined> {
    const cached = this.remoteChecks.get(client.key);
    if (cached && Date.now() - cached.at < REMOTE_CHECK_TTL_MS) return cached.problem;
    const problem = await this.clients.remoteProblem(client);
    // A silent client is not cached: the next call must see it recover at once.
    if (!problem?.clientSilent) this.remoteChecks.set(client.key, { at: Date.now(), problem });
    return problem;
  }

  /** Figures of every dataset client on the node, for metrics. */
  async datasets(): Promise<DatasetStatus[]> {
    return Promise.all(
      this.journal.clients().map(async (client) => ({
        key: client.key,
        pid: client.pid,
        engine: client.spec.engine,
        medium: client.spec.cache.medium,
        quotaBytes: client.spec.cache.quotaBytes,
        up: (await this.clients.state(client)) === 'healthy',
        volumes: this.journal.volumesOf(client.key).length,
        warm: client.warmUntil !== undefined,
        restarts: this.restarts.get(client.key) ?? 0,
        stats: await this.clients.stats(client),
        prefetch: this.settings.prefetcher?.status(client.key),
        copy: this.settings.copies?.get(client.key)?.current(),
      })),
    );
  }

  /**
   * One round of the health loop: every dataset with staged volumes gets a healthy client and
   * live binds. A client that is dead, lost its mount or stopped answering is restarted (with
   * backoff on failure) and every staging and target bind that pointed at it is made again.
   */
  async superviseAll(): Promise<void> {
    const keys = new Set(this.journal.volumes().map((volume) => volume.datasetKey));
    for (const key of keys) {
      try {
        await this.superviseDataset(key);
      } catch (err) {
        this.log.error({ dataset: key, err }, 'repair failed');
      }
    }
    await this.stopExpiredClients();
  }

  /** Stops clients whose keepWarm ran out (and any without volumes that was not kept warm). */
  private async stopExpiredClients(): Promise<void> {
    const idle = (client: ClientRecord): boolean =>
      this.journal.volumesOf(client.key).length === 0 &&
      (client.warmUntil === undefined || Date.parse(client.warmUntil) <= Date.now());
    for (const candidate of this.journal.clients().filter(idle)) {
      await this.datasetLocks.run(candidate.key, async () => {
        const client = this.journal.client(candidate.key);
        if (!client || !idle(client)) return;
        const started = Date.now();
        await this.stopClient(client);
        this.event('idle cache client stopped', started, {
          dataset: client.key,
          warmUntil: client.warmUntil,
        });
      });
    }
  }

  private async superviseDataset(key: string): Promise<void> {
    const backoff = this.backoff.get(key);
    if (backoff && Date.now() < backoff.notBefore) return;
    await this.datasetLocks.run(key, async () => {
      const started = Date.now();
      let client = this.journal.client(key);
      if (!client) return;
      const table = await this.mounter.table();
      const state = await this.clients.state(client, table);
      if (state === 'healthy') this.answeredAt.set(key, Date.now());
      else this.answeredAt.delete(key);
      if (state === 'hung') {
        const count = (this.hungProbes.get(key) ?? 0) + 1;
        this.hungProbes.set(key, count);
        if (count < HUNG_PROBES_BEFORE_KILL) return;
      }
      this.hungProbes.delete(key);
      let restarted = false;
      if (state !== 'healthy') {
        try {
          client = await this.clients.restart(client);
        } catch (err) {
          const failures = (backoff?.failures ?? 0) + 1;
          const delay = Math.min(MAX_BACKOFF_MS, 500 * 2 ** failures);
          this.backoff.set(key, { failures, notBefore: Date.now() + delay });
          this.log.error(
            { dataset: key, failures, retryInMs: delay, err: String(err) },
            'client restart failed',
          );
          return;
        }
        this.backoff.delete(key);
        this.countRestart(key);
        this.journal.setClient(client);
        await this.journal.save();
        restarted = true;
      }
      const repaired = await this.repairBinds(client);
      if (restarted || repaired > 0) {
        this.event('dataset repaired', started, {
          dataset: key,
          pid: client.pid,
          restarted,
          repaired,
        });
      }
    });
  }

  /** Makes every staging and target bind of a dataset's volumes live again; returns how many. */
  private async repairBinds(client: ClientRecord): Promise<number> {
    let repaired = 0;
    const intact = (table: MountTable, volume: VolumeRecord): boolean =>
      this.isBindOf(table, volume.stagingPath, client) &&
      Object.keys(volume.targets).every((target) => this.isBindOf(table, target, client));
    const before = await this.mounter.table();
    for (const volume of this.journal.volumesOf(client.key)) {
      // Locks are taken only for real repairs, so that kubelet's calls are not refused in steady state.
      if (intact(before, volume) || this.locks.isBusy(volume.volumeId)) continue;
      await this.locks.runExclusive(volume.volumeId, async () => {
        let table = await this.mounter.table();
        if (!this.isBindOf(table, volume.stagingPath, client)) {
          await this.bindStaging(client, volume.subPath, volume.stagingPath, volume.readOnly);
          repaired += 1;
          table = await this.mounter.table();
        }
        for (const [target, { readOnly }] of Object.entries(volume.targets)) {
          if (this.isBindOf(table, target, client)) continue;
          await this.bindTarget(client, volume.stagingPath, target, readOnly);
          repaired += 1;
        }
      });
    }
    return repaired;
  }

  /**
   * After a driver start: adopt healthy clients, restart dead ones that still serve volumes and
   * repair their binds, stop clients without volumes, and detach dataset mounts nobody records.
   * Binds that pods use are repaired, never removed.
   */
  private async reconcile(): Promise<void> {
    const used = new Set(this.journal.volumes().map((volume) => volume.datasetKey));
    for (const client of this.journal.clients()) {
      const warm = client.warmUntil !== undefined && Date.parse(client.warmUntil) > Date.now();
      if (used.has(client.key) || warm) {
        const state = await this.clients.state(client);
        this.log.info(
          { dataset: client.key, pid: client.pid, state },
          state === 'healthy' ? 'adopted cache client' : 'recorded cache client needs a restart',
        );
      } else {
        this.log.info(
          { dataset: client.key, pid: client.pid },
          'stopping cache client without volumes',
        );
        await this.clients.stop(client);
        this.journal.deleteClient(client.key);
      }
    }
    for (const volume of this.journal.volumes()) {
      if (!this.journal.client(volume.datasetKey)) {
        this.log.error(
          { volumeId: volume.volumeId, dataset: volume.datasetKey },
          'volume without a client record; dropped',
        );
        this.journal.deleteVolume(volume.volumeId);
      }
    }
    await this.journal.save();
    const known = new Set(
      this.journal
        .clients()
        .flatMap((client) => [
          client.mountPoint,
          ...(client.layer ? [client.layer.mountPoint] : []),
          ...(client.copy ? [client.copy.fuseMount] : []),
        ]),
    );
    for (const mount of (await this.mounter.table()).entries) {
      if (!isDatasetCacheMount(mount) || known.has(mount.mountPoint)) continue;
      if (!this.clients.isDatasetMountPath(mount.mountPoint)) continue;
      this.log.warn({ mountPoint: mount.mountPoint }, 'detaching an orphaned dataset mount');
      await this.clients.detachAll(mount.mountPoint);
    }
    await this.superviseAll();
    // Copies are kept again, and prefetches a restart interrupted resume (what is copied stays).
    for (const client of this.journal.clients()) {
      const target = await this.prefetchTarget(client);
      for (const volume of this.journal.volumesOf(client.key)) {
        this.settings.prefetcher?.request(target, volume.prefetch ?? []);
      }
    }
  }

  private async ensureClient(
    key: string,
    params: VolumeParameters,
    secrets: Record<string, string>,
  ): Promise<ClientRecord> {
    const known = this.journal.client(key);
    if (known && (await this.clients.isHealthy(known))) {
      if (known.warmUntil !== undefined) {
        delete known.warmUntil;
        this.log.info({ dataset: key, pid: known.pid }, 'warm cache client reused');
      }
      return known;
    }
    if (!known) this.requireMemoryFor(key, params);
    if (known) {
      this.log.warn({ dataset: key, pid: known.pid }, 'cache client is not healthy; restarting it');
      await this.clients.kill(known);
      this.countRestart(key);
    }
    const record = await this.clients.start(key, params.dataset, secrets);
    this.journal.setClient(record);
    await this.journal.save();
    return record;
  }

  /** MEM caches are sized up front: refuse one that the node's MEM budget cannot hold. */
  private requireMemoryFor(key: string, params: VolumeParameters): void {
    const { cache } = params.dataset;
    if (cache.medium !== 'MEM') return;
    const others = this.journal
      .clients()
      .filter((c) => c.key !== key && c.spec.cache.medium === 'MEM');
    const used = others.reduce((sum, c) => sum + c.spec.cache.quotaBytes, 0);
    if (used + cache.quotaBytes > this.settings.memCacheBytes) {
      const gib = (bytes: number) => `${(bytes / 2 ** 30).toFixed(1)}Gi`;
      throw resourceExhausted(
        `MEM cache of ${gib(cache.quotaBytes)} for dataset ${key} does not fit: this node allows ${gib(this.settings.memCacheBytes)} of MEM caches (--mem-cache-limit) and ${others.length} datasets use ${gib(used)}; use a smaller cacheQuota or cacheMedium SSD`,
      );
    }
  }

  private countRestart(key: string): void {
    this.restarts.set(key, (this.restarts.get(key) ?? 0) + 1);
  }

  /** Stops a client that serves no volume any more, or keeps it warm for keepWarm. */
  private async releaseIfUnused(key: string, keepWarmMs: number): Promise<void> {
    if (this.journal.volumesOf(key).length > 0) return;
    const client = this.journal.client(key);
    if (!client) return;
    if (keepWarmMs > 0) {
      client.warmUntil = new Date(Date.now() + keepWarmMs).toISOString();
      await this.journal.save();
      this.log.info(
        { dataset: key, pid: client.pid, warmUntil: client.warmUntil },
        'cache client kept warm',
      );
      return;
    }
    await this.stopClient(client);
  }

  private async stopClient(client: ClientRecord): Promise<void> {
    this.settings.prefetcher?.forget(client.key);
    this.settings.copies?.detach(client.key);
    await this.clients.stop(client);
    this.journal.deleteClient(client.key);
    await this.journal.save();
  }

  private async bindStaging(
    client: ClientRecord,
    subPath: string,
    stagingPath: string,
    readOnly: boolean,
  ): Promise<void> {
    await this.clients.detachAll(stagingPath);
    await this.bindFromLiveMount(client, join(client.mountPoint, subPath), stagingPath, readOnly);
  }

  /** With a current mount table that shows nothing at the target, nothing is detached first. */
  private async bindTarget(
    client: ClientRecord,
    stagingPath: string,
    targetPath: string,
    readOnly: boolean,
    table?: MountTable,
  ): Promise<void> {
    if (!table || table.at(targetPath)) await this.clients.detachAll(targetPath);
    await this.bindFromLiveMount(client, stagingPath, targetPath, readOnly, table);
  }

  /** Invariant 3: bind only from a live mount of the client's own filesystem. */
  private async bindFromLiveMount(
    client: ClientRecord,
    source: string,
    target: string,
    readOnly: boolean,
    known?: MountTable,
  ): Promise<void> {
    const table = known ?? (await this.mounter.table());
    const sourceIsLive =
      this.isBindOf(table, client.mountPoint, client) &&
      (source === client.mountPoint ||
        source.startsWith(`${client.mountPoint}/`) ||
        this.isBindOf(table, source, client));
    // The mount table proves the type and device; whether the client answers is asked by a probe
    // process (~3 ms), unless the health loop saw it answer a moment ago (publish storms).
    const answeredRecently = Date.now() - (this.answeredAt.get(client.key) ?? 0) < RECENT_ANSWER_MS;
    if (!sourceIsLive || !(answeredRecently || (await this.clients.probe.answers(source)))) {
      throw unavailable(
        `refusing to bind ${source}: it is not a live mount of dataset ${client.key}`,
      );
    }
    await this.mounter.bind(source, target, { readOnly });
  }

  /**
   * Whether the mount at path comes from the client's live dataset mount: its own type and device
   * name, and the same device number (a stale bind of a crashed client keeps the old one).
   */
  private isBindOf(table: MountTable, path: string, client: ClientRecord): boolean {
    const origin = table.at(client.mountPoint);
    const mount = table.at(path);
    return (
      origin !== undefined &&
      mount !== undefined &&
      this.clients.isOwnMount(table, client) &&
      mount.device === origin.device
    );
  }

  private async isBoundTo(path: string, client: ClientRecord): Promise<boolean> {
    return this.isBindOf(await this.mounter.table(), path, client);
  }

  /** A sub-directory made on the source after the client started may need a fresh listing. */
  private async requireDirectory(client: ClientRecord, subPath: string): Promise<void> {
    const path = join(client.mountPoint, subPath);
    if ((await this.clients.probe.kind(path)) === 'directory') return;
    await this.clients.refreshDirectory(client, posix.dirname(subPath).replace(/^\.$/, ''));
    if ((await this.clients.probe.kind(path)) !== 'directory') {
      throw failedPrecondition(
        `sub-directory "${subPath}" does not exist in dataset ${client.key}`,
      );
    }
  }

  /** Removes mounts at a path only when they came from one of our clients (never a foreign mount). */
  private async detachLeftover(path: string): Promise<void> {
    const mount = (await this.mounter.table()).at(path);
    if (mount && isDatasetCacheMount(mount)) await this.clients.detachAll(path);
  }

  private event(message: string, started: number, fields: Record<string, unknown>): void {
    this.log.info({ ...fields, durationMs: Date.now() - started }, message);
  }
}
