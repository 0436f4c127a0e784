// The cluster-tier benchmark: driver "nodes" on this machine, one after another, read one remote behind the WAN link and share a tier (s3rver behind a faster in-cluster link).
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { timedRead } from '../demo/files.js';
import { processIo } from '../kernel/proc.js';
import { Bench, log, type Remote } from './harness.js';
import { EmulatedLink, serveS3 } from './link.js';
import { readEpoch } from './workload.js';

/**
 * The in-cluster link between nodes and the tier: ten times the WAN's rate, no added delay (a
 * switch's tens of microseconds are below what the delaying proxy can add).
 */
const LAN = { rateMbit: 10_000, delayMs: 0 };

/** One part of the dataset (the big file, or the small-file tree) as each node read it. */
export interface ClusterPart {
  bytes: number;
  files: number;
  /** Per node: seconds from its stage until a pod had read every file once. */
  firstReadSeconds: number[];
  /** Per node: bytes the remote's server sent meanwhile. */
  remoteBytes: number[];
  /** Per node: bytes its local copy took from the tier. */
  tierBytes: number[];
  /** Per node: seconds its uploads to the tier took after its read. */
  uploadSeconds: number[];
}

export interface ClusterResult {
  nodes: number;
  lan: { rateMbit: number; delayMs: number };
  big: ClusterPart;
  small: ClusterPart;
  ratios: {
    /** What the remote sent for all nodes over one copy of the dataset (the worse part). */
    remoteBytesPerDatasetByte: number;
    /** Node 1's first read over node 2's: how much sooner the second node has the data (worse part). */
    node2ColdOverNode1Cold: number;
    bigRemoteBytesPerDatasetByte: number;
    smallRemoteBytesPerDatasetByte: number;
    bigNode2ColdOverNode1Cold: number;
    smallNode2ColdOverNode1Cold: number;
  };
}

export interface ClusterOptions {
  /** The run's harness: each node's cleanup is deferred to it. */
  parent: Bench;
  work: string;
  nodes: number;
  /** The dataset's remote behind the WAN link, and the PID of its server (bytes sent). */
  remote: Remote;
  remotePid: number;
  cacheQuota: string;
  prefetchConcurrency: string;
  big: { path: string; bytes: number };
  small: { dir: string; paths: string[]; bytes: number };
}

/** Bytes a process wrote (its sockets, for a server). */
const bytesWritten = async (pid: number): Promise<number> =>
  (await processIo(pid))?.writtenBytes ?? NaN;

/**
 * Node after node stages the dataset with the tier and a prefetch of the part, and a pod reads
 * every file once; the node's uploads finish before the next node starts (it read earlier).
 */
