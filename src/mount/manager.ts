import { mkdir, rmdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { alreadyExists, failedPrecondition, notFound, unavailable } from '../csi/errors.js';
import { KeyedMutex } from '../csi/locks.js';
import { datasetKey, type VolumeParameters } from '../dataset/params.js';
import type { CacheClients } from '../supervisor/clients.js';
import { deviceName } from '../supervisor/clients.js';
import type { ClientRecord, Journal, VolumeRecord } from './journal.js';
import { isResponsive, type Mounter } from './mounter.js';
import type { MountTable } from './mountinfo.js';

export interface VolumeHealth {
  abnormal: boolean;
  message: string;
}

/**
 * Staging and publishing of volumes on one node: one cache client per Dataset, shared by all its
 * volumes, bound into staging paths and from there into pod targets. Callers serialize per volume;
 * per-dataset work (client start and stop, reference counts) is serialized here.
 */
export class MountManager {
  private readonly datasetLocks = new KeyedMutex();

  constructor(
    private readonly journal: Journal,
    private readonly clients: CacheClients,
    private readonly mounter: Mounter,
    private readonly log: Logger,
  ) {}

  /** Loads the journal and tells which recorded clients are still alive (adoption). */
  async init(): Promise<void> {
    await this.journal.load();
    for (const record of this.journal.clients()) {
      const healthy = await this.clients.isHealthy(record);
      this.log.info(
        { dataset: record.key, pid: record.pid, healthy },
        healthy ? 'adopted cache client' : 'recorded cache client is not running',
      );
    }
  }

  async stage(
    volumeId: string,
    params: VolumeParameters,
    stagingPath: string,
    secrets: Record<string, string>,
  ): Promise<void> {
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
      if (existing && (await this.isBoundTo(stagingPath, client))) return;
      const source = join(client.mountPoint, params.subPath);
      await mkdir(stagingPath, { recursive: true });
      let bound = false;
      try {
        if (params.subPath !== '') await this.requireDirectory(source, params.subPath, key);
        await this.clients.detachAll(stagingPath);
        await this.bindFromLiveMount(client, source, stagingPath, params.dataset.readOnly);
        bound = true;
        this.journal.setVolume({
          volumeId,
          datasetKey: key,
          subPath: params.subPath,
          stagingPath,
          readOnly: params.dataset.readOnly,
          targets: existing?.targets ?? {},
        });
        await this.journal.save();
      } catch (err) {
        if (bound) await this.clients.detachAll(stagingPath);
        // A failed repair keeps the record (kubelet still considers the volume staged).
        if (!existing) {
          this.journal.deleteVolume(volumeId);
          await this.releaseIfUnused(key);
        }
        throw err;
      }
    });
  }

  async unstage(volumeId: string, stagingPath: string): Promise<void> {
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
      await this.clients.detachAll(stagingPath);
      this.journal.deleteVolume(volumeId);
      await this.journal.save();
      await this.releaseIfUnused(volume.datasetKey);
    });
  }

  async publish(
    volumeId: string,
    stagingPath: string,
    targetPath: string,
    readOnly: boolean,
  ): Promise<void> {
    const volume = this.journal.volume(volumeId);
    if (!volume)
      throw failedPrecondition(
        `volume ${volumeId} is not staged on this node; call NodeStageVolume first`,
      );
    if (volume.stagingPath !== stagingPath) {
      throw failedPrecondition(
        `volume ${volumeId} is staged at ${volume.stagingPath}, not at ${stagingPath}`,
      );
    }
    const effectiveReadOnly = readOnly || volume.readOnly;
    const client = this.requireClient(volume);
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
    const created = await mkdir(targetPath, { recursive: true });
    let bound = false;
    try {
      await this.clients.detachAll(targetPath);
      await this.bindFromLiveMount(client, stagingPath, targetPath, effectiveReadOnly);
      bound = true;
      volume.targets[targetPath] = { readOnly: effectiveReadOnly };
      await this.journal.save();
    } catch (err) {
      delete volume.targets[targetPath];
      if (bound) await this.clients.detachAll(targetPath);
      if (created !== undefined) await rmdir(targetPath).catch(() => undefined);
      throw err;
    }
  }

  async unpublish(volumeId: string, targetPath: string): Promise<void> {
    await this.clients.detachAll(targetPath);
    try {
      await rmdir(targetPath);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      // Something written into the bare directory while it was not mounted stays for inspection.
      if (code !== 'ENOENT')
        this.log.warn({ volumeId, targetPath, code }, 'target path left in place');
    }
    const volume = this.journal.volume(volumeId);
    if (volume?.targets[targetPath]) {
      delete volume.targets[targetPath];
      await this.journal.save();
    }
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
    const client = this.journal.client(volume.datasetKey);
    if (!client || !(await this.clients.isHealthy(client))) {
      return {
        abnormal: true,
        message: `cache client of dataset ${volume.datasetKey} is not running`,
      };
    }
    if (!this.isBindOf(await this.mounter.table(), path, client)) {
      return {
        abnormal: true,
        message: `${path} is not a live mount of dataset ${volume.datasetKey}`,
      };
    }
    return { abnormal: false, message: 'cache client running, mount live' };
  }

  private async ensureClient(
    key: string,
    params: VolumeParameters,
    secrets: Record<string, string>,
  ): Promise<ClientRecord> {
    const known = this.journal.client(key);
    if (known && (await this.clients.isHealthy(known))) return known;
    if (known) {
      this.log.warn({ dataset: key, pid: known.pid }, 'cache client is not healthy; restarting it');
      await this.clients.stop(known);
    }
    const record = await this.clients.start(key, params.dataset, secrets);
    this.journal.setClient(record);
    await this.journal.save();
    return record;
  }

  private requireClient(volume: VolumeRecord): ClientRecord {
    const client = this.journal.client(volume.datasetKey);
    if (!client) throw unavailable(`cache client of dataset ${volume.datasetKey} is not running`);
    return client;
  }

  private async releaseIfUnused(key: string): Promise<void> {
    if (this.journal.volumesOf(key).length > 0) return;
    const client = this.journal.client(key);
    if (!client) return;
    await this.clients.stop(client);
    this.journal.deleteClient(key);
    await this.journal.save();
  }

  /** Invariant 3: bind only from a live mount of the client's own filesystem. */
  private async bindFromLiveMount(
    client: ClientRecord,
    source: string,
    target: string,
    readOnly: boolean,
  ): Promise<void> {
    const table = await this.mounter.table();
    const sourceIsLive =
      this.isBindOf(table, client.mountPoint, client) &&
      (source === client.mountPoint ||
        source.startsWith(`${client.mountPoint}/`) ||
        this.isBindOf(table, source, client));
    if (!sourceIsLive || !(await isResponsive(source))) {
      throw unavailable(
        `refusing to bind ${source}: it is not a live mount of dataset ${client.key}`,
      );
    }
    await this.mounter.bind(source, target, { readOnly });
  }

  /**
   * Whether the mount at path comes from the client's live dataset mount: same filesystem type,
   * our device name and the same device number (a stale bind of a crashed client has the old one).
   */
  private isBindOf(table: MountTable, path: string, client: ClientRecord): boolean {
    const origin = table.at(client.mountPoint);
    const mount = table.at(path);
    return (
      origin !== undefined &&
      mount !== undefined &&
      origin.fsType === this.clients.engineOf(client.spec).fsType &&
      origin.source === deviceName(client.key) &&
      mount.device === origin.device
    );
  }

  private async isBoundTo(path: string, client: ClientRecord): Promise<boolean> {
    return this.isBindOf(await this.mounter.table(), path, client);
  }

  private async requireDirectory(path: string, subPath: string, key: string): Promise<void> {
    const info = await stat(path).catch(() => undefined);
    if (!info?.isDirectory()) {
      throw failedPrecondition(`sub-directory "${subPath}" does not exist in dataset ${key}`);
    }
  }

  /** Unstage of a volume we have no record of: remove only a mount that came from one of our clients. */
  private async detachLeftover(stagingPath: string): Promise<void> {
    const mount = (await this.mounter.table()).at(stagingPath);
    if (mount?.source.startsWith('dataset-cache-csi:')) await this.clients.detachAll(stagingPath);
  }
}
