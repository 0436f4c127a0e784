import { parseArgs } from 'node:util';
import { parsePrefetch, ParameterError } from '../dataset/params.js';
import { engineMountOf, Journal } from '../mount/journal.js';
import { prefetch } from './walk.js';

export const PREFETCH_USAGE = `usage: dataset-cache-csi prefetch --state-dir DIR --dataset KEY|VOLUME_ID [--concurrency N] PATTERN...
  Reads the files matching each PATTERN (globs relative to the dataset; "dir/" warms metadata only)
  through the node's running cache client of the dataset, so later reads are served from the cache.`;

/** The by-hand prefetch: finds the dataset's client in the node journal and warms its cache. */
export async function runPrefetchCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      'state-dir': { type: 'string', default: '/var/lib/dataset-cache-csi' },
      dataset: { type: 'string' },
      concurrency: { type: 'string', default: '16' },
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
  const result = await prefetch(engineMountOf(client), patterns, concurrency, (progress) => {
    if (!progress.done) process.stderr.write(`${JSON.stringify(progress)}\n`);
  });
  process.stdout.write(`${JSON.stringify({ dataset: key, ...result })}\n`);
  return result.errors === 0 ? 0 : 1;
}
