// The first epoch without prefetch on a high-latency link (a bucket a region away): with sweep fills, without, and rclone copy alone of the same files, over HTTP and S3.
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { log, rcloneCopyAlone, type Bench } from './harness.js';
import { EmulatedLink, serveDataset } from './link.js';
import { readEpoch, writeSmallFiles } from './workload.js';

export interface WanOptions {
  bench: Bench;
  /** A directory of the run's own for the tree and the S3 store. */
  work: string;
  delayMs: number;
  files: number;
  dirs: number;
  cacheQuota: string;
  prefetchConcurrency: string;
}

export interface WanProtocol {
  protocol: string;
  /** Epoch 1 (files/s) with sweep fills (the default), with them off, rclone copy alone. */
  epoch1WithSweeps: number;
  epoch1WithoutSweeps: number;
  rcloneCopyFilesPerSec: number;
  /** Bytes that crossed the link during the epoch with sweeps and its fill, per byte of the files. */
  remoteBytesPerDatasetByte: number;
  ratios: { smallFilesEpoch1ToRcloneCopyWan: number; epoch1WithoutSweepsToRcloneCopyWan: number };
}

export interface WanResult {
  delayMs: number;
  files: number;
  bytes: number;
  protocols: WanProtocol[];
}

const TREE = 'wan';

/**
 * A tree of `files` small files behind a link `delayMs` each way at 1 Gbit/s, served over HTTP and
 * S3 (s3rver) from a namespace of its own. For each protocol, in this order: rclone copy of the
 * files alone (the ceiling), epoch 1 through a fresh volume with the default, sweep fills (waiting
 * for its fill to end before the link's bytes are read), epoch 1 through a fresh volume with
 * `autoPrefetch: "false"`. 16 readers, shuffled, as in the main run.
 */
export async function runWan(options: WanOptions): Promise<WanResult> {
  const { bench, work } = options;
  const data = join(work, 'data');
  await mkdir(join(data, TREE), { recursive: true });
  const tree = await writeSmallFiles(join(data, TREE), options.files, options.dirs);
  const link = await EmulatedLink.create({
    rateMbit: 1000,
    delayMs: options.delayMs,
    name: 'w',
    subnet: 204,
  });
  bench.defer(() => link.close(), 'closing the WAN link');
  const { remotes } = await serveDataset(link, data, join(work, 's3'), 'wan');
  const fileList = join(work, 'files');
  await writeFile(fileList, tree.paths.map((path) => `${TREE}/${path}\n`).join(''));
  const protocols: WanProtocol[] = [];
  for (const remote of remotes) {
    log(`WAN (${options.delayMs} ms each way), ${remote.protocol}: rclone copy of the tree alone`);
    const ceilingDir = join(work, `rclone-copy-${remote.protocol}`);
    const ceiling = await rcloneCopyAlone(
      remote,
      fileList,
      ceilingDir,
      options.prefetchConcurrency,
    );
    const rcloneCopyFilesPerSec = tree.paths.length / ceiling.seconds;
    const copied = ceiling.files;
    if (copied !== tree.paths.length) {
      throw new Error(`rclone copy alone wrote ${copied} files of ${tree.paths.length}`);
    }

    const epoch = async (extra: Record<string, string>, pod: string) => {
      const volume = await bench.stage(remote, { cacheQuota: options.cacheQuota, ...extra });
      const root = await bench.publish(volume, pod);
      const before = await link.receivedBytes();
      const rate = await readEpoch(join(root, TREE), tree.paths, 1);
      await bench.waitForMetric('prefetch_running', volume, 0, 600_000, 'at most');
      const bytes = (await link.receivedBytes()) - before;
      await bench.unpublish(volume, pod);
      await bench.unstage(volume);
      return { rate, bytes };
    };
    log(`WAN, ${remote.protocol}: epoch 1 with sweep fills (the default), then without`);
    const swept = await epoch({}, `wan-swept-${remote.protocol}`);
    const plain = await epoch({ autoPrefetch: 'false' }, `wan-plain-${remote.protocol}`);
    protocols.push({
      protocol: remote.protocol,
      epoch1WithSweeps: swept.rate,
      epoch1WithoutSweeps: plain.rate,
      rcloneCopyFilesPerSec,
      remoteBytesPerDatasetByte: swept.bytes / tree.bytes,
      ratios: {
        smallFilesEpoch1ToRcloneCopyWan: swept.rate / rcloneCopyFilesPerSec,
        epoch1WithoutSweepsToRcloneCopyWan: plain.rate / rcloneCopyFilesPerSec,
      },
    });
    log(`WAN, ${remote.protocol}: ${JSON.stringify(protocols.at(-1))}`);
  }
  return { delayMs: options.delayMs, files: tree.paths.length, bytes: tree.bytes, protocols };
}
