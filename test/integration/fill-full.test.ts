/**
 * A fill's transfer that meets its cache file system full (the engine went past its share between
 * its own polls, so the copy's room said yes) leaves out for want of room what it could not write
 * (before rclone started, or rclone's own files) instead of failing the whole fill, leaves nothing
 * half-written, and fetches the rest once room is back: a real tmpfs of 1 MiB, a real LocalCopy
 * and a real rclone from a local source.
 */
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { fromRemote } from '../../src/copy/fetch.js';
import { noProgress } from '../../src/copy/fill.js';
import { LocalCopy } from '../../src/copy/local-copy.js';
import { parseSource } from '../../src/dataset/source.js';
import { RcloneTransfers, type RemoteEntry } from '../../src/engines/rclone-transfer.js';
import { copyRoot } from '../../src/supervisor/cache-volume.js';

const names = Array.from({ length: 12 }, (_, i) => `d${i % 3}/f${i}.bin`);
let work: string;
let cacheDir: string;
let mounted = false;

beforeAll(async () => {
  work = await mkdtemp('/tmp/dcsi-fill-full-');
  for (const name of names) {
    await mkdir(join(work, 'src', name, '..'), { recursive: true });
    await writeFile(join(work, 'src', name), Buffer.alloc(16 * 1024, name));
  }
  await mkdir(join(work, 'home'));
  cacheDir = join(work, 'cache');
  await mkdir(cacheDir);
  await execa('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'dcsi-test-full-cache', cacheDir]);
  mounted = true;
});

afterAll(async () => {
  if (mounted) await execa('umount', [cacheDir]);
  await rm(work, { recursive: true, force: true });
});

it('a transfer into a full cache leaves out what it cannot write, for want of room, and fetches it once room is back', async () => {
  const copy = new LocalCopy(cacheDir);
  await copy.prepare();
  const transfers = new RcloneTransfers();
  const source = {
    source: parseSource(`local://${join(work, 'src')}`),
    secrets: {},
    runtimeDir: join(work, 'home'),
  };
  const listed: RemoteEntry[] = [];
  await transfers.list(source, { dir: '' }, undefined, (entry) => listed.push(entry));
  expect(listed.map((e) => e.relative).sort()).toEqual([...names].sort());
  const options = { copy, transfers, source, globs: ['**'], concurrency: 4 };

  // What the engine wrote beyond its share: the file system has not a block left.
  const filler = join(cacheDir, 'engine-overshoot');
  await expect(writeFile(filler, Buffer.alloc(2 << 20))).rejects.toMatchObject({
    code: 'ENOSPC',
  });
  const full = noProgress();
  const admitted = new Map(listed.map((e) => [e.relative, e]));
  await expect(fromRemote(options, admitted, full, new Set())).resolves.toEqual([]);
  expect(full).toMatchObject({ noRoom: names.length, errors: 0, files: 0 });
  expect(copy.current().refusedForRoom).toBe(names.length);
  // Nothing half-written: no file in the copy, no workspace left behind.
  expect(await readdir(copyRoot(cacheDir))).toEqual([]);
  expect(await readdir(join(cacheDir, 'incoming'))).toEqual([]);

  // The engine evicted part of it: rclone writes what fits, and meets the file system full for
  // the rest (its own error, per file).
  await rm(filler);
  await writeFile(filler, Buffer.alloc((1 << 20) - 96 * 1024));
  const partly = noProgress();
  const held = new Set<string>();
  await fromRemote(options, new Map(listed.map((e) => [e.relative, e])), partly, held);
  expect(partly.errors).toBe(0);
  expect(partly.files).toBeGreaterThan(0);
  expect(partly.noRoom).toBeGreaterThan(0);
  expect(partly.files + partly.noRoom).toBe(names.length);
  expect(await readdir(join(cacheDir, 'incoming'))).toEqual([]);

  // Room is back: the next batch fetches the rest.
  await rm(filler);
  const rest = listed.filter((e) => !held.has(e.relative));
  const again = noProgress();
  const installed = await fromRemote(
    options,
    new Map(rest.map((e) => [e.relative, e])),
    again,
    held,
  );
  expect(installed).toHaveLength(rest.length);
  expect(again).toMatchObject({ files: rest.length, noRoom: 0, errors: 0 });
  for (const entry of listed) expect(copy.holds(entry.relative, entry)).toBe(true);
}, 60_000);
