// The node's volume lifecycle: one cache client per dataset, staged, published, supervised and reconciled.
import { mkdir, rmdir } from 'node:fs/promises';
import type { Logger } from 'pino';
import { alreadyExists, failedPrecondition, notFound, unavailable } from '../csi/errors.js';
import { KeyedMutex, type VolumeLocks } from '../csi/locks.js';
import { datasetKey, type DatasetSpec, type VolumeParameters } from '../dataset/params.js';
import type { ClientRecord } from '../supervisor/client-record.js';
import type { CacheClients } from '../supervisor/clients.js';
import { DatasetBinds } from './binds.js';
import { reconcileNode } from './reconcile.js';
import { DatasetSupervisor } from './supervision.js';
import { VolumeHealthReporter, type VolumeHealth } from './volume-health.js';
import type { Journal, VolumeRecord } from './journal.js';
import type { Mounter } from '../kernel/mounter.js';
import type { FsUsage } from '../kernel/path-probe.js';
import type { Prefetcher, PrefetchTarget } from '../prefetch/prefetcher.js';
import type { LocalCopies } from '../copy/copies.js';
import type { NodeCacheFigures, NodeCaches } from './node-caches.js';
import type { ClusterTier } from '../tier/cluster-tier.js';
import { datasetStatuses, type DatasetStatus } from './dataset-status.js';
import { fillTarget } from './fill-target.js';

/** A health round this recent (they run every second by default) tells metrics a client's state. */
const RECENT_STATE_MS = 3000;

/** A point where tests can stop the process, as a crash would (see --fault-point). */
export type FaultHook = (point: string) => void;

/**
 * Staging and publishing of volumes on one node: one cache client per Dataset, shared by all its
 * volumes, bound into staging paths and from there into pod targets. Callers hold the volume lock;
 * client start, stop and repair are serialized per dataset here.
 */
export class MountManager {
  private readonly datasetLocks = new KeyedMutex();
  private readonly supervisor: DatasetSupervisor;
  /** When the health loop last saw each dataset's mount answer. */
  private readonly binds: DatasetBinds;
  private readonly healthReporter: VolumeHealthReporter;

  constructor(
    private readonly journal: Journal,
    private readonly clients: CacheClients,
    private readonly mounter: Mounter,
    private readonly locks: VolumeLocks,
    private readonly log: Logger,
    private readonly settings: {
      /** The node's MEM and disk cache budgets and its kept caches. */
      caches: NodeCaches;
      prefetcher?: Prefetcher;
      copies?: LocalCopies;
      /** The cluster tier, for datasets whose StorageClass asks for it. */
      tier?: ClusterTier;
    },
    private readonly fault: FaultHook = () => undefined,
  ) {
    this.binds = new DatasetBinds(clients, mounter);
    this.supervisor = new DatasetSupervisor(
      journal,
      clients,
      mounter,
      locks,
      this.binds,
      this.datasetLocks,
      log,
      (client) => this.stopClient(client),
    );
    this.healthReporter = new VolumeHealthReporter(
      journal,
      clients,
      mounter,
      this.binds,
      settings.copies,
      settings.tier,
    );
  }

  /** The condition of a volume at one of its paths (NodeGetVolumeStats). */
  health(volume: VolumeRecord, path: string): Promise<VolumeHealth> {
    return this.healthReporter.health(volume, path);
  }

  /**
   * Loads the journal and reconciles it with the mount table and the running clients; then the
   * copies are kept again and prefetches a restart interrupted resume (what is copied stays).
   */
  async init(): Promise<void> {
    await this.journal.load();
    await reconcileNode(this.journal, this.clients, this.mounter, this.log, (client, outcome) =>
      this.settings.caches.stopped(client, outcome),
    );
    await this.superviseAll();
    for (const client of this.journal.clients()) {
      const target = await this.prefetchTarget(client);
      for (const volume of this.journal.volumesOf(client.key)) {
        this.settings.prefetcher?.request(target, volume.prefetch ?? [], {
          autoPrefetch: volume.autoPrefetch === true,
        });
      }
    }
  }

  /** One round of the health loop (see DatasetSupervisor). */
  async superviseAll(): Promise<void> {
    await this.supervisor.superviseAll();
    await this.settings.caches.sweep();
  }

  /** The node's cache budgets and kept caches, for metrics. */
  nodeCaches(): NodeCacheFigures {
    return this.settings.caches.figures();
  }

