// The benchmarks' report: a run's results as a console table and an SVG chart.
/**
 * The results of one benchmark run, and how they are shown: a console table and an SVG chart.
 * Run on a results file (node dist/bench/report.js bench/results/X.json ...) it prints the table
 * and writes X.svg again, so the chart can change without a new run.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { pathToFileURL } from 'node:url';
import type { ClusterResult } from './cluster.js';
import type { TogetherResult } from './together.js';
import type { WanResult } from './wan.js';

export interface BenchResult {
  date: string;
  mode: 'quick' | 'full';
  link: { rateMbit: number; delayMs: number; measuredMBps: number };
  sizes: Record<string, number>;
  headline: Record<string, number>;
  protocols: {
    protocol: string;
    bigFile: {
      uncachedMBps: number;
      /** A second read through the uncached mount (runs before this was recorded lack it). */
      uncachedWarmMBps?: number;
      coldMBps: number;
      warmMBps: number;
      tmpfsMBps: number;
      linkMBps: number;
    };
    smallFiles: {
      uncached: number[];
      driver: number[];
      driverWithPrefetch: number[];
      tmpfs: number[];
      prefetchSeconds: number;
      prefetchMBps: number;
    };
    /** The default path of read-only datasets: the local copy over the FUSE path. */
    copyPath: {
      bigColdMBps: number;
      /** The big file read in pod 2 after pod 1's read was promoted into the copy. */
      bigWarmPromotedMBps: number;
      /** The big file read after a prefetch put it into the copy. */
      bigWarmPrefetchedMBps: number;
      bigPrefetchMBps: number;
      /** Epochs without prefetch: epoch 1 cold, later ones from promoted files. */
      smallEpochs: number[];
      smallEpochsAfterPrefetch: number[];
      smallPrefetchSeconds: number;
      smallPrefetchMBps: number;
      /** `rclone copy` alone of the same small files over the same link: the tool's ceiling. */
      rcloneCopyMBps: number;
      /** Pairs of that copy (seconds) and a fresh prefetch of the same files beside it. */
      prefetchBesideRcloneCopy?: { toolSeconds: number[]; fillSeconds: number[]; ratios: number[] };
      /** Epoch 1 without prefetch on a fresh client with sweep fills asked for (files/s). */
      epoch1WithSweeps?: number;
      /** Bytes that crossed the link in that epoch (reads on demand and the sweep fill). */
      epoch1RemoteBytes?: number;
      /** Fills the driver started from sweeps it saw in epoch 1. */
      epoch1SweepFills?: number;
      /** Epoch 2 after that epoch 1 (files/s): the default's second epoch. */
      epoch2AfterSweeps?: number;
      /** Random 64 KiB reads into the big file's first half: sweeps asked for, and not. */
      randomReads?: { mbps: number; sweeps: number; withoutSweepsMBps: number };
      nodeMemoryPerCachedByte: number;
      /** The tmpfs reads each warm figure was measured beside (in turn, same order). */
      besideTmpfs: {
        bigPromotedMBps: number[];
        bigPrefetchedMBps: number[];
        laterEpochs: number[];
        epochsAfterPrefetch: number[];
        epoch2AfterSweeps?: number[];
        /** The tmpfs epochs read just before each epoch 2 (beside the one after it). */
        beforeEpoch2?: number[];
        beforeEpoch2AfterSweeps?: number[];
      };
    };
    /** Headline ratios of the copy path (what the driver serves by default). */
    ratios: {
      warmToTmpfs: number;
      coldToLink: number;
      pod2OverPod1: number;
      smallFilesWarmOverUncached: number;
      /** The ceiling of the one above: tmpfs (beside the copy's epochs) over the uncached mount. */
      smallFilesTmpfsOverUncached: number;
      smallFilesWarmToTmpfs: number;
      /** Epoch 2 with sweep fills off: the copy holds what promotions brought in. */
      smallFilesEpoch2ToTmpfs: number;
      /** Epoch 2 of the default (sweep fills on), beside tmpfs. */
      smallFilesEpoch2AfterSweepsToTmpfs?: number;
      prefetchToLink: number;
      /** The fill's small-file prefetch against rclone copy alone (what the driver adds). */
      prefetchToRcloneCopy: number;
      /** Epoch 1 without prefetch, sweep fills asked for (files/s), over rclone copy alone. */
      smallFilesEpoch1ToRcloneCopy?: number;
      /** The same with the default (no sweep fills): reads on demand and promotion only. */
      smallFilesEpoch1WithoutSweepsToRcloneCopy?: number;
      /** What epoch 1 without prefetch cost the link, per byte of the files read. */
      epoch1RemoteBytesPerDatasetByte?: number;
      /** Random reads into part of a big file, sweeps on over off (no fill may start: ~1). */
      randomReadsWithSweepsOverWithout?: number;
      bigPrefetchToLink: number;
      nodeMemoryPerCachedByte: number;
    };
    /** The same ratios on the FUSE path (localCopy: false), measured in the same run. */
    fuseRatios: {
      warmToTmpfs: number;
      coldToLink: number;
      pod2OverPod1: number;
      smallFilesWarmOverUncached: number;
      smallFilesWarmToTmpfs: number;
      prefetchToLink: number;
      nodeMemoryPerCachedByte: number;
    };
    resources: {
      clientCpuSecondsPerGiB: number;
      driverCpuSecondsPerGiB: number;
      clientRssMiB: number;
    };
  }[];
  /** Nodes reading one remote one after another, sharing the cluster tier. */
  cluster?: ClusterResult;
  /** Nodes staging one dataset in the same second over one shared WAN link, and one node alone. */
  together?: TogetherResult;
  /** The first epoch on a high-latency link (full runs, and quick runs with --wan). */
  wan?: WanResult;
  publish: { p50Ms: number; p99Ms: number; seconds: number };
  stage: { readyMs: number[] };
  driver: { idleRssMiB: number; rssAfterMiB: number; clientsLeft: number };
  durationSeconds: number;
}

