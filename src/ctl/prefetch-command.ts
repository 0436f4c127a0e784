// `dataset-cache-csi prefetch`: warms a dataset on this node by hand, into its local copy or through its engine's mount.
import { mkdtemp, rm } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { fillCopy } from '../copy/fill.js';
import { LocalCopy } from '../copy/local-copy.js';
import { ParameterError } from '../dataset/parameter-error.js';
import { parsePrefetch } from '../dataset/patterns.js';
import { RcloneEngine } from '../engines/rclone.js';
import { RcloneTransfers } from '../engines/rclone-transfer.js';
import { datasetRemote } from '../engines/transfer-source.js';
import { ExecaRunner } from '../kernel/runner.js';
import { SystemMounter } from '../kernel/mounter.js';
import { Journal } from '../mount/journal.js';
import { createLogger } from '../log.js';
import { clientCredentials } from '../supervisor/client-credentials.js';
import { engineMountOf } from '../supervisor/client-record.js';
import { ClusterTier } from '../tier/cluster-tier.js';
import { readTierSettings, recordedTierConfig } from '../tier/settings.js';
import { prefetch } from '../prefetch/walk.js';

export const PREFETCH_USAGE = `usage: dataset-cache-csi prefetch --state-dir DIR --dataset KEY|VOLUME_ID [--concurrency N] [--refresh] PATTERN...
  Warms the files matching each PATTERN (globs relative to the dataset; "dir/" warms metadata only)
  on this node: into the dataset's local copy when it has one (read-only datasets; from the node's
  cluster tier first when the dataset uses it), else through its running cache client. --refresh
  first drops copies that no longer match the remote (size, time or gone), so the files are copied
  again as they are now.`;

/**
 * The node's cluster tier as the driver recorded it (no keys: those are read from the files the
 * record names), with the scratch directory its settings use; undefined when the driver has none.
 * Files are read from it before the remote, and what came from the remote is uploaded before the
 * command ends.
 */
async function recordedTier(
  stateDir: string,
  transfers: RcloneTransfers,
): Promise<{ tier: ClusterTier; scratch: string } | undefined> {
  const recorded = await recordedTierConfig(stateDir);
  if (!recorded) return undefined;
  const scratch = await mkdtemp(join(tmpdir(), 'dcsi-prefetch-'));
  try {
    // The same node as its driver: a fill shared with other nodes counts nodes, not processes.
    const settings = await readTierSettings(recorded.config, scratch, recorded.node ?? hostname());
    return { tier: new ClusterTier(settings, transfers, createLogger('warn')), scratch };
  } catch (err) {
    await rm(scratch, { recursive: true, force: true });
    throw err;
  }
}

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
  const recorded = client.spec.clusterTier
    ? await recordedTier(values['state-dir'], transfers)
    : undefined;
  const tier = recorded?.tier;
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
    if (recorded) await rm(recorded.scratch, { recursive: true, force: true });
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
