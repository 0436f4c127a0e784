// The benchmarks' driver harness: one driver process on a scratch directory, the CSI calls made of it, and cleanup.
import { mkdir, readdir, readFile, rm, rmdir, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa, type ResultPromise } from 'execa';
import { CsiClient } from '../csi/client.js';
import { MountTable } from '../kernel/mountinfo.js';
import { sleep, terminateChild } from '../kernel/proc.js';
import { freePort } from '../util/net.js';
import { rssMiB } from './workload.js';

export const MiB = 2 ** 20;
const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const MAIN = join(ROOT, 'dist', 'main.js');
const cap = { mount: {}, access_mode: { mode: 'MULTI_NODE_READER_ONLY' as const } };
export const log = (line: string) => process.stderr.write(`bench: ${line}\n`);

interface CleanupStep {
  run: () => Promise<unknown>;
  name: string;
  timeoutMs: number;
}

export interface Remote {
  protocol: 'http' | 's3';
  parameters: Record<string, string>;
  secrets: Record<string, string>;
  /** rclone remote "U" for the uncached baseline. */
  rcloneEnv: Record<string, string>;
  rclonePath: string;
}

/** A driver process of its own and the CSI calls a benchmark makes of it, with cleanup steps. */
export class Bench {
  private readonly cleanups: CleanupStep[] = [];
  private driver?: ResultPromise;
  private client?: CsiClient;
  private metricsPort = 0;
  private volumeCount = 0;

  constructor(
    readonly work: string,
    /** The node this driver plays, when a run has several (their caches must not meet). */
    readonly nodeName = 'bench',
  ) {}

  get stateDir(): string {
    return join(this.work, 'state');
  }

  get memCacheDir(): string {
    const node = this.nodeName === 'bench' ? '' : `-${this.nodeName}`;
    return `/dev/shm/dcsi-bench-${process.pid}${node}`;
  }

  /**
   * A step for cleanup(), named in its log lines. `timeoutMs` is how long it may run before the
   * next steps go on without it: 20 s unless the step's work is known to be longer.
   */
  defer(run: () => Promise<unknown>, name = 'a cleanup step', timeoutMs = 20_000): void {
    this.cleanups.unshift({ run, name, timeoutMs });
  }

  /**
   * Runs every step, newest first; a step that fails or overruns its time does not stop the
   * others. Steps that take long are logged by name, so a slow cleanup says what was slow.
   */
  async cleanup(): Promise<void> {
    for (const step of this.cleanups.splice(0)) {
      const started = Date.now();
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<'overran'>((resolve) => {
        timer = setTimeout(() => resolve('overran'), step.timeoutMs);
      });
      const done = step
        .run()
        .catch((err: unknown) => log(`cleanup: ${step.name} failed: ${String(err)}`))
        .then(() => 'done' as const);
      const outcome = await Promise.race([done, timeout]);
      clearTimeout(timer);
      const seconds = () => ((Date.now() - started) / 1000).toFixed(1);
      if (outcome === 'overran') {
        log(`cleanup: ${step.name} still running after ${seconds()} s; the next steps go on`);
        void done.then(() => log(`cleanup: ${step.name} ended after ${seconds()} s`));
      } else if (Date.now() - started > 2000) {
        log(`cleanup: ${step.name} took ${seconds()} s`);
      }
    }
  }

  /** Cache clients the driver recorded, by PID (the driver leaves them running on purpose). */
  async killClients(): Promise<void> {
    const pids = await this.clientPids().catch(() => []);
    for (const signal of ['SIGTERM', 'SIGKILL'] as const) {
      for (const pid of pids) {
        try {
          process.kill(pid, signal);
        } catch {
          // gone
        }
      }
      await sleep(500);
    }
  }

  /** `nodeFlags` go to node itself (e.g. --expose-gc), `args` to the driver. */
  async startDriver(args: string[] = [], nodeFlags: string[] = []): Promise<{ pid: number }> {
    this.metricsPort = await freePort();
    const endpoint = `unix://${this.work}/csi.sock`;
    this.driver = execa(
      process.execPath,
      [
        ...nodeFlags,
        MAIN,
        `--endpoint=${endpoint}`,
        `--node-id=${this.nodeName}`,
        `--state-dir=${this.stateDir}`,
        `--runtime-dir=${join(this.work, 'run')}`,
        `--mem-cache-dir=${this.memCacheDir}`,
        `--kubelet-dir=${join(this.work, 'kubelet')}`,
        '--mem-cache-limit=16Gi',
        `--metrics-address=127.0.0.1:${this.metricsPort}`,
        '--log-level=warn',
        ...args,
      ],
      { reject: false, stdout: 'ignore', stderr: { file: join(this.work, 'driver.log') } },
    );
    const driver = this.driver;
    // Last (steps run newest first): the MEM cache directory, empty once its caches are unmounted.
    this.defer(
      () => rmdir(this.memCacheDir).catch(() => undefined),
      `removing ${this.nodeName}'s MEM cache directory`,
    );
    this.defer(() => this.killClients(), `stopping ${this.nodeName}'s cache clients`);
    this.defer(async () => {
      if (driver.pid !== undefined && driver.exitCode === null) process.kill(driver.pid, 'SIGKILL');
      await driver;
    }, `stopping ${this.nodeName}'s driver`);
    this.client = new CsiClient(endpoint);
    for (let i = 0; i < 400; i += 1) {
      const ready = await this.csi.identity
        .Probe({}, { timeoutMs: 500 })
        .then((r) => r.ready?.value === true)
        .catch(() => false);
      if (ready) return { pid: driver.pid as number };
      await sleep(25);
    }
    throw new Error('driver did not become ready');
  }