/**
 * Targets this bench checks: at least (>=) or at most (<=). Retired as above this machine's
 * physical limits: smallFilesWarmOverUncached >= 10 (tmpfs itself is 7.7-9.9x the uncached mount
 * here; smallFilesTmpfsOverUncached is that ceiling) and prefetchToLink >= 0.5 (rclone copy alone
 * reaches 0.2-0.4x the link here; the fill is held against it as prefetchToRcloneCopy). Both
 * figures are still recorded and shown.
 */
export const TARGETS: Record<string, { op: '>=' | '<='; value: number }> = {
  warmToTmpfs: { op: '>=', value: 0.9 },
  coldToLink: { op: '>=', value: 0.9 },
  pod2OverPod1: { op: '>=', value: 5 },
  smallFilesWarmToTmpfs: { op: '>=', value: 0.8 },
  smallFilesEpoch2ToTmpfs: { op: '>=', value: 0.9 },
  smallFilesEpoch2AfterSweepsToTmpfs: { op: '>=', value: 0.9 },
  smallFilesEpoch1ToRcloneCopy: { op: '>=', value: 0.8 },
  smallFilesEpoch1ToRcloneCopyWan: { op: '>=', value: 0.8 },
  epoch1RemoteBytesPerDatasetByte: { op: '<=', value: 1.15 },
  prefetchToRcloneCopy: { op: '>=', value: 0.9 },
  bigPrefetchToLink: { op: '>=', value: 0.9 },
  nodeMemoryPerCachedByte: { op: '<=', value: 1.1 },
  remoteBytesPerDatasetByte: { op: '<=', value: 1.1 },
  node2ColdOverNode1Cold: { op: '>=', value: 2 },
  /** Nodes started together fetch each byte about once (issue 22: cooperative fills). */
  togetherRemoteBytesPerDatasetByte: { op: '<=', value: 1.15 },
  togetherSlowestOverAlone: { op: '<=', value: 1.3 },
  /** At the storm's concurrency (50 publishes at once on two cores). */
  publishP99Ms: { op: '<=', value: 250 },
  publishesPerMin: { op: '>=', value: 20_000 },
  stageReadyMs: { op: '<=', value: 500 },
  driverIdleRssMiB: { op: '<=', value: 120 },
};

export const meets = (key: string, value: number): boolean => {
  const target = TARGETS[key];
  if (!target) return true;
  return target.op === '>=' ? value >= target.value : value <= target.value;
};

const fmt = (n: number): string =>
  !Number.isFinite(n)
    ? String(n)
    : Math.abs(n) >= 100
      ? n.toFixed(0)
      : Math.abs(n) >= 10
        ? n.toFixed(1)
        : n.toFixed(2);

