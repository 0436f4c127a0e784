import { randomBytes } from 'node:crypto';
import { chmod, mkdir, open, readdir, rm, rmdir, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Logger } from 'pino';
import { unavailable } from '../csi/errors.js';
import type { DatasetSpec } from '../dataset/params.js';
import type { ClientPaths, ControlEndpoint, Engine, EngineRegistry } from '../engines/engine.js';
import type { ClientRecord } from '../mount/journal.js';
import { isResponsive, type Mounter } from '../mount/mounter.js';
import { freePort } from '../util/net.js';
import { isSameProcess, processStartTime, sleep } from '../util/proc.js';
import type { ProcessRunner } from './runner.js';

export interface ClientLayout {
  stateDir: string;
  /** Root of MEM caches (a tmpfs such as /dev/shm). */
  memCacheDir: string;
}

export interface ClientTimings {
  readyTimeoutMs: number;
  stopTimeoutMs: number;
  /** How long a stop waits for written files to reach the remote. */
  flushTimeoutMs: number;
}

const DEFAULT_TIMINGS: ClientTimings = {
  readyTimeoutMs: 30_000,
  stopTimeoutMs: 5_000,
  flushTimeoutMs: 120_000,
};

export function clientPaths(layout: ClientLayout, key: string, spec: DatasetSpec): ClientPaths {
  const base = join(layout.stateDir, 'datasets', key);
  const cacheDir =
    spec.cache.medium === 'MEM'
      ? join(layout.memCacheDir, key)
      : spec.cache.path !== undefined
        ? join(spec.cache.path, key)
        : join(base, 'cache');
  const runtimeDir = join(base, 'run');
  return {
    mountPoint: join(base, 'mount'),
    cacheDir,
    runtimeDir,
    logFile: join(runtimeDir, 'client.log'),
  };
}

/** The device name our clients give their mounts, so mountinfo tells them from anything else. */
export const deviceName = (key: string): string => `dataset-cache-csi:${key}`;

