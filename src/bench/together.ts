// The "together" benchmark: driver "nodes" stage one dataset in the same second, sharing the remote's one WAN link and a tier, against one node alone on the same link.
import { cpuWindow } from './cpu.js';
import { type Bench, log, type Remote } from './harness.js';
import type { EmulatedLink } from './link.js';
import {
  bytesWritten,
  type DatasetParts,
  LAN,
  logFillAccount,
  type NodeRead,
  partSpecs,
  type PartSpec,
  type BenchTier,
  secondsSince,
  stageAndRead,
  startTier,
  startTierNode,
  untilTransfersEnd,
} from './tier-nodes.js';

/** How often a filling node says so in the tier (the driver's default is 5 s). */
const MEMBER_REFRESH = '2s';
/** The tier prefixes: the alone node's objects never reach the nodes started together. */
const ALONE = 's3://tier/alone';
const TOGETHER = 's3://tier/together';

/**
 * CPU seconds of one run (the node alone, or the nodes together) from its first NodeStage until
 * its last pod's read ended: whether the machine's 2 cores, not the link, bound the run.
 */
export interface RunCpu {
  wallSeconds: number;
  cores: number;
  /** Every core's non-idle time from /proc/stat (whoever used it). */
  machineBusySeconds: number;
  /** machineBusySeconds / (wallSeconds × cores): 1 means no core was ever idle. */
  saturation: number;
  /** Per node: its driver and every process below it (rclone clients, fills, uploads, workers). */
  nodes: number[];
  /** The tier's s3rver. */
  tier: number;
  /** The remote's server (`rclone serve http`). */
  remote: number;
  /** The delaying proxies of the WAN namespace (the remote's traffic crosses one of them). */
  proxies: number;
  /** This harness's own threads: the pods' reads, its CSI calls and metric polls. */
  pods: number;
  /** Kernel threads (ksoftirqd, kworkers). */
  kernelThreads: number;
  /** Every other process on the machine: other work on it, daemons, short commands. */
  rest: number;
}

/** One part of the dataset (the big file, or the small-file tree): one node alone, then N together. */
export interface TogetherPart {
  bytes: number;
  files: number;
  /** The node alone on the link, on a tier prefix of its own (empty when it starts). */
  alone: {
    /** From its NodeStage until its pod had read every file once. */
    seconds: number;
    fillSeconds: number;
    /** What the remote's server wrote meanwhile. */
    remoteBytes: number;
    tierBytes: number;
  };
  /** CPU seconds of the node alone's run and of the nodes' run together. */
  cpu: { alone: RunCpu; together: RunCpu };
  /** Per node started together: from its NodeStage until its pod had read every file once. */
  seconds: number[];
  /** Per node: of which until its prefetch completed. */
  fillSeconds: number[];
  /** Per node: bytes its local copy took from the tier. */
  tierBytes: number[];
  /** Per node: milliseconds after the first node's NodeStage that its own was called. */
  stageOffsetMs: number[];
  /** What the remote's server wrote from the first NodeStage until the last pod had read. */
  remoteBytes: number;
  /**
   * What crossed the WAN link's host end meanwhile (frames and headers): at least the server's
   * bytes, or some node's traffic took another path (the run fails then).
   */
  linkBytes: number;
}

export interface TogetherResult {
  nodes: number;
  /** The remote's one link, shared by every node. */
  wan: { rateMbit: number; delayMs: number };
  lan: { rateMbit: number; delayMs: number };
  memberRefresh: string;
  /** How the alone run and the together run were ordered (and the remote's caches readied). */
  order: string;
  /** The scenario's own time, drivers and tier included. */
  durationSeconds: number;
  big: TogetherPart;
  small: TogetherPart;
  ratios: {
    /** What the remote sent for the nodes started together over one copy (the worse part). */
    togetherRemoteBytesPerDatasetByte: number;
    /** The slowest of them over the node alone (the worse part). */
    togetherSlowestOverAlone: number;
    bigTogetherRemoteBytesPerDatasetByte: number;
    smallTogetherRemoteBytesPerDatasetByte: number;
    bigTogetherSlowestOverAlone: number;
    smallTogetherSlowestOverAlone: number;
  };
}

export interface TogetherOptions extends DatasetParts {
  /** The run's harness: each node's cleanup is deferred to it. */
  parent: Bench;
  work: string;
  nodes: number;
  /** The dataset's remote behind the WAN link, the PID of its server (bytes sent), the link. */
  remote: Remote;
  remotePid: number;
  wan: EmulatedLink;
  /** The remote's directory on this machine (what its server reads). */
  source: string;
  cacheQuota: string;
  prefetchConcurrency: string;
}