const escape = (text: string): string => text.replace(/&/g, '&amp;').replace(/</g, '&lt;');

export function renderReport(result: BenchResult): { table: string; svg: string } {
  const lines: string[] = [];
  lines.push(
    `link ${result.link.rateMbit} Mbit/s, ${result.link.delayMs} ms each way (measured ${fmt(result.link.measuredMBps)} MB/s), ${result.mode} run`,
  );
  lines.push('');
  lines.push(
    '| protocol | big file MB/s: uncached, first / second read | cold (pod 1) | warm (pod 2) | tmpfs | small files/s: uncached | driver e1/e2/e3 | prefetch e1 | tmpfs | prefetch MB/s | client CPU s/GiB |',
  );
  lines.push('|---|---|---|---|---|---|---|---|---|---|---|');
  for (const p of result.protocols) {
    const b = p.bigFile;
    const s = p.smallFiles;
    lines.push(
      `| ${p.protocol} | ${fmt(b.uncachedMBps)} / ${b.uncachedWarmMBps === undefined ? '-' : fmt(b.uncachedWarmMBps)} | ${fmt(b.coldMBps)} | ${fmt(b.warmMBps)} | ${fmt(b.tmpfsMBps)} | ${fmt(Math.max(...s.uncached))} | ${s.driver.map(fmt).join(' / ')} | ${fmt(s.driverWithPrefetch[0] ?? NaN)} | ${fmt(Math.max(...s.tmpfs))} | ${fmt(s.prefetchMBps)} | ${fmt(p.resources.clientCpuSecondsPerGiB)} |`,
    );
  }
  lines.push('');
  lines.push(
    '| protocol | path | big warm MB/s (x tmpfs) | small warm files/s (x tmpfs) | epoch 2 without prefetch (x tmpfs) | prefetch small / big MB/s (x link) | node memory per cached byte |',
  );
  lines.push('|---|---|---|---|---|---|---|');
  for (const p of result.protocols) {
    const c = p.copyPath;
    const f = p.fuseRatios;
    const tmpfsFiles = Math.max(...p.smallFiles.tmpfs);
    const x = (value: number, limit: number) => `${fmt(value)} (${fmt(value / limit)}x)`;
    lines.push(
      `| ${p.protocol} | FUSE (localCopy: false) | ${x(p.bigFile.warmMBps, p.bigFile.tmpfsMBps)} | ${x(Math.max(...p.smallFiles.driver.slice(1)), tmpfsFiles)} | ${x(p.smallFiles.driver[1] ?? NaN, tmpfsFiles)} | ${x(p.smallFiles.prefetchMBps, p.bigFile.linkMBps)} / - | ${fmt(f.nodeMemoryPerCachedByte)} |`,
    );
    lines.push(
      // Warm copy-path figures against the tmpfs reads made beside them (see besideTmpfs).
      `| ${p.protocol} | local copy (default) | ${fmt(Math.max(c.bigWarmPromotedMBps, c.bigWarmPrefetchedMBps))} (${fmt(p.ratios.warmToTmpfs)}x) | ${fmt(Math.max(...c.smallEpochsAfterPrefetch))} (${fmt(p.ratios.smallFilesWarmToTmpfs)}x) | ${fmt(c.smallEpochs[1] ?? NaN)} (${fmt(p.ratios.smallFilesEpoch2ToTmpfs)}x) | ${x(c.smallPrefetchMBps, p.bigFile.linkMBps)} / ${x(c.bigPrefetchMBps, p.bigFile.linkMBps)}; rclone copy alone ${x(c.rcloneCopyMBps, p.bigFile.linkMBps)} | ${fmt(c.nodeMemoryPerCachedByte)} |`,
    );
  }
  if (result.cluster) {
    const c = result.cluster;
    lines.push('');
    lines.push(
      `cluster tier: ${c.nodes} nodes one after another, tier behind ${c.lan.rateMbit} Mbit/s, ${c.lan.delayMs} ms`,
    );
    lines.push(
      '| part | first read s, node 1 / 2 / ... | remote MB sent, per node | from the tier MB, per node | remote bytes per dataset byte | node 1 / node 2 |',
    );
    lines.push('|---|---|---|---|---|---|');
    for (const [name, part, perByte, sooner] of [
      [
        'big file',
        c.big,
        c.ratios.bigRemoteBytesPerDatasetByte,
        c.ratios.bigNode2ColdOverNode1Cold,
      ],
      [
        'small files',
        c.small,
        c.ratios.smallRemoteBytesPerDatasetByte,
        c.ratios.smallNode2ColdOverNode1Cold,
      ],
    ] as const) {
      const mb = (values: number[]) => values.map((v) => fmt(v / 1e6)).join(' / ');
      lines.push(
        `| ${name} | ${part.firstReadSeconds.map(fmt).join(' / ')} | ${mb(part.remoteBytes)} | ${mb(part.tierBytes)} | ${fmt(perByte)} | ${fmt(sooner)} |`,
      );
    }
  }
  if (result.together) {
    const t = result.together;
    lines.push('');
    lines.push(
      `together: ${t.nodes} nodes staged in the same second, the remote behind one ${t.wan.rateMbit} Mbit/s link they share, the tier behind ${t.lan.rateMbit} Mbit/s; one node alone on the same link first (member refresh ${t.memberRefresh}; ${fmt(t.durationSeconds)} s in all)`,
    );
    lines.push(
      '| part | alone s (MB/s) | together s, node 1 / 2 / ... | slowest / alone | remote MB: alone, together (all nodes) | WAN link MB (together) | from the tier MB, per node | together remote bytes per dataset byte |',
    );
    lines.push('|---|---|---|---|---|---|---|---|');
    for (const [name, part, slowest, perByte] of [
      [
        'big file',
        t.big,
        t.ratios.bigTogetherSlowestOverAlone,
        t.ratios.bigTogetherRemoteBytesPerDatasetByte,
      ],
      [
        'small files',
        t.small,
        t.ratios.smallTogetherSlowestOverAlone,
        t.ratios.smallTogetherRemoteBytesPerDatasetByte,
      ],
    ] as const) {
      lines.push(
        // The alone node's MB/s against the link: a slower lone node would flatter the ratio.
        `| ${name} | ${fmt(part.alone.seconds)} (${fmt(part.bytes / 1e6 / part.alone.seconds)}) | ${part.seconds.map(fmt).join(' / ')} | ${fmt(slowest)} | ${fmt(part.alone.remoteBytes / 1e6)}, ${fmt(part.remoteBytes / 1e6)} | ${fmt(part.linkBytes / 1e6)} | ${part.tierBytes.map((v) => fmt(v / 1e6)).join(' / ')} | ${fmt(perByte)} |`,
      );
    }
    // Runs before CPU was counted lack it.
    const cpuParts = [
      ['big file', t.big.cpu],
      ['small files', t.small.cpu],
    ] as const;
    if (cpuParts.some(([, cpu]) => cpu)) {
      lines.push(
        '| part | CPU s alone → together: node(s) | s3rver | remote server + proxies | pods | machine busy (of all cores) |',
      );
      lines.push('|---|---|---|---|---|---|');
      for (const [name, cpu] of cpuParts) {
        if (!cpu) continue;
        const { alone: a, together: b } = cpu;
        const pct = (c: typeof a) => `${(100 * c.saturation).toFixed(0)}%`;
        lines.push(
          `| ${name} | ${a.nodes.map(fmt).join(' / ')} → ${b.nodes.map(fmt).join(' / ')} | ${fmt(a.tier)} → ${fmt(b.tier)} | ${fmt(a.remote + a.proxies)} → ${fmt(b.remote + b.proxies)} | ${fmt(a.pods)} → ${fmt(b.pods)} | ${pct(a)} of ${fmt(a.wallSeconds)} s → ${pct(b)} of ${fmt(b.wallSeconds)} s |`,
        );
      }
    }
  }
  if (result.wan) {
    const { wan } = result;
    lines.push('');
    lines.push(
      `First epoch on a ${wan.delayMs} ms link (each way), ${wan.files} small files, files/s (× rclone copy alone):`,
    );
    lines.push(
      '| protocol | rclone copy alone | with sweep fills (default) | without (autoPrefetch: false) | link bytes (sweeps) |',
    );
    lines.push('|---|---|---|---|---|');
    for (const p of wan.protocols) {
      lines.push(
        `| ${p.protocol} | ${fmt(p.rcloneCopyFilesPerSec)} | ${fmt(p.epoch1WithSweeps)} (${fmt(p.ratios.smallFilesEpoch1ToRcloneCopyWan)}x) | ${fmt(p.epoch1WithoutSweeps)} (${fmt(p.ratios.epoch1WithoutSweepsToRcloneCopyWan)}x) | ${fmt(p.remoteBytesPerDatasetByte)}x |`,
      );
    }
  }
  lines.push('');
  lines.push('| metric | value | target | met |');
  lines.push('|---|---|---|---|');
  for (const [key, value] of Object.entries(result.headline)) {
    const target = TARGETS[key];
    lines.push(
      `| ${key} | ${fmt(value)} | ${target ? `${target.op} ${target.value}` : ''} | ${target ? (meets(key, value) ? 'yes' : 'NO') : ''} |`,
    );
  }
  lines.push(
    `publish p50 ${fmt(result.publish.p50Ms)} ms; stage-to-first-byte ${result.stage.readyMs.map(fmt).join(', ')} ms; driver RSS idle ${fmt(result.driver.idleRssMiB)} MiB, after the run ${fmt(result.driver.rssAfterMiB)} MiB`,
  );

  return { table: lines.join('\n'), svg: renderChart(result) };
}

