// `dataset-cache-csi prefetch`: warms a dataset on this node by hand, into its local copy or through its engine's mount.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { fillCopy } from '../copy/fill.js';
import { LocalCopy } from '../copy/local-copy.js';
import { parsePrefetch, ParameterError } from '../dataset/params.js';
import { RcloneEngine } from '../engines/rclone.js';
import { datasetRemote, RcloneTransfers } from '../engines/rclone-transfer.js';
import { ExecaRunner } from '../kernel/runner.js';
import { SystemMounter } from '../kernel/mounter.js';
import { engineMountOf, Journal } from '../mount/journal.js';
import { createLogger } from '../log.js';
import { clientCredentials } from '../supervisor/clients.js';
import { ClusterTier } from '../tier/cluster-tier.js';
import { readTierSettings, recordedTierConfig } from '../tier/settings.js';
import { prefetch } from './walk.js';

export const PREFETCH_USAGE = `usage: dataset-cache-csi prefetch --state-dir DIR --dataset KEY|VOLUME_ID [--concurrency N] [--refresh] PATTERN...
  Warms the files matching each PATTERN (globs relative to the dataset; "dir/" warms metadata only)
  on this node: into the dataset's local copy when it has one (read-only datasets; from the node's
  cluster tier first when the dataset uses it), else through its running cache client. --refresh
  first drops copies that no longer match the remote (size, time or gone), so the files are copied
  again as they are now.`;

/** The by-hand prefetch: finds the dataset's client in the node journal and warms it. */
export async function runPrefetchCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      'state-dir': { type: 'string', default: '/var/lib/dataset-cache-csi' },
      dataset: { type: 'string' },
      concurrency: { type: 'string', default: '16' },
      refresh: { type: 'boolean', default: false },
      rclone: { type: 'string', default: 'rclone' },
    },
  });
  const concurrency = Number(values.concurrency);
  if (!values.dataset || positionals.length === 0 || !(concurrency >= 1 && concurrency <= 256)) {
    process.stderr.write(`${PREFETCH_USAGE}\n`);
    return 2;
  }
  let patterns;
  try {
    patterns = parsePrefetch(positionals.join(','));
  } catch (err) {
    if (err instanceof ParameterError) {
      process.stderr.write(`dataset-cache-csi prefetch: ${err.message}\n`);
      return 2;
    }
    throw err;
  }
  const journal = Journal.inStateDir(values['state-dir']);
  await journal.load();
  const key = journal.volume(values.dataset)?.datasetKey ?? values.dataset;
  const client = journal.client(key);
  if (!client) {
    const known = journal.clients().map((c) => c.key);
    process.stderr.write(
      `dataset-cache-csi prefetch: no cache client of ${values.dataset} on this node (running: ${known.join(', ') || 'none'})\n`,
    );
    return 1;
  }
  const metadata = patterns.filter((p) => p.metadataOnly || !client.copy);
  const content = client.copy ? patterns.filter((p) => !p.metadataOnly) : [];
  const through = await prefetch(engineMountOf(client), metadata, concurrency, () => undefined);
  if (!client.copy) {
    process.stdout.write(`${JSON.stringify({ dataset: key, ...through })}\n`);
    return through.errors === 0 ? 0 : 1;
  }
  const runner = new ExecaRunner();
  const copy = new LocalCopy(client.cacheDir, runner, client.spec.ownership);
  await copy.count();
  const transfers = new RcloneTransfers(values.rclone);
  // The node's cluster tier, as the driver recorded it, for a dataset that uses one: read before
  // the remote, and what came from the remote uploaded before the command ends.
  const tierConfig = client.spec.clusterTier
    ? await recordedTierConfig(values['state-dir'])
    : undefined;
  const scratch = tierConfig ? await mkdtemp(join(tmpdir(), 'dcsi-prefetch-')) : undefined;
  const tier =
    tierConfig && scratch
      ? new ClusterTier(
          await readTierSettings(tierConfig, scratch),
          transfers,
          createLogger('warn'),
        )
      : undefined;
  let filled;
  try {
    filled = await fillCopy({
      copy,
      transfers,
      source: datasetRemote(client.spec, await clientCredentials(client), client.runtimeDir),
      tier: tier?.accessFor(key, client.spec, copy.root),
      globs: content.map((p) => p.glob),
      concurrency,
      refresh: values.refresh,
      onProgress: (progress) => {
        if (!progress.done) process.stderr.write(`${JSON.stringify(progress)}\n`);
      },
    });
    await tier?.drain();
  } finally {
    await tier?.close();
    if (scratch) await rm(scratch, { recursive: true, force: true });
  }
  // Files dropped from the copy fall through to the engine, which must not answer from listings
  // it cached before the change; the overlay forgets the names it looked up.
  if (filled.stale > 0 && client.control) {
    await new RcloneEngine(values.rclone).forgetListings(client.control);
  }
  await new SystemMounter(runner).remount(client.mountPoint);
  const errors = filled.errors + through.errors;
  const uploaded = tier ? { tierUploadedFiles: tier.figuresOf(key).uploadedFiles } : {};
  process.stdout.write(
    `${JSON.stringify({ dataset: key, ...filled, files: filled.files + through.files, errors, ...uploaded })}\n`,
  );
  return errors === 0 ? 0 : 1;
}