const ORDER =
  'per part: the node alone first, stopped once its transfers ended and its tier prefix purged, then the nodes together; ' +
  "before each run the part's files are read on the remote's side (its page cache), which the kernel pages out after a minute unused";

/**
 * Starts counting CPU for a run of the driver processes `pids`; the function it returns ends it.
 * Processes are found by PID (drivers, the remote's server), by command line within the tier's and
 * the WAN's namespaces (s3rver, the delaying proxies), and this process for the pods' reads.
 */
async function watchCpu(
  pids: number[],
  tier: BenchTier,
  options: TogetherOptions,
): Promise<() => Promise<RunCpu>> {
  const window = await cpuWindow({
    ...Object.fromEntries(pids.map((pid, i) => [`node${i + 1}`, { tree: pid }])),
    tier: { netns: tier.lan.netns, cmdline: 'S3rver' },
    remote: { tree: options.remotePid },
    proxies: { netns: options.wan.netns, cmdline: 'delay-proxy' },
    pods: { process: process.pid },
  });
  return async () => {
    const { groups, kernelThreadSeconds, restSeconds, ...machine } = await window.stop();
    const group = (name: string) => groups[name] ?? NaN;
    return {
      ...machine,
      nodes: pids.map((_, i) => group(`node${i + 1}`)),
      tier: group('tier'),
      remote: group('remote'),
      proxies: group('proxies'),
      pods: group('pods'),
      kernelThreads: kernelThreadSeconds,
      rest: restSeconds,
    };
  };
}

/** One line of the bench's log per part: CPU seconds alone → together, and the machine's load. */
function logCpu(part: string, { alone, together }: TogetherPart['cpu']): void {
  const s = (v: number) => v.toFixed(2);
  const pair = (name: string, pick: (c: RunCpu) => number) =>
    `${name} ${s(pick(alone))} → ${s(pick(together))}`;
  const busy = (c: RunCpu) =>
    `${c.machineBusySeconds.toFixed(1)} of ${(c.wallSeconds * c.cores).toFixed(1)} core-s busy (${(100 * c.saturation).toFixed(0)}%)`;
  log(
    `together: ${part} CPU s alone → together: nodes ${alone.nodes.map(s).join(' / ')} → ${together.nodes.map(s).join(' / ')}, ${[
      pair('s3rver', (c) => c.tier),
      pair('remote server', (c) => c.remote),
      pair('proxies', (c) => c.proxies),
      pair('pods', (c) => c.pods),
      pair('kernel threads', (c) => c.kernelThreads),
      pair('rest', (c) => c.rest),
    ].join(', ')}; machine ${busy(alone)} → ${busy(together)}`,
  );
}

/**
 * Per part: one node alone stages the dataset with the tier and a prefetch of the part and a pod
 * reads every file; then `nodes` nodes stage it in the same second and each pod reads every file.
 * Fresh nodes for each run, so no node holds a part or a counter from an earlier one.
 */