/** Thousands separated, as a paper prints them (8,362; 33.0; 0.98). */
const figure = (n: number): string =>
  !Number.isFinite(n)
    ? 'n/a'
    : Math.abs(n) >= 100
      ? Math.round(n).toLocaleString('en-US')
      : Math.abs(n) >= 10
        ? n.toFixed(1)
        : n.toFixed(2);

/** One bar of a group: its value per column (undefined: not measured) and a note after it. */
interface Bar {
  label: string;
  fill: string;
  /** Text on the bar: dark on light fills, white on dark ones. */
  ink: string;
  values: (number | undefined)[];
  notes?: (string | undefined)[];
}

interface Group {
  title: string;
  unit: string;
  bars: Bar[];
  /** Column headings when they are not the protocols (the cluster group's parts). */
  columns?: string[];
}

const SERIES = {
  uncached: { label: 'uncached rclone mount', fill: '#bdbdbd', ink: '#212121' },
  fuse: { label: 'FUSE path (localCopy: false)', fill: '#90caf9', ink: '#0d2a4a' },
  copy: { label: 'copy path (the default)', fill: '#1565c0', ink: '#ffffff' },
  tmpfs: { label: 'local tmpfs (the limit)', fill: '#81c784', ink: '#1b3d1d' },
};

const max = (values: (number | undefined)[]): number =>
  Math.max(...values.filter((v): v is number => v !== undefined && Number.isFinite(v)));

