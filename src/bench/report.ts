import type { ClusterResult } from './cluster.js';

/** The results of one benchmark run, and how they are shown: a console table and an SVG chart. */
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
      nodeMemoryPerCachedByte: number;
      /** The tmpfs reads each warm figure was measured beside (in turn, same order). */
      besideTmpfs: {
        bigPromotedMBps: number[];
        bigPrefetchedMBps: number[];
        laterEpochs: number[];
        epochsAfterPrefetch: number[];
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
      smallFilesEpoch2ToTmpfs: number;
      prefetchToLink: number;
      /** The fill's small-file prefetch against rclone copy alone (what the driver adds). */
      prefetchToRcloneCopy: number;
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
  publish: { p50Ms: number; p99Ms: number; seconds: number };
  stage: { readyMs: number[] };
  driver: { idleRssMiB: number; rssAfterMiB: number; clientsLeft: number };
  durationSeconds: number;
}

/** Targets from the benchmark issue: at least (>=) or at most (<=). */
export const TARGETS: Record<string, { op: '>=' | '<='; value: number }> = {
  warmToTmpfs: { op: '>=', value: 0.9 },
  coldToLink: { op: '>=', value: 0.9 },
  pod2OverPod1: { op: '>=', value: 5 },
  smallFilesWarmOverUncached: { op: '>=', value: 10 },
  smallFilesWarmToTmpfs: { op: '>=', value: 0.8 },
  prefetchToLink: { op: '>=', value: 0.5 },
  smallFilesEpoch2ToTmpfs: { op: '>=', value: 0.8 },
  bigPrefetchToLink: { op: '>=', value: 0.9 },
  nodeMemoryPerCachedByte: { op: '<=', value: 1.1 },
  remoteBytesPerDatasetByte: { op: '<=', value: 1.1 },
  node2ColdOverNode1Cold: { op: '>=', value: 2 },
  publishP99Ms: { op: '<=', value: 20 },
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
    '| protocol | big file MB/s: uncached | cold (pod 1) | warm (pod 2) | tmpfs | small files/s: uncached | driver e1/e2/e3 | prefetch e1 | tmpfs | prefetch MB/s | client CPU s/GiB |',
  );
  lines.push('|---|---|---|---|---|---|---|---|---|---|---|');
  for (const p of result.protocols) {
    const b = p.bigFile;
    const s = p.smallFiles;
    lines.push(
      `| ${p.protocol} | ${fmt(b.uncachedMBps)} | ${fmt(b.coldMBps)} | ${fmt(b.warmMBps)} | ${fmt(b.tmpfsMBps)} | ${fmt(Math.max(...s.uncached))} | ${s.driver.map(fmt).join(' / ')} | ${fmt(s.driverWithPrefetch[0] ?? NaN)} | ${fmt(Math.max(...s.tmpfs))} | ${fmt(s.prefetchMBps)} | ${fmt(p.resources.clientCpuSecondsPerGiB)} |`,
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

  // Chart: each headline ratio as a bar against its target line, scaled per row.
  const rows = Object.entries(result.headline);
  const width = 760;
  const rowHeight = 34;
  const left = 230;
  const barMax = width - left - 120;
  const height = 60 + rows.length * rowHeight;
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="13">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="10" y="24" font-size="15" font-weight="bold">${escape(`dataset-cache-csi benchmark (${result.mode}, ${result.link.rateMbit} Mbit/s, ${result.link.delayMs} ms): measured vs target`)}</text>`,
  ];
  rows.forEach(([key, value], i) => {
    const target = TARGETS[key];
    const y = 44 + i * rowHeight;
    const scale = target ? Math.max(value, target.value) * 1.1 : value * 1.1 || 1;
    const bar = Math.max(1, (value / scale) * barMax);
    const ok = meets(key, value);
    parts.push(`<text x="10" y="${y + 17}">${escape(key)}</text>`);
    parts.push(
      `<rect x="${left}" y="${y + 4}" width="${bar.toFixed(1)}" height="18" fill="${ok ? '#2e7d32' : '#c62828'}"/>`,
    );
    if (target) {
      const tx = left + (target.value / scale) * barMax;
      parts.push(
        `<line x1="${tx.toFixed(1)}" y1="${y}" x2="${tx.toFixed(1)}" y2="${y + 26}" stroke="black" stroke-dasharray="3,2"/>`,
      );
    }
    parts.push(
      `<text x="${left + bar + 6}" y="${y + 17}">${escape(`${fmt(value)}${target ? ` (${target.op} ${target.value})` : ''}`)}</text>`,
    );
  });
  parts.push('</svg>');
  return { table: lines.join('\n'), svg: `${parts.join('\n')}\n` };
}