export async function runClusterTier(options: ClusterOptions): Promise<ClusterResult> {
  const lan = await EmulatedLink.create({ ...LAN, name: 'c', subnet: 202 });
  options.parent.defer(() => lan.close(), 'closing the in-cluster link');
  // The tier's objects in memory: a tier's own disks are not what this scenario measures, and this
  // machine's disk is slower than the link. Its kernel pages out file pages unused for a minute
  // (DAMON), and s3rver read node 1's 2 GiB object back from disk at 200-280 MB/s (7.3-10.3 s),
  // against 5.5 s from memory, so node 2's read was bound by the tier's disk, not the link.
  const store = `${options.parent.memCacheDir}-tier`;
  await mkdir(store, { recursive: true });
  options.parent.defer(
    () => rm(store, { recursive: true, force: true }),
    'removing the tier store',
  );
  const tierPort = await serveS3(lan, store, ['tier'], 9000);
  const keys = join(options.work, 'tier-keys');
  await mkdir(keys, { recursive: true, mode: 0o700 });
  for (const name of ['accessKeyId', 'secretAccessKey']) {
    await writeFile(join(keys, name), 'S3RVER', { mode: 0o600 });
  }
  const tierFlags = [
    // The prefetch's own account (list and transfer seconds, files from the tier) in the log.
    '--log-level=info',
    '--cluster-tier=s3://tier/bench',
    `--cluster-tier-endpoint=http://${lan.nsAddress}:${tierPort}`,
    '--cluster-tier-region=us-east-1',
    `--cluster-tier-credentials=${keys}`,
    `--cluster-tier-transfers=${options.prefetchConcurrency}`,
    `--prefetch-concurrency=${options.prefetchConcurrency}`,
  ];
  const part = (bytes: number, files: number): ClusterPart => ({
    bytes,
    files,
    firstReadSeconds: [],
    remoteBytes: [],
    tierBytes: [],
    uploadSeconds: [],
  });
  const big = part(options.big.bytes, 1);
  const small = part(options.small.bytes, options.small.paths.length);
  for (let n = 1; n <= options.nodes; n += 1) {
    const node = new Bench(join(options.work, `node${n}`), `node${n}`);
    await mkdir(node.work, { recursive: true });
    options.parent.defer(() => node.cleanup(), `node ${n}'s cleanup`);
    await node.startDriver(tierFlags);
    /** The node's tier counters run on across its parts (one dataset). */
    let tierSoFar = 0;
    for (const [name, figures, glob, read] of [
      ['big file', big, options.big.path, (pod: string) => timedRead(join(pod, options.big.path))],
      [
        'small files',
        small,
        `${options.small.dir}/**`,
        (pod: string) => readEpoch(join(pod, options.small.dir), options.small.paths, n),
      ],
    ] as const) {
      log(`cluster tier: node ${n} of ${options.nodes}: ${name}, first read`);
      const remoteBefore = await bytesWritten(options.remotePid);
      const started = process.hrtime.bigint();
      const volume = await node.stage(options.remote, {
        cacheQuota: options.cacheQuota,
        clusterTier: 'true',
        prefetch: glob,
      });
      await node.waitForMetric('prefetch_completed', volume, 1);
      const filled = process.hrtime.bigint();
      const pod = await node.publish(volume, 'reader');
      await read(pod);
      const seconds = (since: bigint) => Number(process.hrtime.bigint() - since) / 1e9;
      figures.firstReadSeconds.push(seconds(started));
      log(
        `cluster tier: node ${n}: ${name} filled in ${(seconds(started) - seconds(filled)).toFixed(2)} s, published and read in ${seconds(filled).toFixed(2)} s`,
      );
      figures.remoteBytes.push((await bytesWritten(options.remotePid)) - remoteBefore);
      const tierTotal = await node.metric('tier_read_bytes_total', volume);
      figures.tierBytes.push(tierTotal - tierSoFar);
      tierSoFar = tierTotal;
      // What this node fetched from the remote is in the tier before the next node starts.
      const fetched =
        (await node.metric('prefetch_files_total', volume)) -
        (await node.metric('tier_read_files_total', volume));
      figures.uploadSeconds.push(
        await node.waitForMetric('tier_uploaded_files_total', volume, fetched),
      );
      const account = (await readFile(join(node.work, 'driver.log'), 'utf8'))
        .split('\n')
        .filter((line) => line.includes('"prefetch completed"'))
        .pop();
      if (account) {
        const { listSeconds, transferSeconds, tierFiles, files } = JSON.parse(account) as Record<
          string,
          number
        >;
        log(
          `cluster tier: node ${n}: listed in ${listSeconds} s, ${files} files (${tierFiles} from the tier) in ${transferSeconds} s`,
        );
      }
      await node.unpublish(volume, 'reader');
      await node.unstage(volume);
    }
    await node.cleanup();
  }
  const perByte = (p: ClusterPart) => p.remoteBytes.reduce((a, b) => a + b, 0) / p.bytes;
  const sooner = (p: ClusterPart) =>
    (p.firstReadSeconds[0] ?? NaN) / (p.firstReadSeconds[1] ?? NaN);
  const ratios = {
    bigRemoteBytesPerDatasetByte: perByte(big),
    smallRemoteBytesPerDatasetByte: perByte(small),
    bigNode2ColdOverNode1Cold: sooner(big),
    smallNode2ColdOverNode1Cold: sooner(small),
  };
  await lan.close();
  return {
    nodes: options.nodes,
    lan: LAN,
    big,
    small,
    ratios: {
      remoteBytesPerDatasetByte: Math.max(
        ratios.bigRemoteBytesPerDatasetByte,
        ratios.smallRemoteBytesPerDatasetByte,
      ),
      node2ColdOverNode1Cold: Math.min(
        ratios.bigNode2ColdOverNode1Cold,
        ratios.smallNode2ColdOverNode1Cold,
      ),
      ...ratios,
    },
  };
}
