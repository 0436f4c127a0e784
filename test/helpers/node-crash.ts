// A node crash for tests: the driver process and every process it started die at once, by PID.
import { readdir, readFile } from 'node:fs/promises';
import { isSameProcess, processStartTime } from '../../src/kernel/proc.js';
import { until } from './wait.js';
import { recordedProcesses } from './cleanup.js';
import type { DriverProcess } from './driver-process.js';

interface Identified {
  pid: number;
  startTime: string;
}

/** PID -> parent PID of every process, from /proc/PID/stat. */
async function parents(): Promise<Map<number, number>> {
  const found = new Map<number, number>();
  for (const name of await readdir('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = await readFile(`/proc/${name}/stat`, 'utf8');
      // The command name may hold spaces and parentheses: the fields start after the last ')'.
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      found.set(Number(name), ppid);
    } catch {
      // ended meanwhile
    }
  }
  return found;
}

/** Every live descendant of `root` (children, their children, …), with its start time. */
async function descendants(root: number): Promise<Identified[]> {
  const tree = await parents();
  const below = new Set<number>([root]);
  // Parents may come after their children in /proc's order: repeat until nothing is added.
  for (let grew = true; grew;) {
    grew = false;
    for (const [pid, ppid] of tree) {
      if (below.has(ppid) && !below.has(pid)) {
        below.add(pid);
        grew = true;
      }
    }
  }
  below.delete(root);
  const found: Identified[] = [];
  for (const pid of below) {
    const startTime = await processStartTime(pid);
    if (startTime !== undefined) found.push({ pid, startTime });
  }
  return found;
}

/**
 * kill -9 of a whole node as a power loss does it: the driver, its cache clients (detached, so
 * recorded in its journal rather than found as its children), their page-cache layers and every
 * transfer it had running. The driver is stopped first (SIGSTOP), so that it starts nothing new
 * between the listing of its processes and their end. What stays: mounts (dead FUSE ones) and
 * files, as on a disk that comes back after the reboot. Returns the PIDs killed besides the driver.
 */
export async function crashNode(driver: DriverProcess): Promise<number[]> {
  const pid = driver.pid;
  if (pid === undefined) throw new Error('the driver is not running');
  process.kill(pid, 'SIGSTOP');
  const victims: Identified[] = [];
  try {
    victims.push(...(await descendants(pid)), ...(await recordedProcesses(driver.stateDir)));
    for (const victim of victims) {
      if (!(await isSameProcess(victim.pid, victim.startTime))) continue;
      try {
        process.kill(victim.pid, 'SIGKILL');
      } catch {
        // gone already
      }
    }
  } finally {
    // SIGKILL ends a stopped process too; crash() waits for it and renews the CSI client.
    await driver.crash();
  }
  for (const victim of victims) {
    await until(
      `process ${victim.pid} to end with the node crash`,
      async () => ((await isSameProcess(victim.pid, victim.startTime)) ? undefined : true),
      5000,
      20,
    );
  }
  return [...new Set(victims.map((v) => v.pid))];
}
