// After a driver start: the journal reconciled with the mount table and the running processes.
import type { Logger } from 'pino';
import type { Mounter } from '../kernel/mounter.js';
import { isDatasetCacheMount } from '../supervisor/client-layout.js';
import type { ClientRecord, StoppedClient } from '../supervisor/client-record.js';
import type { CacheClients } from '../supervisor/clients.js';
import type { Journal } from './journal.js';

/**
 * After a driver start: adopt healthy clients, keep dead ones that still serve volumes (the
 * first supervision round restarts them and repairs their binds), stop clients without volumes,
 * and detach dataset mounts nobody records.
 * Binds that pods use are repaired, never removed.
 */
export async function reconcileNode(
  journal: Journal,
  clients: CacheClients,
  mounter: Mounter,
  log: Logger,
  /** Told what a stopped client left (its cache may be kept: see NodeCaches). */
  stopped: (client: ClientRecord, outcome: StoppedClient) => Promise<void>,
): Promise<void> {
  const used = new Set(journal.volumes().map((volume) => volume.datasetKey));
  for (const client of journal.clients()) {
    const warm = client.warmUntil !== undefined && Date.parse(client.warmUntil) > Date.now();
    if (used.has(client.key) || warm) {
      const state = await clients.state(client);
      log.info(
        { dataset: client.key, pid: client.pid, state },
        state === 'healthy' ? 'adopted cache client' : 'recorded cache client needs a restart',
      );
    } else {
      log.info({ dataset: client.key, pid: client.pid }, 'stopping cache client without volumes');
      const outcome = await clients.stop(client);
      journal.deleteClient(client.key);
      await stopped(client, outcome);
    }
  }
  for (const volume of journal.volumes()) {
    if (!journal.client(volume.datasetKey)) {
      log.error(
        { volumeId: volume.volumeId, dataset: volume.datasetKey },
        'volume without a client record; dropped',
      );
      journal.deleteVolume(volume.volumeId);
    }
  }
  await journal.save();
  const known = new Set(
    journal
      .clients()
      .flatMap((client) => [
        client.mountPoint,
        ...(client.layer ? [client.layer.mountPoint] : []),
        ...(client.copy ? [client.copy.fuseMount] : []),
      ]),
  );
  for (const mount of (await mounter.table()).entries) {
    if (!isDatasetCacheMount(mount) || known.has(mount.mountPoint)) continue;
    if (!clients.isDatasetMountPath(mount.mountPoint)) continue;
    log.warn({ mountPoint: mount.mountPoint }, 'detaching an orphaned dataset mount');
    await clients.detachAll(mount.mountPoint);
  }
}