  get csi(): CsiClient {
    if (!this.client) throw new Error('driver not started');
    return this.client;
  }

  staging(id: string): string {
    return join(this.work, 'kubelet', 'staging', id);
  }

  target(pod: string): string {
    return join(this.work, 'kubelet', 'pods', pod, 'data');
  }

  async stage(remote: Remote, extra: Record<string, string> = {}): Promise<string> {
    return this.stageWith({ ...remote.parameters, readOnly: 'true', ...extra }, remote.secrets);
  }

  /** CreateVolume with these parameters, then NodeStageVolume: the new volume's id. */
  async stageWith(
    parameters: Record<string, string>,
    secrets: Record<string, string> = {},
  ): Promise<string> {
    this.volumeCount += 1;
    const { volume } = await this.csi.controller.CreateVolume({
      name: `bench-${this.volumeCount}`,
      volume_capabilities: [cap],
      parameters,
    });
    if (!volume) throw new Error('no volume');
    await this.csi.node.NodeStageVolume({
      volume_id: volume.volume_id,
      staging_target_path: this.staging(volume.volume_id),
      volume_capability: cap,
      volume_context: volume.volume_context,
      secrets,
    });
    return volume.volume_id;
  }

  async publish(volumeId: string, pod: string): Promise<string> {
    await this.csi.node.NodePublishVolume({
      volume_id: volumeId,
      staging_target_path: this.staging(volumeId),
      target_path: this.target(pod),
      volume_capability: cap,
      readonly: true,
    });
    return this.target(pod);
  }

  async unpublish(volumeId: string, pod: string): Promise<void> {
    await this.csi.node.NodeUnpublishVolume({ volume_id: volumeId, target_path: this.target(pod) });
  }

  async unstage(volumeId: string): Promise<void> {
    await this.csi.node.NodeUnstageVolume({
      volume_id: volumeId,
      staging_target_path: this.staging(volumeId),
    });
    await this.csi.controller.DeleteVolume({ volume_id: volumeId });
  }

  /** The cache client's processes (engine and page-cache layer) from the driver's journal. */
  async clientPids(): Promise<number[]> {
    const journal = JSON.parse(await readFile(join(this.stateDir, 'journal.json'), 'utf8')) as {
      datasets: Record<string, { pid: number; layer?: { pid: number } }>;
    };
    return Object.values(journal.datasets).flatMap((d) => [
      d.pid,
      ...(d.layer ? [d.layer.pid] : []),
    ]);
  }

  /** A dataset's metric (by the dataset of a staged volume). */
  async metric(name: string, volumeId: string): Promise<number> {
    const key = await this.datasetKey(volumeId);
    const text = await (await fetch(`http://127.0.0.1:${this.metricsPort}/metrics`)).text();
    const line = text
      .split('\n')
      .find((l) => l.startsWith(`dataset_cache_${name}{dataset="${key}"}`));
    return Number(line?.split(' ').pop() ?? NaN);
  }

  async datasetKey(volumeId: string): Promise<string> {
    const journal = JSON.parse(await readFile(join(this.stateDir, 'journal.json'), 'utf8')) as {
      volumes: Record<string, { datasetKey: string }>;
    };
    const volume = journal.volumes[volumeId];
    if (!volume) throw new Error(`volume ${volumeId} is not staged`);
    return volume.datasetKey;
  }