async function logTail(file: string, bytes = 2048): Promise<string> {
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

/** Lists a directory within a time limit; returns why it could not, or undefined on success. */
async function listsWithin(path: string, timeoutMs: number): Promise<string | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<string>((resolve) => {
    timer = setTimeout(() => resolve(`no answer within ${timeoutMs} ms`), timeoutMs);
  });
  try {
    return await Promise.race([
      readdir(path).then(
        () => undefined,
        (err: NodeJS.ErrnoException) => err.code ?? String(err),
      ),
      timeout,
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Starts, checks and stops the cache-client processes; knows nothing of volumes. */
export class CacheClients {
  private readonly timings: ClientTimings;

  constructor(
    private readonly engines: EngineRegistry,
    private readonly runner: ProcessRunner,
    private readonly mounter: Mounter,
    private readonly layout: ClientLayout,
    private readonly log: Logger,
    timings: Partial<ClientTimings> = {},
  ) {
    this.timings = { ...DEFAULT_TIMINGS, ...timings };
  }

  engineOf(spec: DatasetSpec): Engine {
    return this.engines.get(spec.engine);
  }

  /** Process alive (same start identity) and its mount present, of its type and answering. */
  async isHealthy(record: ClientRecord): Promise<boolean> {
    if (!(await isSameProcess(record.pid, record.startTime))) return false;
    const mount = (await this.mounter.table()).at(record.mountPoint);
    if (
      mount?.fsType !== this.engineOf(record.spec).fsType ||
      mount.source !== deviceName(record.key)
    )
      return false;
    return isResponsive(record.mountPoint);
  }

  async start(
    key: string,
    spec: DatasetSpec,
    secrets: Record<string, string>,
  ): Promise<ClientRecord> {
    try {
      return await this.startOnce(key, spec, secrets);
    } catch (err) {
      // The control port was free when chosen but taken before the client bound it: once more.
      if (!(err instanceof Error) || !/remote control/.test(err.message)) throw err;
      return this.startOnce(key, spec, secrets);
    }
  }

  private async newControlEndpoint(engine: Engine): Promise<ControlEndpoint | undefined> {
    if (!engine.hasControl) return undefined;
    return {
      port: await freePort(),
      user: 'dataset-cache-csi',
      password: randomBytes(24).toString('base64url'),
    };
  }

  private async startOnce(
    key: string,
    spec: DatasetSpec,
    secrets: Record<string, string>,
  ): Promise<ClientRecord> {
    const started = Date.now();
    const engine = this.engineOf(spec);
    const paths = clientPaths(this.layout, key, spec);
    await this.detachAll(paths.mountPoint);
    await mkdir(paths.mountPoint, { recursive: true });
    await mkdir(paths.cacheDir, { recursive: true, mode: 0o700 });
    await mkdir(paths.runtimeDir, { recursive: true, mode: 0o700 });
    await chmod(paths.runtimeDir, 0o700);
    const control = await this.newControlEndpoint(engine);
    const plan = engine.plan(spec, paths, secrets, deviceName(key), control);
    for (const file of plan.files) await writeFile(file.path, file.content, { mode: 0o600 });

    const child = this.runner.spawnDetached(plan.command, plan.args, {
      env: plan.env,
      cwd: paths.runtimeDir,
      logFile: paths.logFile,
    });
    let exitCode: number | null | undefined;
    void child.exited.then((code) => {
      exitCode = code;
    });
    const startTime = await processStartTime(child.pid);
    const deadline = Date.now() + this.timings.readyTimeoutMs;
    try {
      for (;;) {
        const mount = (await this.mounter.table()).at(paths.mountPoint);
        if (mount?.fsType === engine.fsType && mount.source === deviceName(key)) break;
        if (exitCode !== undefined || startTime === undefined) {
          throw unavailable(
            `cache client for dataset ${key} exited (code ${String(exitCode)}) before mounting: ${await logTail(paths.logFile)}`,
          );
        }
        if (Date.now() > deadline) {
          throw unavailable(
            `cache client for dataset ${key} did not mount within ${this.timings.readyTimeoutMs} ms: ${await logTail(paths.logFile)}`,
          );
        }
        await sleep(15);
      }
      // A mount comes up even when the remote is unreachable; one listing of the root tells.
      const listing = await listsWithin(paths.mountPoint, Math.max(1000, deadline - Date.now()));
      if (listing !== undefined) {
        throw unavailable(
          `cache client for dataset ${key} mounted but cannot list the remote (${listing}): ${await logTail(paths.logFile)}`,
        );
      }
    } catch (err) {
      await this.terminate(child.pid, startTime);
      await this.detachAll(paths.mountPoint);
      await rm(paths.runtimeDir, { recursive: true, force: true });
      this.log.warn(
        { dataset: key, durationMs: Date.now() - started },
        'cache client failed to start',
      );
      throw err;
    }
    const record: ClientRecord = {
      key,
      spec,
      pid: child.pid,
      startTime: startTime as string,
      mountPoint: paths.mountPoint,
      cacheDir: paths.cacheDir,
      runtimeDir: paths.runtimeDir,
      startedAt: new Date().toISOString(),
    };
    if (control) record.control = control;
    this.log.info(
      { dataset: key, pid: child.pid, engine: spec.engine, durationMs: Date.now() - started },
      'cache client started',
    );
    return record;
  }

  /**
   * Waits for written files to reach the remote, unmounts, stops the process, removes runtime files
   * (they may hold credentials) and a RAM cache. A cache that may still hold unsent writes is kept:
   * the next client of the dataset sends them.
   */
  async stop(record: ClientRecord): Promise<void> {
    const started = Date.now();
    const flushed = await this.flush(record);
    await this.detachAll(record.mountPoint);
    await this.terminate(record.pid, record.startTime);
    await rm(record.runtimeDir, { recursive: true, force: true });
    if (!flushed) {
      this.log.error(
        { dataset: record.key, cacheDir: record.cacheDir },
        'writes may not have reached the remote; cache kept for the next client of this dataset',
      );
    } else if (record.spec.cache.medium === 'MEM') {
      await rm(record.cacheDir, { recursive: true, force: true });
    }
    // Empty directories only: an SSD cache kept under the dataset directory stays warm for later.
    await rmdir(record.mountPoint).catch(() => undefined);
    await rmdir(dirname(record.mountPoint)).catch(() => undefined);
    this.log.info(
      { dataset: record.key, pid: record.pid, durationMs: Date.now() - started },
      'cache client stopped',
    );
  }

  /** True when nothing written through the mount is still waiting for upload. */
  private async flush(record: ClientRecord): Promise<boolean> {
    if (record.spec.readOnly) return true;
    const engine = this.engineOf(record.spec);
    if (!engine.pendingWrites || !record.control) return true;
    if (!(await isSameProcess(record.pid, record.startTime))) return false;
    const deadline = Date.now() + this.timings.flushTimeoutMs;
    let logged = false;
    while (Date.now() < deadline) {
      let pending: number;
      try {
        pending = await engine.pendingWrites(record.control);
      } catch (err) {
        this.log.warn(
          { dataset: record.key, err: String(err) },
          'could not ask the client for pending writes',
        );
        return false;
      }
      if (pending === 0) return true;
      if (!logged)
        this.log.info({ dataset: record.key, pending }, 'waiting for writes to reach the remote');
      logged = true;
      await sleep(200);
    }
    return false;
  }

  /** Removes every mount stacked at a path; a busy or dead mount is detached lazily. */
  async detachAll(path: string): Promise<void> {
    for (let attempt = 0; attempt < 16; attempt += 1) {
      if (!(await this.mounter.table()).at(path)) return;
      try {
        await this.mounter.unmount(path);
      } catch {
        await this.mounter.unmount(path, { lazy: true });
      }
    }
    throw new Error(`could not detach the mounts at ${path}`);
  }

  /** SIGTERM, then SIGKILL after the grace period; only ever the PID we started. */
  private async terminate(pid: number, startTime: string | undefined): Promise<void> {
    if (startTime === undefined || !(await isSameProcess(pid, startTime))) return;
    const signal = (name: NodeJS.Signals): void => {
      try {
        process.kill(pid, name);
      } catch {
        // already gone
      }
    };
    signal('SIGTERM');
    const deadline = Date.now() + this.timings.stopTimeoutMs;
    while (Date.now() < deadline) {
      if (!(await isSameProcess(pid, startTime))) return;
      await sleep(20);
    }
    signal('SIGKILL');
    while (await isSameProcess(pid, startTime)) await sleep(20);
  }
}
