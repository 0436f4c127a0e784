// Binds of a dataset's mount into staging and target paths, made only from a live mount of the dataset's own stack.
import { join, posix } from 'node:path';
import { failedPrecondition, unavailable } from '../csi/errors.js';
import type { Mounter } from '../kernel/mounter.js';
import type { MountTable } from '../kernel/mountinfo.js';
import { isDatasetCacheMount } from '../supervisor/client-layout.js';
import type { ClientRecord } from '../supervisor/client-record.js';
import type { CacheClients } from '../supervisor/clients.js';

/** An answer this fresh (the health loop's, or a bind's probe) stands in for a probe before a bind. */
const RECENT_ANSWER_MS = 2_000;

/**
 * Staging binds (the dataset mount or its sub-directory) and target binds (the staging path),
 * checked against the mount table: invariant 3, nothing is bound from a bare directory or a dead
 * client's mount.
 */
export class DatasetBinds {
  /** When each dataset's mount last answered a probe (the health loop's, or a bind's). */
  private readonly answeredAt = new Map<string, number>();

  constructor(
    private readonly clients: CacheClients,
    private readonly mounter: Mounter,
  ) {}

  /** What the health loop saw of a dataset's mount just now. */
  noteAnswer(key: string, answered: boolean): void {
    if (answered) this.answeredAt.set(key, Date.now());
    else this.answeredAt.delete(key);
  }

  async bindStaging(
    client: ClientRecord,
    subPath: string,
    stagingPath: string,
    readOnly: boolean,
  ): Promise<void> {
    await this.clients.detachAll(stagingPath);
    await this.bindFromLiveMount(client, join(client.mountPoint, subPath), stagingPath, readOnly);
  }

  /** With a current mount table that shows nothing at the target, nothing is detached first. */
  async bindTarget(
    client: ClientRecord,
    stagingPath: string,
    targetPath: string,
    readOnly: boolean,
    table?: MountTable,
  ): Promise<void> {
    if (!table || table.at(targetPath)) await this.clients.detachAll(targetPath);
    await this.bindFromLiveMount(client, stagingPath, targetPath, readOnly, table);
  }

  /**
   * A repair: the new stack's bind takes the dead one's place (Mounter.replaceBind). A reader
   * never finds the path empty meanwhile, so files of the local copy read through the old overlay
   * stay readable until the new one is there.
   */
  async rebindStaging(
    client: ClientRecord,
    subPath: string,
    stagingPath: string,
    readOnly: boolean,
  ): Promise<void> {
    await this.bindFromLiveMount(
      client,
      join(client.mountPoint, subPath),
      stagingPath,
      readOnly,
      undefined,
      true,
    );
  }

  /** See rebindStaging; the target is bound from the staging path's newest mount. */
  async rebindTarget(
    client: ClientRecord,
    stagingPath: string,
    targetPath: string,
    readOnly: boolean,
  ): Promise<void> {
    await this.bindFromLiveMount(client, stagingPath, targetPath, readOnly, undefined, true);
  }

  /** Invariant 3: bind only from a live mount of the client's own filesystem. */
  private async bindFromLiveMount(
    client: ClientRecord,
    source: string,
    target: string,
    readOnly: boolean,
    known?: MountTable,
    /** In place of what is mounted at target (a repair), never leaving it empty. */
    replace = false,
  ): Promise<void> {
    const table = known ?? (await this.mounter.table());
    const sourceIsLive =
      this.isBindOf(table, client.mountPoint, client) &&
      (source === client.mountPoint ||
        source.startsWith(`${client.mountPoint}/`) ||
        this.isBindOf(table, source, client));
    // The mount table proves the type and device; whether the client answers is asked by a probe
    // process (~3 ms), unless it answered a moment ago (the health loop, or the probe of a bind
    // before: publish storms). Binds asking at once share one probe: measured with 50 publishes
    // right after a stage on 2 busy cores, each spawning its own took 50-300 ms (p99 460 ms).
    const answeredRecently = Date.now() - (this.answeredAt.get(client.key) ?? 0) < RECENT_ANSWER_MS;
    if (!sourceIsLive || !(answeredRecently || (await this.probe(client, source)))) {
      throw unavailable(
        `refusing to bind ${source}: it is not a live mount of dataset ${client.key}`,
      );
    }
    if (replace && table.at(target)) await this.mounter.replaceBind(source, target, { readOnly });
    else await this.mounter.bind(source, target, { readOnly });
  }

  private async probe(client: ClientRecord, source: string): Promise<boolean> {
    const answered = await this.clients.probeOnce(source);
    if (answered) this.answeredAt.set(client.key, Date.now());
    return answered;
  }

  /**
   * Whether the mount at path comes from the client's live dataset mount: its own type and device
   * name, and the same device number (a stale bind of a crashed client keeps the old one).
   */
  isBindOf(table: MountTable, path: string, client: ClientRecord): boolean {
    const origin = table.at(client.mountPoint);
    const mount = table.at(path);
    return (
      origin !== undefined &&
      mount !== undefined &&
      this.clients.isOwnMount(table, client) &&
      mount.device === origin.device
    );
  }

  async isBoundTo(path: string, client: ClientRecord): Promise<boolean> {
    return this.isBindOf(await this.mounter.table(), path, client);
  }

  /** A sub-directory made on the source after the client started may need a fresh listing. */
  async requireDirectory(client: ClientRecord, subPath: string): Promise<void> {
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
  async detachLeftover(path: string): Promise<void> {
    const mount = (await this.mounter.table()).at(path);
    if (mount && isDatasetCacheMount(mount)) await this.clients.detachAll(path);
  }
}
