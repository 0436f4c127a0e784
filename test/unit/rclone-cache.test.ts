/**
 * The copy keeper's view of rclone's cache: a scan takes each complete file once, and says whether
 * the cache was quiet (looked at whole, nothing come or gone), which lets the keeper's rounds
 * space out while nothing happens.
 */
import { mkdir, mkdtemp, rm, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { DatasetSpec } from '../../src/dataset/params.js';
import { parseSource } from '../../src/dataset/source.js';
import { RcloneCacheIndex } from '../../src/engines/rclone-cache.js';

let cacheDir: string;

beforeEach(async () => {
  cacheDir = await mkdtemp('/tmp/dcsi-rclone-cache-');
});

afterEach(async () => {
  await rm(cacheDir, { recursive: true, force: true });
});

/** An item as rclone leaves it once fetched whole: its data, and metadata saying so. */
async function cached(relative: string, content: string): Promise<void> {
  const data = join(cacheDir, 'vfs', 'SRC', relative);
  const meta = join(cacheDir, 'vfsMeta', 'SRC', relative);
  await mkdir(join(data, '..'), { recursive: true });
  await mkdir(join(meta, '..'), { recursive: true });
  await writeFile(data, content);
  const size = Buffer.byteLength(content);
  await writeFile(
    meta,
    JSON.stringify({
      Size: size,
      Rs: [{ Pos: 0, Size: size }],
      Fingerprint: `${size},2026-12-01 04:21:46.72163 +0000 UTC`,
      Dirty: false,
    }),
  );
}

it('takes each complete file once, and is quiet only when it took files before, nothing came or went and it looked at everything', async () => {
  const spec = { source: parseSource('http://127.0.0.1:1/') } as DatasetSpec;
  const index = new RcloneCacheIndex(cacheDir, spec);
  const taken: string[] = [];
  const scan = (until = Number.POSITIVE_INFINITY) =>
    index.scan(
      async (file) => {
        taken.push(file.relative);
        return true;
      },
      { concurrency: 4, until },
    );
  // Nothing read yet (no cache, then an empty one): never quiet, pods may start any moment.
  expect(await scan()).toBe(false);
  await mkdir(join(cacheDir, 'vfsMeta', 'SRC'), { recursive: true });
  expect(await scan()).toBe(false);
  expect(await scan()).toBe(false);
  await cached('a/f1', 'one');
  await cached('a/b/f2', 'two');
  expect(await scan()).toBe(false);
  expect(taken.sort()).toEqual(['a/b/f2', 'a/f1']);
  expect(await scan()).toBe(true);
  expect(taken).toHaveLength(2);

  // A new item deep down: its directory changed.
  await cached('a/b/f3', 'three');
  // Directory times have a coarse grain on some file systems: make the change visible.
  await utimes(join(cacheDir, 'vfsMeta', 'SRC', 'a', 'b'), new Date(), new Date(Date.now() + 5000));
  expect(await scan()).toBe(false);
  expect(taken).toContain('a/b/f3');
  expect(await scan()).toBe(true);

  // Bounds that end before the scan begins: it is cut short, so not quiet.
  expect(await scan(0)).toBe(false);
  // A directory gone: changed.
  await rm(join(cacheDir, 'vfsMeta', 'SRC', 'a', 'b'), { recursive: true });
  await utimes(join(cacheDir, 'vfsMeta', 'SRC', 'a'), new Date(), new Date(Date.now() + 10000));
  expect(await scan()).toBe(false);
  expect(await scan()).toBe(true);
  expect(taken).toHaveLength(3);
});
