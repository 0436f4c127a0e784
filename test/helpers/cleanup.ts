import { readFile } from 'node:fs/promises';
import { execa } from 'execa';
import { MountTable } from '../../src/mount/mountinfo.js';
import { isSameProcess, sleep } from '../../src/util/proc.js';

interface JournalClients {
  datasets?: Record<string, { pid: number; startTime: string }>;
}

/** The cache-client PIDs a driver recorded, with their start identity. */
export async function recordedClients(
  stateDir: string,
): Promise<{ pid: number; startTime: string }[]> {
  try {
    const journal = JSON.parse(
      await readFile(`${stateDir}/journal.json`, 'utf8'),
    ) as JournalClients;
    return Object.values(journal.datasets ?? {});
  } catch {
    return [];
  }
}

export async function mountsUnder(prefix: string): Promise<string[]> {
  return (await MountTable.read()).under(prefix).map((entry) => entry.mountPoint);
}

/**
 * Leaves nothing behind even when a test failed half-way: every mount under the work directory
 * (deepest and latest first, lazily) and every cache client the journal names, by PID.
 */
export async function cleanupUnder(work: string, stateDir: string): Promise<void> {
  const clients = await recordedClients(stateDir);
  for (let round = 0; round < 50; round += 1) {
    const mounts = (await MountTable.read()).under(work);
    if (mounts.length === 0) break;
    const deepest = [...mounts].sort(
      (a, b) => b.mountPoint.length - a.mountPoint.length || b.id - a.id,
    )[0];
    if (deepest) await execa('umount', ['-c', '-l', deepest.mountPoint], { reject: false });
  }
  for (const client of clients) {
    if (!(await isSameProcess(client.pid, client.startTime))) continue;
    try {
      process.kill(client.pid, 'SIGKILL');
    } catch {
      // gone
    }
    for (let i = 0; i < 100 && (await isSameProcess(client.pid, client.startTime)); i += 1)
      await sleep(20);
  }
}
