// Running programs: short commands with a deadline and a minimal environment, and cache clients detached so they outlive the driver.
import { closeSync, openSync } from 'node:fs';
import { execa } from 'execa';

export interface CommandResult {
  exitCode: number;
  stdout: string;
  stderr: string;
}

export interface DetachedProcess {
  pid: number;
  /** Settles with the exit code (or null on a signal) while this driver process is its parent. */
  exited: Promise<number | null>;
}

export interface SpawnOptions {
  /** The complete environment: nothing of the driver's own environment is passed on. */
  env: Record<string, string>;
  cwd: string;
  /** stdout and stderr of the client are appended here (created 0600). */
  logFile: string;
}

/** The narrow door to the operating system's processes; tests may pass their own. */
export interface ProcessRunner {
  /** `env` is added to a minimal PATH/locale environment (never the driver's own). */
  run(
    command: string,
    args: string[],
    timeoutMs?: number,
    env?: Record<string, string>,
  ): Promise<CommandResult>;
  spawnDetached(command: string, args: string[], options: SpawnOptions): Promise<DetachedProcess>;
}

export class ExecaRunner implements ProcessRunner {
  async run(
    command: string,
    args: string[],
    timeoutMs = 30_000,
    env: Record<string, string> = {},
  ): Promise<CommandResult> {
    const child = execa(command, args, {
      reject: false,
      stdin: 'ignore',
      env: { LC_ALL: 'C', PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', ...env },
      extendEnv: false,
    });
    let timer: NodeJS.Timeout | undefined;
    // On time-out the child is SIGKILLed but not waited for: a process blocked on a FUSE request
    // that its server already took cannot die until that server answers or dies.
    const timedOut = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), timeoutMs);
    });
    try {
      const result = await Promise.race([child, timedOut]);
      if (result === 'timeout') {
        child.kill('SIGKILL');
        return {
          exitCode: -1,
          stdout: '',
          stderr: `${command} did not finish within ${timeoutMs} ms`,
        };
      }
      return {
        exitCode: result.exitCode ?? -1,
        stdout: String(result.stdout ?? ''),
        stderr: String(result.stderr ?? result.message ?? ''),
      };
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Own session and process group, no pipes to us: the client outlives the driver process
   * (an upgrade or crash of the driver must not stop pod I/O).
   */
  async spawnDetached(
    command: string,
    args: string[],
    options: SpawnOptions,
  ): Promise<DetachedProcess> {
    // The log file is handed over as a file descriptor, not piped through us: a pipe would break
    // (SIGPIPE) the moment the driver exits. execa's types only admit literal descriptors 3-9.
    const logFd = openSync(options.logFile, 'a', 0o600) as 3;
    try {
      const child = execa(command, args, {
        detached: true,
        cleanup: false,
        reject: false,
        buffer: false,
        env: options.env,
        extendEnv: false,
        cwd: options.cwd,
        stdin: 'ignore',
        stdout: logFd,
        stderr: logFd,
      });
      if (child.pid === undefined) throw new Error(`could not start ${command}`);
      child.unref();
      const exited = child.then((result) => result.exitCode ?? null);
      return { pid: child.pid, exited };
    } finally {
      closeSync(logFd);
    }
  }
}
