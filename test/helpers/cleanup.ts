import { readFile } from 'node:fs/promises';
import { execa } from 'execa';
import { MountTable } from '../../src/kernel/mountinfo.js';
import { isSameProcess, sleep } from '../../src/kernel/proc.js';

interface RecordedProcess {
  pid: number;
  startTime: string;
}

export interface RecordedClient extends RecordedProcess {
  key: string;
  mountPoint: string;
  cacheDir: string;
  layer?: RecordedProcess;
}

interface JournalClients {
  datasets?: Record<string, RecordedClient>;
}

/** The cache clients a driver recorded: PID, start identity, dataset mount and layer. */
export async function recordedClients(stateDir: string): Promise<RecordedClient[]> {
  const journal = await readJson<JournalClients>(`${stateDir}/journal.json`);
  return Object.values(journal.datasets ?? {});
}

/** Every process the driver recorded: clients and their page-cache layers. */
export async function recordedProcesses(stateDir: string): Promise<RecordedProcess[]> {
  const journal = await readJson<JournalClients>(`${stateDir}/journal.json`);
  return Object.values(journal.datasets ?? {}).flatMap((d) => [d, ...(d.layer ? [d.layer] : [])]);
}

async function readJson<T>(path: string): Promise<Partial<T>> {
  try {
    return JSON.parse(await readFile(path, 'utf8')) as T;
  } catch {
    return {};
  }
}

/** Detaches every mount below root, deepest and latest first, lazily. */
export async function unmountUnder(root: string): Promise<void> {
  for (let round = 0; round < 50; round += 1) {
    const mounts = (await MountTable.read()).under(root);
    if (mounts.length === 0) return;
    const deepest = [...mounts].sort(
      (a, b) => b.mountPoint.length - a.mountPoint.length || b.id - a.id,
    )[0];
    if (deepest) await execa('umount', ['-c', '-l', deepest.mountPoint], { reject: false });
  }
}

/**
 * Leaves nothing behind even when a test failed half-way: every mount under the work directory
 * (deepest and latest first, lazily) and every cache client the journal names, by PID.
 */
export async function cleanupUnder(
  work: string,
  stateDir: string,
  alsoUnder: string[] = [],
): Promise<void> {
  const clients = await recordedProcesses(stateDir);
  for (const root of [work, ...alsoUnder]) await unmountUnder(root);
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
