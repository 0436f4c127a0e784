// The processes of a client stack: started detached until their mount shows up, signalled only by PID and start identity, their mounts detached.
import { open } from 'node:fs/promises';
import type { Logger } from 'pino';
import { unavailable } from '../csi/errors.js';
import type { LaunchPlan } from '../engines/engine.js';
import type { Mounter } from '../kernel/mounter.js';
import { isSameProcess, processStartTime, sleep } from '../kernel/proc.js';
import type { ProcessRunner } from '../kernel/runner.js';
import type { MountIdentity } from './client-record.js';

/** The last lines of a client's log, for messages that say why it failed. */
export async function logTail(file: string, bytes = 2048): Promise<string> {
  try {
    const handle = await open(file, 'r');
    try {
      const { size } = await handle.stat();
      const buffer = Buffer.alloc(Math.min(bytes, size));
      await handle.read(buffer, 0, buffer.length, Math.max(0, size - buffer.length));
      return buffer.toString('utf8').trim().split('\n').slice(-5).join(' | ');
    } finally {
      await handle.close();
    }
  } catch {
    return '';
  }
}

/** A process of a client that is up and mounted; watch() turns on exit reporting. */
export interface Spawned {
  pid: number;
  startTime: string;
  mountPoint: string;
  watch(): void;
}

export class ClientProcesses {
  constructor(
    private readonly runner: ProcessRunner,
    private readonly mounter: Mounter,
    private readonly log: Logger,
    private readonly timings: { readyTimeoutMs: number; stopTimeoutMs: number },
    /** Told when a watched process exits. */
    private readonly onExit: (key: string) => void,
  ) {}

  /** Starts one process of a client and waits until its mount shows up with the expected identity. */
  async spawnUntilMounted(
    key: string,
    plan: LaunchPlan,
    logFile: string,
    cwd: string,
    mountPoint: string,
    identity: MountIdentity,
    deadline: number,
  ): Promise<Spawned> {
    const child = await this.runner.spawnDetached(plan.command, plan.args, {
      env: plan.env,
      cwd,
      logFile,
    });
    let exitCode: number | null | undefined;
    let watched = false;
    void child.exited.then((code) => {
      exitCode = code;
      if (!watched) return;
      this.log.warn(
        { dataset: key, pid: child.pid, command: plan.command, exitCode: code },
        'cache client process exited',
      );
      this.onExit(key);
    });
    const startTime = await processStartTime(child.pid);
    if (startTime === undefined) {
      throw unavailable(
        `${plan.command} for dataset ${key} exited at once: ${await logTail(logFile)}`,
      );
    }
    for (;;) {
      const mount = (await this.mounter.table()).at(mountPoint);
      if (mount?.fsType === identity.fsType && mount.source === identity.source) break;
      if (exitCode !== undefined) {
        throw unavailable(
          `${plan.command} for dataset ${key} exited (code ${String(exitCode)}) before mounting: ${await logTail(logFile)}`,
        );
      }
      if (Date.now() > deadline) {
        await this.terminate(child.pid, startTime);
        throw unavailable(
          `${plan.command} for dataset ${key} did not mount within ${this.timings.readyTimeoutMs} ms: ${await logTail(logFile)}`,
        );
      }
      await sleep(15);
    }
    return {
      pid: child.pid,
      startTime,
      mountPoint,
      watch: () => {
        watched = true;
      },
    };
  }

  /** SIGTERM, then SIGKILL after the grace period; only ever the PID we started. */
  async terminate(pid: number, startTime: string | undefined): Promise<void> {
    if (startTime === undefined) return;
    if (await this.signalAndWait(pid, startTime, 'SIGTERM', this.timings.stopTimeoutMs)) return;
    await this.signalAndWait(pid, startTime, 'SIGKILL', Infinity);
  }

  /** SIGKILL for a process that does not answer; true when it went within the grace period. */
  kill(pid: number, startTime: string): Promise<boolean> {
    return this.signalAndWait(pid, startTime, 'SIGKILL', this.timings.stopTimeoutMs);
  }

  /** Signals our process (PID and start identity) and waits for it to go; true when it went. */
  private async signalAndWait(
    pid: number,
    startTime: string,
    signal: NodeJS.Signals,
    timeoutMs: number,
  ): Promise<boolean> {
    if (!(await isSameProcess(pid, startTime))) return true;
    try {
      process.kill(pid, signal);
    } catch {
      return true;
    }
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (!(await isSameProcess(pid, startTime))) return true;
      await sleep(20);
    }
    return false;
  }

  /**
   * Removes every mount stacked at a path; a busy or dead mount is detached lazily. Only the mount
   * table decides success: an unmount that fails because another one got there first is fine.
   */
  async detachAll(path: string): Promise<void> {
    let lastError: unknown;
    for (let attempt = 0; attempt < 16; attempt += 1) {
      if (!(await this.mounter.table()).at(path)) return;
      try {
        await this.mounter.unmount(path);
      } catch {
        await this.mounter.unmount(path, { lazy: true }).catch((err: unknown) => {
          lastError = err;
        });
      }
    }
    throw new Error(`could not detach the mounts at ${path}: ${String(lastError)}`);
  }
}