/** "(72x uncached)" after a figure, when both are measured. */
const times = (value: number | undefined, base: number | undefined, name: string) =>
  value === undefined || base === undefined || !(base > 0) || !Number.isFinite(value)
    ? undefined
    : `${fmt(value / base)}x ${name}`;

/** The scenarios a user compares, each group with the four ways to read the same bytes. */
function groups(result: BenchResult): Group[] {
  const p = result.protocols;
  const big = `big file (${result.sizes.bigMiB} MiB)`;
  const small = `${(result.sizes.smallFiles ?? NaN).toLocaleString('en-US')} small files`;
  // tmpfs at its best in the run: the reads made at the start and beside each warm figure.
  const bigTmpfs = p.map((x) =>
    max([
      x.bigFile.tmpfsMBps,
      ...x.copyPath.besideTmpfs.bigPromotedMBps,
      ...x.copyPath.besideTmpfs.bigPrefetchedMBps,
    ]),
  );
  const smallTmpfs = p.map((x) =>
    max([
      ...x.smallFiles.tmpfs,
      ...x.copyPath.besideTmpfs.laterEpochs,
      ...x.copyPath.besideTmpfs.epochsAfterPrefetch,
    ]),
  );
  const four = (
    uncached: (number | undefined)[],
    fuse: (number | undefined)[],
    copy: (number | undefined)[],
    tmpfs: number[],
  ): Bar[] => [
    { ...SERIES.uncached, values: uncached },
    { ...SERIES.fuse, values: fuse, notes: fuse.map((v, i) => times(v, uncached[i], 'uncached')) },
    { ...SERIES.copy, values: copy, notes: copy.map((v, i) => times(v, uncached[i], 'uncached')) },
    { ...SERIES.tmpfs, values: tmpfs },
  ];
  const out: Group[] = [];
  if (p.length > 0) {
    out.push({
      title: `${big}, first read (cold: over the link)`,
      unit: 'MB/s',
      bars: four(
        p.map((x) => x.bigFile.uncachedMBps),
        p.map((x) => x.bigFile.coldMBps),
        p.map((x) => x.copyPath.bigColdMBps),
        bigTmpfs,
      ),
    });
    out.push({
      title: `${big}, read again by pod 2 (warm)`,
      unit: 'MB/s',
      bars: four(
        p.map((x) => x.bigFile.uncachedWarmMBps),
        p.map((x) => x.bigFile.warmMBps),
        p.map((x) => x.copyPath.bigWarmPromotedMBps),
        bigTmpfs,
      ),
    });
    for (let e = 0; e < (result.sizes.epochs ?? 3); e += 1) {
      out.push({
        title: `${small}, epoch ${e + 1}${e === 0 ? ' (cold)' : ''}, no prefetch`,
        unit: 'files/s',
        bars: four(
          p.map((x) => x.smallFiles.uncached[e]),
          p.map((x) => x.smallFiles.driver[e]),
          p.map((x) => x.copyPath.smallEpochs[e]),
          smallTmpfs,
        ),
      });
    }
    out.push({
      title: `${small}, first epoch after a prefetch (uncached: its first epoch)`,
      unit: 'files/s',
      bars: four(
        p.map((x) => x.smallFiles.uncached[0]),
        p.map((x) => x.smallFiles.driverWithPrefetch[0]),
        p.map((x) => x.copyPath.smallEpochsAfterPrefetch[0]),
        smallTmpfs,
      ),
    });
    const rclone = p.map((x) => x.copyPath.rcloneCopyMBps);
    out.push({
      title: `${small}: the prefetch's fill of the cache`,
      unit: 'MB/s',
      bars: [
        { ...SERIES.uncached, label: 'rclone copy alone (the tool)', values: rclone },
        {
          ...SERIES.fuse,
          values: p.map((x) => x.smallFiles.prefetchMBps),
          notes: p.map((x, i) => times(x.smallFiles.prefetchMBps, rclone[i], 'rclone copy')),
        },
        {
          ...SERIES.copy,
          values: p.map((x) => x.copyPath.smallPrefetchMBps),
          notes: p.map((x, i) => times(x.copyPath.smallPrefetchMBps, rclone[i], 'rclone copy')),
        },
        {
          ...SERIES.tmpfs,
          label: 'the link (one HTTP download)',
          values: p.map((x) => x.bigFile.linkMBps),
        },
      ],
    });
  }
  const c = result.cluster;
  if (c) {
    const nodes = Array.from({ length: c.nodes }, (_, n) => n);
    out.push({
      title: 'cluster tier: seconds until a node has read everything once',
      unit: 'lower is better',
      columns: ['big file', 'small files'],
      bars: nodes.map((n) => ({
        ...(n === 0 ? SERIES.uncached : SERIES.copy),
        label: `node ${n + 1}${n === 0 ? ' (from the remote)' : ' (from the tier)'}`,
        values: [c.big.firstReadSeconds[n], c.small.firstReadSeconds[n]],
        notes: [c.big, c.small].map((part) =>
          n === 0 ? undefined : times(part.firstReadSeconds[0], part.firstReadSeconds[n], 'sooner'),
        ),
      })),
    });
  }
  const t = result.together;
  if (t) {
    const nodes = Array.from({ length: t.nodes }, (_, n) => n);
    const parts = [t.big, t.small];
    out.push({
      title: `${t.nodes} nodes staged together on one shared link: seconds until a node has read everything once`,
      unit: 'lower is better',
      columns: ['big file', 'small files'],
      bars: [
        {
          ...SERIES.tmpfs,
          label: 'one node alone',
          values: parts.map((part) => part.alone.seconds),
        },
        ...nodes.map((n) => ({
          ...SERIES.uncached,
          label: `node ${n + 1} together`,
          values: parts.map((part) => part.seconds[n]),
          notes: parts.map((part) => times(part.seconds[n], part.alone.seconds, 'alone')),
        })),
      ],
    });
  }
  return out;
}

