// What the cluster-tier benchmarks share: the tier (s3rver behind an in-cluster link), driver "nodes" using it, and one node's staged read of a part of the dataset.
import { mkdir, readdir, readFile, rm, rmdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { s3rverRcloneEnv } from '../demo/s3-server.js';
import { timedRead } from '../demo/files.js';
import { MountTable } from '../kernel/mountinfo.js';
import { processIo, sleep } from '../kernel/proc.js';
import { Bench, log, type Remote } from './harness.js';
import { EmulatedLink, serveS3 } from './link.js';
import { readEpoch } from './workload.js';

/**
 * The in-cluster link between nodes and the tier: ten times the WAN's rate, no added delay (a
 * switch's tens of microseconds are below what the delaying proxy can add).
 */
export const LAN = { rateMbit: 10_000, delayMs: 0 };

/** Bytes a process wrote (its sockets, for a server). */
export const bytesWritten = async (pid: number): Promise<number> =>
  (await processIo(pid))?.writtenBytes ?? NaN;

/** Seconds since a process.hrtime.bigint() reading. */
export const secondsSince = (since: bigint): number =>
  Number(process.hrtime.bigint() - since) / 1e9;

/** The tier of a scenario: s3rver (bucket "tier") behind its own in-cluster link. */
export interface BenchTier {
  lan: EmulatedLink;
  /** The driver flags of a node using the tier at `location` (s3://tier/<prefix>). */
  flags: (location: string, prefetchConcurrency: string) => string[];
  /** Removes the objects under `location`: a finished part's objects only hold memory. */
  purge: (location: string) => Promise<void>;
  /** Closes the link (its s3rver and namespace) and removes the store. */
  close: () => Promise<void>;
}

/**
 * Starts a tier in a namespace of its own (`name`, `subnet`: one per link of a run). Its objects
 * live in memory: a tier's own disks are not what these scenarios measure, and this machine's
 * disk is slower than the link. Its kernel pages out file pages unused for a minute (DAMON), and
 * s3rver read node 1's 2 GiB object back from disk at 200-280 MB/s (7.3-10.3 s), against 5.5 s
 * from memory, so node 2's read was bound by the tier's disk, not the link.
 */
export async function startTier(
  parent: Bench,
  work: string,
  name: string,
  subnet: number,
): Promise<BenchTier> {
  const lan = await EmulatedLink.create({ ...LAN, name, subnet });
  parent.defer(() => lan.close(), `closing the in-cluster link ${name}`);
  const store = `${parent.memCacheDir}-tier${name}`;
  await mkdir(store, { recursive: true });
  parent.defer(() => rm(store, { recursive: true, force: true }), `removing tier store ${name}`);
  const port = await serveS3(lan, store, ['tier'], 9000);
  const endpoint = `http://${lan.nsAddress}:${port}`;
  const keys = join(work, 'tier-keys');
  await mkdir(keys, { recursive: true, mode: 0o700 });
  for (const key of ['accessKeyId', 'secretAccessKey']) {
    await writeFile(join(keys, key), 'S3RVER', { mode: 0o600 });
  }
  return {
    lan,
    flags: (location, prefetchConcurrency) => [
      // The prefetch's own account (list and transfer seconds, files from the tier) in the log.
      '--log-level=info',
      `--cluster-tier=${location}`,
      `--cluster-tier-endpoint=${endpoint}`,
      '--cluster-tier-region=us-east-1',
      `--cluster-tier-credentials=${keys}`,
      `--cluster-tier-transfers=${prefetchConcurrency}`,
      `--prefetch-concurrency=${prefetchConcurrency}`,
    ],
    purge: async (location) => {
      // Through the S3 API (s3rver keeps no index of its own, but its store is its business).
      const purged = await execa(
        'rclone',
        ['purge', `T:${location.replace(/^s3:\/\//, '')}`, '--config', '/dev/null'],
        { env: s3rverRcloneEnv('T', endpoint), extendEnv: false, reject: false },
      );
      if (purged.exitCode !== 0) {
        log(`tier: purging ${location} failed: ${purged.stderr.split('\n').pop() ?? ''}`);
      }
    },
    close: async () => {
      await lan.close();
      await rm(store, { recursive: true, force: true });
    },
  };
}

/**
 * A driver "node" of its own (state, MEM caches, node id `name`) under `work`, started with
 * `flags`; its cleanup is deferred to the run's harness, and after it whatever the node left
 * mounted under its MEM cache directory (a run interrupted with volumes staged) is unmounted.
 */
export async function startTierNode(
  parent: Bench,
  work: string,
  name: string,
  flags: string[],
): Promise<{ node: Bench; pid: number }> {
  const node = new Bench(join(work, name), name);
  await mkdir(node.work, { recursive: true });
  parent.defer(async () => {
    for (const mount of [...(await MountTable.read()).under(node.memCacheDir)].reverse()) {
      await execa('umount', ['-l', mount.mountPoint], { reject: false });
      await rmdir(mount.mountPoint).catch(() => undefined);
    }
    await rmdir(node.memCacheDir).catch(() => undefined);
  }, `unmounting what ${name} left`);
  parent.defer(() => node.cleanup(), `${name}'s cleanup`);
  const { pid } = await node.startDriver(flags);
  return { node, pid };
}

/** rclone processes a driver runs (fills, uploads; a stopped dataset's client is gone). */
async function rcloneChildren(pid: number): Promise<number> {
  let count = 0;
  for (const task of await readdir(`/proc/${pid}/task`).catch(() => [])) {
    const children = await readFile(`/proc/${pid}/task/${task}/children`, 'utf8').catch(() => '');
    for (const child of children.split(' ').filter(Boolean)) {
      const comm = await readFile(`/proc/${child}/comm`, 'utf8').catch(() => '');
      if (comm.trim() === 'rclone') count += 1;
    }
  }
  return count;
}

/**
 * Seconds until a driver runs no rclone any more (after its volumes are unstaged: its uploads to
 * the tier ended), so none outlives the driver; NaN when that took longer than `timeoutMs`.
 * Counted by process, not by the tier's counters, whose meaning a cooperative fill may change.
 */
export async function untilTransfersEnd(pid: number, timeoutMs = 300_000): Promise<number> {
  const started = Date.now();
  while ((await rcloneChildren(pid)) > 0) {
    if (Date.now() - started > timeoutMs) return NaN;
    await sleep(250);
  }
  return (Date.now() - started) / 1000;
}

/** The dataset's parts the cluster scenarios read: the big file, the small-file tree. */
export interface DatasetParts {
  big: { path: string; bytes: number };
  small: { dir: string; paths: string[]; bytes: number };
}

/** One part as a node stages and reads it. */
export interface PartSpec {
  key: 'big' | 'small';
  name: string;
  bytes: number;
  files: number;
  /** The prefetch pattern that fills it. */
  glob: string;
  /** Reads every file of the part once under `root` (a pod's target, or the source itself). */
  read: (root: string, seed: number) => Promise<unknown>;
}

export function partSpecs(parts: DatasetParts): PartSpec[] {
  return [
    {
      key: 'big',
      name: 'big file',
      bytes: parts.big.bytes,
      files: 1,
      glob: parts.big.path,
      read: (root) => timedRead(join(root, parts.big.path)),
    },
    {
      key: 'small',
      name: 'small files',
      bytes: parts.small.bytes,
      files: parts.small.paths.length,
      glob: `${parts.small.dir}/**`,
      read: (root, seed) => readEpoch(join(root, parts.small.dir), parts.small.paths, seed),
    },
  ];
}

/** A node's staged read of a part: stage with the tier and a prefetch, wait, publish, read. */
export interface NodeRead {
  volume: string;
  /** When its NodeStageVolume was called. */
  started: bigint;
  /** Seconds from the stage until a pod had read every file once. */
  seconds: number;
  /** Of which: until its prefetch completed. */
  fillSeconds: number;
}

export async function stageAndRead(
  node: Bench,
  remote: Remote,
  part: PartSpec,
  cacheQuota: string,
  seed: number,
  label: string,
): Promise<NodeRead> {
  const started = process.hrtime.bigint();
  const volume = await node.stage(remote, {
    cacheQuota,
    clusterTier: 'true',
    prefetch: part.glob,
  });
  await node.waitForMetric('prefetch_completed', volume, 1);
  const fillSeconds = secondsSince(started);
  const pod = await node.publish(volume, 'reader');
  await part.read(pod, seed);
  const seconds = secondsSince(started);
  log(
    `${label}: ${part.name} filled in ${fillSeconds.toFixed(2)} s, published and read in ${(seconds - fillSeconds).toFixed(2)} s`,
  );
  return { volume, started, seconds, fillSeconds };
}

/**
 * Seconds until what the node fetched from the remote (files it filled that the tier did not
 * give it) is uploaded to the tier.
 */
export async function waitForUploads(
  node: Bench,
  volume: string,
  timeoutMs?: number,
): Promise<number> {
  const fetched =
    (await node.metric('prefetch_files_total', volume)) -
    (await node.metric('tier_read_files_total', volume));
  return node.waitForMetric('tier_uploaded_files_total', volume, fetched, timeoutMs);
}

/** The driver's own account of its last fill (`prefetch completed`), in the bench's log. */
export async function logFillAccount(node: Bench, label: string): Promise<void> {
  const lines = (await readFile(join(node.work, 'driver.log'), 'utf8')).split('\n');
  const account = lines.filter((line) => line.includes('"prefetch completed"')).pop();
  if (!account) return;
  const { listSeconds, transferSeconds, tierFiles, files } = JSON.parse(account) as Record<
    string,
    number
  >;
  log(
    `${label}: listed in ${listSeconds} s, ${files} files (${tierFiles} from the tier) in ${transferSeconds} s`,
  );
  const shared = lines.filter((line) => line.includes('"cooperative fill"')).pop();
  if (shared) {
    const { msg, level, time, app, dataset, ...split } = JSON.parse(shared) as Record<
      string,
      unknown
    >;
    void [msg, level, time, app, dataset];
    log(`${label}: its last fill with the tier: ${JSON.stringify(split)}`);
  }
}