  async stage(
    volumeId: string,
    params: VolumeParameters,
    stagingPath: string,
    secrets: Record<string, string>,
    ephemeral = false,
  ): Promise<void> {
    const started = Date.now();
    if (params.dataset.clusterTier && !this.settings.tier) {
      throw failedPrecondition(
        'the volume asks for the cluster tier (clusterTier: "true") but the driver on this node has none: set --cluster-tier (Helm value clusterTier.location)',
      );
    }
    let key = datasetKey(params.dataset);
    const existing = this.journal.volume(volumeId);
    if (existing) {
      if (existing.stagingPath !== stagingPath) {
        throw alreadyExists(`volume ${volumeId} is already staged at ${existing.stagingPath}`);
      }
      // A repeated stage after the credentials were rotated (or of a volume staged by a version
      // that kept them out of the key) stays on the client it has; new volumes get a new one.
      if (
        existing.datasetKey !== key &&
        this.differsInCredentialsOnly(existing.datasetKey, params)
      ) {
        key = existing.datasetKey;
      }
      if (existing.datasetKey !== key || existing.subPath !== params.subPath) {
        throw alreadyExists(
          `volume ${volumeId} is already staged with other parameters (dataset ${existing.datasetKey})`,
        );
      }
    }
    await this.datasetLocks.run(key, async () => {
      const before = this.journal.client(key);
      const client = await this.ensureClient(key, params, secrets);
      this.fault('stage:client-ready');
      if (existing && (await this.binds.isBoundTo(stagingPath, client))) return;
      // A bind left by a crash before it was journaled may be dead: mkdir on it would fail.
      await this.binds.detachLeftover(stagingPath);
      await mkdir(stagingPath, { recursive: true });
      let bound = false;
      try {
        if (params.subPath !== '') {
          await this.binds.requireDirectory(client, params.subPath);
        }
        await this.binds.bindStaging(client, params.subPath, stagingPath, params.dataset.readOnly);
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
          ...(params.autoPrefetch ? { autoPrefetch: true as const } : {}),
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
      const target = await this.prefetchTarget(client);
      // A new client on a copy an earlier one left (a disk cache outlives its client): the remote
      // may have changed meanwhile, so the copy is checked against it (in the background).
      if (client !== before && target.copy && target.copy.copy.current().files > 0) {
        this.settings.prefetcher?.refresh(target);
      }
      this.settings.prefetcher?.request(target, params.prefetch, params);
    });
  }

  async unstage(volumeId: string, stagingPath: string): Promise<void> {
    const started = Date.now();
    const volume = this.journal.volume(volumeId);
    if (!volume) {
      await this.binds.detachLeftover(stagingPath);
      return;
    }
    requireStagedAt(volume, stagingPath);
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
    requireStagedAt(volume, stagingPath);
    const effectiveReadOnly = readOnly || volume.readOnly;
    const client = this.journal.client(volume.datasetKey);
    if (!client) throw unavailable(`cache client of dataset ${volume.datasetKey} is not running`);
    const table = await this.mounter.table();
    const recorded = volume.targets[targetPath];
    if (recorded && this.binds.isBindOf(table, targetPath, client)) {
      if (recorded.readOnly !== effectiveReadOnly) {
        throw alreadyExists(
          `volume ${volumeId} is already published at ${targetPath} ${recorded.readOnly ? 'read-only' : 'read-write'}`,
        );
      }
      return;
    }
    if (!this.binds.isBindOf(table, stagingPath, client)) {
      throw unavailable(
        `staging mount of volume ${volumeId} at ${stagingPath} is not live; the node is repairing it`,
      );
    }
    // The table read above serves the whole call unless something must be detached first: each
    // read parses every mount of the node, and publish storms are what this path is for.
    const leftover = table.at(targetPath) !== undefined;
    if (leftover) await this.binds.detachLeftover(targetPath);
    const created = await mkdir(targetPath, { recursive: true });
    let bound = false;
    try {
      await this.binds.bindTarget(
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

  /** The volume's record on this node, if it is staged or published here. */
  volume(volumeId: string): VolumeRecord | undefined {
    return this.journal.volume(volumeId);
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

  /** Where the dataset's fills go (see fillTarget). */
  private prefetchTarget(client: ClientRecord): Promise<PrefetchTarget> {
    return fillTarget(client, {
      copies: this.settings.copies,
      prefetcher: this.settings.prefetcher,
      tier: this.settings.tier,
      credentials: (record) => this.clients.credentials(record),
    });
  }

  private differsInCredentialsOnly(key: string, params: VolumeParameters): boolean {
    const client = this.journal.client(key);
    const anyone = (spec: DatasetSpec): string => datasetKey({ ...spec, tenant: undefined });
    return client !== undefined && anyone(client.spec) === anyone(params.dataset);
  }

  /** Figures of every dataset client on the node, for metrics. */
  datasets(): Promise<DatasetStatus[]> {
    return datasetStatuses({
      journal: this.journal,
      clients: this.clients,
      recentState: (key) => this.supervisor.recentState(key, RECENT_STATE_MS),
      restartsOf: (key) => this.supervisor.restartsOf(key),
      remoteReachable: (client) => this.healthReporter.remoteReachable(client),
      prefetcher: this.settings.prefetcher,
      copies: this.settings.copies,
      tier: this.settings.tier,
    });
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
    const start = async (): Promise<ClientRecord> => {
      const record = await this.clients.start(key, params.dataset, secrets);
      this.journal.setClient(record);
      await this.journal.save();
      return record;
    };
    if (known) {
      // Its cache is already counted in the node's budget.
      this.log.warn({ dataset: key, pid: known.pid }, 'cache client is not healthy; restarting it');
      await this.clients.kill(known);
      this.supervisor.countRestart(key);
      return start();
    }
    const settle = await this.settings.caches.reserve(
      key,
      params.dataset,
      this.clients.cacheDirOf(key, params.dataset),
    );
    let started = false;
    try {
      const record = await start();
      started = true;
      return record;
    } finally {
      await settle(started);
    }
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
    this.settings.tier?.forget(client.key);
    const outcome = await this.clients.stop(client);
    this.journal.deleteClient(client.key);
    await this.settings.caches.stopped(client, outcome);
    await this.journal.save();
  }

  private event(message: string, started: number, fields: Record<string, unknown>): void {
    this.log.info({ ...fields, durationMs: Date.now() - started }, message);
  }
}

/** FAILED_PRECONDITION unless the volume is staged at this path. */
function requireStagedAt(volume: VolumeRecord, stagingPath: string): void {
  if (volume.stagingPath !== stagingPath) {
    throw failedPrecondition(
      `volume ${volume.volumeId} is staged at ${volume.stagingPath}, not at ${stagingPath}`,
    );
  }
}
