import { copyFile, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa, type ResultPromise } from 'execa';
import { CsiClient } from '../../src/csi/client.js';
import { sleep } from '../../src/kernel/proc.js';
import { cleanupUnder } from './cleanup.js';

const MAIN = fileURLToPath(new URL('../../dist/main.js', import.meta.url));

/** The built driver as its own process, so that tests can kill it like a crash or an upgrade does. */
export class DriverProcess {
  private child: ResultPromise | undefined;
  readonly endpoint: string;
  readonly stateDir: string;
  readonly runtimeDir: string;
  readonly memCacheDir: string;
  readonly logFile: string;
  client: CsiClient;
  /** Further flags for every start (e.g. --launcher-socket). */
  extraArgs: string[] = [];

  private constructor(readonly work: string) {
    this.endpoint = `unix://${work}/csi.sock`;
    this.stateDir = join(work, 'state');
    this.runtimeDir = join(work, 'run');
    this.memCacheDir = join('/dev/shm', `dcsi-proc-${work.slice(-6)}`);
    this.logFile = join(work, 'driver.log');
    this.client = new CsiClient(this.endpoint);
  }

  static async create(): Promise<DriverProcess> {
    return new DriverProcess(await mkdtemp('/tmp/dcsi-proc-'));
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** Starts the driver and waits until Probe says ready; faultPoint arms a crash point. */
  async start(faultPoint?: string): Promise<void> {
    const env: Record<string, string> = { PATH: process.env.PATH ?? '/usr/bin:/bin' };
    if (faultPoint) env.DATASET_CACHE_CSI_FAULT_POINT = faultPoint;
    this.child = execa(
      'node',
      [
        MAIN,
        `--endpoint=${this.endpoint}`,
        '--node-id=proc-node',
        `--state-dir=${this.stateDir}`,
        `--runtime-dir=${this.runtimeDir}`,
        `--mem-cache-dir=${this.memCacheDir}`,
        '--health-interval=250',
        '--log-level=debug',
        ...this.extraArgs,
      ],
      {
        reject: false,
        env,
        extendEnv: false,
        stdout: 'ignore',
        stderr: { file: this.logFile, append: true },
      },
    );
    for (let i = 0; i < 200; i += 1) {
      try {
        if ((await this.client.identity.Probe({}, { timeoutMs: 500 })).ready?.value) return;
      } catch {
        // not listening yet
      }
      await sleep(25);
    }
    throw new Error('driver process did not become ready');
  }

  /** kill -9 of the driver alone (its cache clients live on, as in production). */
  async crash(): Promise<void> {
    if (this.child?.pid !== undefined) process.kill(this.child.pid, 'SIGKILL');
    await this.child;
    this.child = undefined;
    // grpc-js keeps reconnecting on its own; a fresh client avoids waiting for its backoff.
    this.client.close();
    this.client = new CsiClient(this.endpoint);
  }

  /** Waits for a crash the driver did to itself at a fault point. */
  async exited(): Promise<number | undefined> {
    const result = await this.child;
    this.child = undefined;
    this.client.close();
    this.client = new CsiClient(this.endpoint);
    return result?.signal === 'SIGKILL' ? 137 : (result?.exitCode ?? undefined);
  }

  async dispose(): Promise<void> {
    this.client.close();
    if (this.child?.pid !== undefined) {
      process.kill(this.child.pid, 'SIGTERM');
      await this.child;
    }
    await cleanupUnder(this.work, this.stateDir, [this.memCacheDir]);
    await this.keepLog();
    await rm(this.memCacheDir, { recursive: true, force: true });
    await rm(this.work, { recursive: true, force: true });
  }

  /** With DCSI_TEST_LOGS=<dir>, the driver's log outlives its work folder (to read a failure). */
  private async keepLog(): Promise<void> {
    const keep = process.env.DCSI_TEST_LOGS;
    if (!keep) return;
    await mkdir(keep, { recursive: true });
    await copyFile(this.logFile, join(keep, `${basename(this.work)}.log`)).catch(() => undefined);
  }
}
