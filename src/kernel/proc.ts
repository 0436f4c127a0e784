// Processes through /proc: a PID's start time (its identity against PID reuse) and I/O counters, and ending a child by its PID.
import { readFile } from 'node:fs/promises';

/**
 * The start time of a process in clock ticks since boot (field 22 of /proc/PID/stat). Together with
 * the PID it identifies a process: a PID reused by another program has another start time.
 */
export async function processStartTime(pid: number): Promise<string | undefined> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const state = fields[0];
    if (state === 'Z' || state === 'X') return undefined;
    return fields[19];
  } catch {
    return undefined;
  }
}

export async function isSameProcess(pid: number, startTime: string): Promise<boolean> {
  return (await processStartTime(pid)) === startTime;
}

export const sleep = (ms: number): Promise<void> =>
  new Promise((resolve) => setTimeout(resolve, ms));

/** Ends a child this process started (SIGTERM, by its PID) and waits until it has exited. */
export async function terminateChild(child: {
  pid?: number | undefined;
  exitCode: number | null;
  then: PromiseLike<unknown>['then'];
}): Promise<void> {
  if (child.pid !== undefined && child.exitCode === null) {
    try {
      process.kill(child.pid, 'SIGTERM');
    } catch {
      // already gone
    }
  }
  await child;
}

/**
 * Bytes a process has read and written through system calls (files and sockets alike), from
 * /proc/PID/io; undefined when the process is gone.
 */
export async function processIo(
  pid: number,
): Promise<{ readBytes: number; writtenBytes: number } | undefined> {
  const io = await readFile(`/proc/${pid}/io`, 'utf8').catch(() => undefined);
  const field = (name: string) => new RegExp(`^${name}:\\s+(\\d+)$`, 'm').exec(io ?? '')?.[1];
  const read = field('rchar');
  const written = field('wchar');
  return read === undefined || written === undefined
    ? undefined
    : { readBytes: Number(read), writtenBytes: Number(written) };
}
