// What a running client reports: cache use, the engine's own figures, the page-cache layer's reads and whether its remote answers, never through its FUSE mount.
import { statfs } from 'node:fs/promises';
import { ControlUnreachableError, type Engine } from '../engines/engine.js';
import { isSameProcess, processIo } from '../kernel/proc.js';
import { clientCredentials } from './client-credentials.js';
import type { ClientRecord, ClientStats, RemoteProblem } from './client-record.js';
import { messageOf } from '../util/errors.js';

/** Use and room of the cache's own file system (tmpfs or ext4: local, safe to ask directly). */
export async function cacheUsage(
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

/**
 * Figures for metrics and volume health: the cache is a local file system, the engine answers
 * over its control API, the layer's reads come from procfs.
 */
export async function clientStats(engine: Engine, record: ClientRecord): Promise<ClientStats> {
  const stats: ClientStats = { engine: {}, ...(await cacheUsage(record)) };
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

/** Why the client cannot reach its remote now; undefined when it can or its engine cannot tell. */
export async function remoteProblem(
  engine: Engine,
  record: ClientRecord,
): Promise<RemoteProblem | undefined> {
  if (!engine.checkRemote) return undefined;
  try {
    await engine.checkRemote({
      spec: record.spec,
      ...(record.control ? { control: record.control } : {}),
      credentials: () => clientCredentials(record),
      runtimeDir: record.runtimeDir,
    });
    return undefined;
  } catch (err) {
    const reason = messageOf(err);
    return { clientSilent: err instanceof ControlUnreachableError, reason };
  }
}