/**
 * Grouped bars: per scenario the uncached mount, the FUSE path, the copy path and tmpfs, one
 * column per protocol, the figure written on each bar. Each group has its own linear scale (its
 * longest bar spans the column), so no bar is clipped and each group reads on its own.
 */
function renderChart(result: BenchResult): string {
  const all = groups(result);
  const protocols = result.protocols.map((p) => p.protocol);
  const columnCount = Math.max(2, protocols.length);
  const width = 1060;
  const labelWidth = 210;
  const columnGap = 24;
  const columnWidth = (width - labelWidth - 20 - columnGap * (columnCount - 1)) / columnCount;
  const barHeight = 17;
  const barGap = 4;
  const charWidth = 6.6; // at font-size 12, for placing text inside or after a bar
  const parts: string[] = [];
  let y = 28;
  const text = (x: number, ty: number, body: string, extra = '') =>
    parts.push(`<text x="${x.toFixed(1)}" y="${ty.toFixed(1)}"${extra}>${escape(body)}</text>`);
  text(
    10,
    y,
    `dataset-cache-csi benchmark: ${result.mode} run, link ${result.link.rateMbit} Mbit/s and ${result.link.delayMs} ms each way (one download: ${figure(result.link.measuredMBps)} MB/s)`,
    ' font-size="16" font-weight="bold"',
  );
  y += 20;
  text(
    10,
    y,
    'Higher is better (except the cluster tier: seconds). Each group has its own linear scale: its longest bar spans the column. tmpfs: the best of its reads in the run.',
    ' fill="#424242"',
  );
  y += 16;
  if (all.length === 0) {
    text(10, y + 20, 'no throughput scenarios in this run (see the table)');
    y += 40;
  }
  const columnX = (i: number) => labelWidth + i * (columnWidth + columnGap);
  const headings = (names: string[]) => {
    y += 18;
    names.forEach((name, i) => text(columnX(i), y, name, ' font-size="13" font-weight="bold"'));
  };
  if (protocols.length > 0) headings(protocols.map((name) => `${name} remote`));
  for (const group of all) {
    y += 22;
    text(10, y, `${group.title}, ${group.unit}`, ' font-size="13" font-weight="bold"');
    if (group.columns) headings(group.columns);
    y += 6;
    const scale = max(group.bars.flatMap((b) => b.values));
    for (const bar of group.bars) {
      text(14, y + barHeight - 4, bar.label);
      bar.values.forEach((value, i) => {
        const x0 = columnX(i);
        if (value === undefined || !Number.isFinite(value)) {
          text(x0 + 4, y + barHeight - 4, 'not measured in this run', ' fill="#9e9e9e"');
          return;
        }
        const length = Math.max(1.5, (value / (scale > 0 ? scale : 1)) * columnWidth);
        parts.push(
          `<rect x="${x0}" y="${y}" width="${length.toFixed(1)}" height="${barHeight}" fill="${bar.fill}"/>`,
        );
        const note = bar.notes?.[i];
        const label = `${figure(value)}${note ? `  (${note})` : ''}`;
        const labelLength = label.length * charWidth;
        if (length + 6 + labelLength <= columnWidth) {
          text(x0 + length + 5, y + barHeight - 4, label);
        } else {
          // Inside the bar's end; a label longer than the bar starts at the bar's start.
          const x = Math.max(x0 + 4, x0 + length - 5 - labelLength);
          text(x, y + barHeight - 4, label, ` fill="${bar.ink}"`);
        }
      });
      y += barHeight + barGap;
    }
  }
  y += 16;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${y}" font-family="sans-serif" font-size="12">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    ...parts,
    '</svg>',
    '',
  ].join('\n');
}

/**
 * Re-renders results files: prints each table and writes the chart next to the file. Files of
 * runs older than the copy path's figures lack fields the report reads: they are named and left.
 */
async function renderFiles(paths: string[]): Promise<number> {
  let failed = 0;
  for (const path of paths) {
    try {
      const result = JSON.parse(await readFile(path, 'utf8')) as BenchResult;
      const { table, svg } = renderReport(result);
      const svgPath = path.replace(/\.json$/, '') + '.svg';
      await writeFile(svgPath, svg);
      process.stdout.write(`${path}\n${table}\nchart: ${svgPath}\n\n`);
    } catch (err) {
      failed += 1;
      process.stderr.write(
        `report: ${path}: ${err instanceof Error ? err.message : String(err)}\n`,
      );
    }
  }
  return failed === 0 ? 0 : 1;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  if (process.argv.length < 3) {
    process.stderr.write('usage: node dist/bench/report.js bench/results/<run>.json ...\n');
    process.exitCode = 2;
  } else {
    process.exitCode = await renderFiles(process.argv.slice(2));
  }
}