  /** Waits until a dataset's metric reaches a value; seconds it took. */
  /**
   * Seconds until the dataset's metric reaches `bound` (at least, or at most; a metric the driver
   * does not export counts as 0 for "at most": no prefetch status means nothing running).
   */
  async waitForMetric(
    name: string,
    volumeId: string,
    bound: number,
    timeoutMs = 900_000,
    direction: 'at least' | 'at most' = 'at least',
  ): Promise<number> {
    const started = Date.now();
    const reached = (value: number): boolean =>
      direction === 'at least' ? value >= bound : (Number.isNaN(value) ? 0 : value) <= bound;
    while (!reached(await this.metric(name, volumeId))) {
      if (Date.now() - started > timeoutMs) {
        const value = await this.metric(name, volumeId);
        throw new Error(
          `${name} reached ${value}, not ${direction} ${bound}, in ${timeoutMs / 1000} s`,
        );
      }
      // A scrape costs the driver engine calls for every dataset: polled every 50 ms, it took a
      // quarter of the small-file prefetch's speed. A quarter second errs at most that long.
      await sleep(250);
    }
    return (Date.now() - started) / 1000;
  }

  /**
   * Seconds from now until the volume's dataset finishes its first prefetch, to the millisecond:
   * the metric is polled for the end (every 250 ms, a quarter of a 5,000-file fill here), and the
   * driver's own time of it is read then (the same clock: one machine).
   */
  async prefetchSeconds(volumeId: string): Promise<number> {
    const started = Date.now();
    await this.waitForMetric('prefetch_completed', volumeId, 1);
    const ended = 1000 * (await this.metric('prefetch_last_completed_timestamp_seconds', volumeId));
    if (!(ended >= started)) throw new Error(`the dataset's prefetch ended at ${ended}, before`);
    return (ended - started) / 1000;
  }

  /**
   * RAM the node holds for a dataset after a file was read: its MEM cache file system (engine
   * cache and local copy), the page-cache layer's pages of the file (fincore), and the client
   * processes' RSS. Counted from the dataset's own parts, so the loopback server's page cache of
   * the source files is not mistaken for the node's.
   */
  async memoryHeld(volumeId: string, file: string): Promise<number> {
    const journal = JSON.parse(await readFile(join(this.stateDir, 'journal.json'), 'utf8')) as {
      datasets: Record<
        string,
        {
          cacheDir: string;
          mountPoint: string;
          pid: number;
          layer?: { pid: number };
          copy?: { fuseMount: string };
        }
      >;
    };
    const client = journal.datasets[await this.datasetKey(volumeId)];
    if (!client) throw new Error('no client');
    const fs = await statfs(client.cacheDir);
    const layerPath = join(client.copy?.fuseMount ?? client.mountPoint, file);
    const resident = await execa('fincore', ['-b', '-n', '-o', 'RES', layerPath]);
    const rss = await Promise.all([client.pid, client.layer?.pid ?? 0].map(rssMiB));
    return (
      (fs.blocks - fs.bfree) * fs.bsize +
      Number(resident.stdout.trim()) +
      rss.reduce((a, b) => a + (Number.isNaN(b) ? 0 : b), 0) * MiB
    );
  }

  /** rclone without a cache: what a pod gets from a plain remote mount. */
  async uncachedMount(remote: Remote): Promise<{ path: string; close: () => Promise<void> }> {
    const path = join(this.work, `uncached-${remote.protocol}`);
    await mkdir(path, { recursive: true });
    const child = execa(
      'rclone',
      [
        'mount',
        `U:${remote.rclonePath}`,
        path,
        '--vfs-cache-mode',
        'off',
        '--read-only',
        '--config',
        '/dev/null',
      ],
      {
        reject: false,
        stdout: 'ignore',
        stderr: 'ignore',
        extendEnv: false,
        env: remote.rcloneEnv,
      },
    );
    for (let i = 0; i < 400 && !(await MountTable.read()).at(path); i += 1) await sleep(25);
    const close = async () => {
      await execa('umount', ['-l', path], { reject: false });
      await terminateChild(child);
    };
    this.defer(close, `unmounting the uncached ${remote.protocol} mount`);
    return { path, close };
  }
}

/**
 * `rclone copy` alone (no driver, no copy layer) of the files `fileList` names, from the remote
 * into `into`, `transfers` at a time: the ceiling a link and its servers leave to any bulk fill.
 * Returns its seconds and what it wrote (`into` is removed after): files, and every entry.
 */
export async function rcloneCopyAlone(
  remote: Remote,
  fileList: string,
  into: string,
  transfers: string,
): Promise<{ seconds: number; files: number; entries: number }> {
  const started = process.hrtime.bigint();
  await execa(
    'rclone',
    [
      'copy',
      `U:${remote.rclonePath === '' ? '' : `${remote.rclonePath}/`}`,
      into,
      '--files-from-raw',
      fileList,
      '--transfers',
      transfers,
      '--checkers',
      transfers,
      '--multi-thread-streams',
      '0',
      '--config',
      '/dev/null',
    ],
    { env: remote.rcloneEnv, extendEnv: false },
  );
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const written = await readdir(into, { recursive: true, withFileTypes: true });
  await rm(into, { recursive: true, force: true });
  return { seconds, files: written.filter((e) => e.isFile()).length, entries: written.length };
}
