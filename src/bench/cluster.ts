// The cluster-tier benchmark: driver "nodes" on this machine, one after another, read one remote behind the WAN link and share a tier (s3rver behind a faster in-cluster link).
import { type Bench, log, type Remote } from './harness.js';
import {
  bytesWritten,
  type DatasetParts,
  LAN,
  logFillAccount,
  partSpecs,
  stageAndRead,
  startTier,
  startTierNode,
  waitForUploads,
} from './tier-nodes.js';

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

export interface ClusterOptions extends DatasetParts {
  /** The run's harness: each node's cleanup is deferred to it. */
  parent: Bench;
  work: string;
  nodes: number;
  /** The dataset's remote behind the WAN link, and the PID of its server (bytes sent). */
  remote: Remote;
  remotePid: number;
  cacheQuota: string;
  prefetchConcurrency: string;
}

/**
 * Node after node stages the dataset with the tier and a prefetch of the part, and a pod reads
 * every file once; the node's uploads finish before the next node starts (it read earlier).
 */
export async function runClusterTier(options: ClusterOptions): Promise<ClusterResult> {
  const tier = await startTier(options.parent, options.work, 'c', 202);
  const tierFlags = tier.flags('s3://tier/bench', options.prefetchConcurrency);
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
    const { node } = await startTierNode(options.parent, options.work, `node${n}`, tierFlags);
    /** The node's tier counters run on across its parts (one dataset). */
    let tierSoFar = 0;
    for (const spec of partSpecs(options)) {
      const figures = spec.key === 'big' ? big : small;
      log(`cluster tier: node ${n} of ${options.nodes}: ${spec.name}, first read`);
      const remoteBefore = await bytesWritten(options.remotePid);
      const { volume, seconds } = await stageAndRead(
        node,
        options.remote,
        spec,
        options.cacheQuota,
        n,
        `cluster tier: node ${n}`,
      );
      figures.firstReadSeconds.push(seconds);
      figures.remoteBytes.push((await bytesWritten(options.remotePid)) - remoteBefore);
      const tierTotal = await node.metric('tier_read_bytes_total', volume);
      figures.tierBytes.push(tierTotal - tierSoFar);
      tierSoFar = tierTotal;
      // What this node fetched from the remote is in the tier before the next node starts.
      figures.uploadSeconds.push(await waitForUploads(node, volume));
      await logFillAccount(node, `cluster tier: node ${n}`);
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
  // The tier's store goes with it: the scenarios after this one need the memory.
  await tier.close();
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