export async function runTogether(options: TogetherOptions): Promise<TogetherResult> {
  const began = process.hrtime.bigint();
  const tier = await startTier(options.parent, options.work, 't', 203);
  const flags = (location: string) => [
    ...tier.flags(location, options.prefetchConcurrency),
    `--cluster-tier-member-refresh=${MEMBER_REFRESH}`,
  ];
  const startNode = (name: string, location: string) =>
    startTierNode(options.parent, options.work, name, flags(location));
  /** Its volume unstaged and its transfers ended (none outlives it), the node is stopped. */
  const stopNode = async ({ node, pid }: { node: Bench; pid: number }, volume: string) => {
    await node.unpublish(volume, 'reader');
    await node.unstage(volume);
    if (Number.isNaN(await untilTransfersEnd(pid))) {
      log(`together: ${node.nodeName} still ran rclone 300 s after its unstage`);
    }
    await node.cleanup();
  };
  // The remote's server reads its files from this machine's page cache for each run alike.
  const readySource = (spec: PartSpec) => spec.read(options.source, 0);
  const results: Partial<Record<PartSpec['key'], TogetherPart>> = {};
  for (const spec of partSpecs(options)) {
    log(`together: ${spec.name}, one node alone`);
    await readySource(spec);
    const alone = await startNode(`alone-${spec.key}`, ALONE);
    const aloneBefore = await bytesWritten(options.remotePid);
    const aloneCpu = await watchCpu([alone.pid], tier, options);
    const aloneRead = await stageAndRead(
      alone.node,
      options.remote,
      spec,
      options.cacheQuota,
      1,
      'together: alone',
    );
    const aloneCpuSeconds = await aloneCpu();
    const aloneRemote = (await bytesWritten(options.remotePid)) - aloneBefore;
    const aloneTier = await alone.node.metric('tier_read_bytes_total', aloneRead.volume);
    await logFillAccount(alone.node, 'together: alone');
    // Its uploads (to its own prefix) end before the nodes start: they would compete for the
    // machine and the tier.
    await stopNode(alone, aloneRead.volume);
    await tier.purge(ALONE);

    log(`together: ${spec.name}, ${options.nodes} nodes staged in the same second`);
    const nodes = await Promise.all(
      Array.from({ length: options.nodes }, (_, i) =>
        startNode(`together${i + 1}-${spec.key}`, TOGETHER),
      ),
    );
    await readySource(spec);
    const remoteBefore = await bytesWritten(options.remotePid);
    const linkBefore = await options.wan.receivedBytes();
    const togetherCpu = await watchCpu(
      nodes.map(({ pid }) => pid),
      tier,
      options,
    );
    const reads: NodeRead[] = await Promise.all(
      nodes.map(({ node }, i) =>
        stageAndRead(
          node,
          options.remote,
          spec,
          options.cacheQuota,
          i + 1,
          `together: node ${i + 1}`,
        ),
      ),
    );
    const cpu = { alone: aloneCpuSeconds, together: await togetherCpu() };
    logCpu(spec.name, cpu);
    const remoteBytes = (await bytesWritten(options.remotePid)) - remoteBefore;
    const linkBytes = (await options.wan.receivedBytes()) - linkBefore;
    const first = reads.map((r) => r.started).reduce((a, b) => (b < a ? b : a));
    const stageOffsetMs = reads.map((r) => Number(r.started - first) / 1e6);
    log(
      `together: ${spec.name}: staged within ${Math.max(...stageOffsetMs).toFixed(1)} ms; the remote's server wrote ${(remoteBytes / 1e6).toFixed(1)} MB, the WAN link carried ${(linkBytes / 1e6).toFixed(1)} MB`,
    );
    // Every node reaches the remote only through the one link (the server listens inside its
    // namespace): a link that carried less than the server wrote means some traffic did not.
    if (!(linkBytes >= 0.95 * remoteBytes)) {
      throw new Error(
        `together: the WAN link carried ${linkBytes} bytes, the remote's server wrote ${remoteBytes}: some node's traffic took another path`,
      );
    }
    const tierBytes: number[] = [];
    for (const [i, started] of nodes.entries()) {
      const { volume } = reads[i] as NodeRead;
      tierBytes.push(await started.node.metric('tier_read_bytes_total', volume));
      await logFillAccount(started.node, `together: node ${i + 1}`);
    }
    // Their uploads are past the measured run: the nodes stop (together, as they started).
    await Promise.all(nodes.map((started, i) => stopNode(started, (reads[i] as NodeRead).volume)));
    await tier.purge(TOGETHER);
    results[spec.key] = {
      bytes: spec.bytes,
      files: spec.files,
      alone: {
        seconds: aloneRead.seconds,
        fillSeconds: aloneRead.fillSeconds,
        remoteBytes: aloneRemote,
        tierBytes: aloneTier,
      },
      cpu,
      seconds: reads.map((r) => r.seconds),
      fillSeconds: reads.map((r) => r.fillSeconds),
      tierBytes,
      stageOffsetMs,
      remoteBytes,
      linkBytes,
    };
  }
  await tier.close();
  const durationSeconds = secondsSince(began);
  log(`together: ${durationSeconds.toFixed(0)} s in all`);
  const big = results.big as TogetherPart;
  const small = results.small as TogetherPart;
  const perByte = (p: TogetherPart) => p.remoteBytes / p.bytes;
  const slowest = (p: TogetherPart) => Math.max(...p.seconds) / p.alone.seconds;
  const ratios = {
    bigTogetherRemoteBytesPerDatasetByte: perByte(big),
    smallTogetherRemoteBytesPerDatasetByte: perByte(small),
    bigTogetherSlowestOverAlone: slowest(big),
    smallTogetherSlowestOverAlone: slowest(small),
  };
  return {
    nodes: options.nodes,
    wan: { rateMbit: options.wan.options.rateMbit, delayMs: options.wan.options.delayMs },
    lan: LAN,
    memberRefresh: MEMBER_REFRESH,
    order: ORDER,
    durationSeconds,
    big,
    small,
    ratios: {
      togetherRemoteBytesPerDatasetByte: Math.max(
        ratios.bigTogetherRemoteBytesPerDatasetByte,
        ratios.smallTogetherRemoteBytesPerDatasetByte,
      ),
      togetherSlowestOverAlone: Math.max(
        ratios.bigTogetherSlowestOverAlone,
        ratios.smallTogetherSlowestOverAlone,
      ),
      ...ratios,
    },
  };
}
