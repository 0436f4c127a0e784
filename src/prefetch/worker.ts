/**
 * The prefetch worker: a process of its own, so that a hung FUSE mount can only block it, never
 * the driver. Usage: worker.js ROOT CONCURRENCY PATTERNS_JSON. Prints one JSON progress line per
 * half second and a last one with done=true.
 */
import type { PrefetchPattern } from '../dataset/patterns.js';
import { prefetch } from './walk.js';

const [root, concurrency, patterns] = process.argv.slice(2);
if (root === undefined || concurrency === undefined || patterns === undefined) {
  process.stderr.write('usage: worker.js ROOT CONCURRENCY PATTERNS_JSON\n');
  process.exit(2);
}
await prefetch(root, JSON.parse(patterns) as PrefetchPattern[], Number(concurrency), (progress) => {
  process.stdout.write(`${JSON.stringify(progress)}\n`);
});
