/**
 * Packs of small files for the cluster tier: every file lands in exactly one pack at its own
 * place (generated file sets), a pack's bytes read back into the same files, an index that does
 * not add up is no index, a file replaced while packed ends the pack, and a cut pack is not whole.
 */
import { mkdir, mkdtemp, open, readFile, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import fc from 'fast-check';
import {
  extractMember,
  PACK_MEMBER_MAX,
  PACK_TARGET_BYTES,
  packContent,
  packIsWhole,
  parsePackIndex,
  planPacks,
} from '../../src/tier/packs.js';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'dcsi-packs-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const candidates = fc.uniqueArray(
  fc.record({
    relative: fc.stringMatching(/^[a-z]{1,3}(\/[a-z0-9]{1,4}){0,2}$/),
    size: fc.integer({ min: 0, max: PACK_MEMBER_MAX - 1 }),
    mtimeMs: fc.integer({ min: 0, max: 2 ** 41 }),
  }),
  { selector: (c) => c.relative, maxLength: 300 },
);

it('puts every file in exactly one pack, end to end, packs closed near their target size', () => {
  fc.assert(
    fc.property(candidates, (files) => {
      const packs = planPacks(files);
      const placed = packs.flatMap((p) => p.files.map((f) => f.path));
      expect(placed.sort()).toEqual(files.map((f) => f.relative).sort());
      for (const pack of packs) {
        let at = 0;
        for (const member of pack.files) {
          expect(member.offset).toBe(at);
          at += member.size;
        }
        expect(pack.size).toBe(at);
        // Only the last member may take a pack past its target.
        expect(pack.size - (pack.files.at(-1)?.size ?? 0)).toBeLessThan(PACK_TARGET_BYTES);
        expect(parsePackIndex(JSON.stringify(pack))).toEqual(pack);
      }
    }),
  );
});

it('refuses an index whose members do not add up, or that is not one', () => {
  const [pack] = planPacks([
    { relative: 'a', size: 10, mtimeMs: 1 },
    { relative: 'b', size: 5, mtimeMs: 2 },
  ]);
  expect(parsePackIndex(JSON.stringify({ ...pack, size: 16 }))).toBeUndefined();
  const overlapping = { ...pack, files: pack?.files.map((f) => ({ ...f, offset: 0 })) };
  expect(parsePackIndex(JSON.stringify(overlapping))).toBeUndefined();
  expect(parsePackIndex('{"version":2,"size":0,"files":[]}')).toBeUndefined();
  expect(parsePackIndex('not json')).toBeUndefined();
});

it('reads back every member as it was, with its time, from a whole pack only', async () => {
  const root = join(dir, 'root');
  const contents = new Map([
    ['x/one', Buffer.from('one')],
    ['x/two', Buffer.alloc(0)],
    ['y/three', Buffer.alloc(70_000, 'three')],
  ]);
  const files = [];
  for (const [name, content] of contents) {
    await mkdir(join(root, dirname(name)), { recursive: true });
    await writeFile(join(root, name), content);
    const stats = await stat(join(root, name));
    files.push({ relative: name, size: stats.size, mtimeMs: stats.mtimeMs });
  }
  const [index] = planPacks(files);
  if (!index) throw new Error('no pack');
  const pack = join(dir, 'pack.data');
  const chunks: Buffer[] = [];
  for await (const chunk of packContent(root, index)) chunks.push(chunk);
  await writeFile(pack, Buffer.concat(chunks));
  expect(await packIsWhole(pack, index)).toBe(true);
  const handle = await open(pack, 'r');
  const buffer = Buffer.alloc(PACK_MEMBER_MAX);
  for (const member of index.files) {
    const out = join(dir, `out-${member.path.replace('/', '_')}`);
    extractMember(handle.fd, member, out, buffer);
    expect(await readFile(out)).toEqual(contents.get(member.path));
    expect(Math.abs((await stat(out)).mtimeMs - member.mtimeMs)).toBeLessThan(1);
  }
  // A member the pack no longer holds whole is never written as if it were.
  await truncate(pack, index.size - 1);
  // Members are packed in path order: the last, y/three, is the one the cut lands inside.
  const last = index.files.at(-1);
  expect(last).toMatchObject({ path: 'y/three', size: 70_000 });
  if (!last) throw new Error('no last member');
  expect(() => extractMember(handle.fd, last, join(dir, 'cut'), buffer)).toThrow(
    /pack ends inside/,
  );
  await expect(stat(join(dir, 'cut'))).rejects.toThrow(/ENOENT/);
  await handle.close();
  expect(await packIsWhole(pack, index)).toBe(false);

  // A member replaced after it was planned: the pack's stream fails, it is never completed.
  await writeFile(join(root, 'x/one'), 'four');
  await expect(async () => {
    for await (const chunk of packContent(root, index)) void chunk;
  }).rejects.toThrow(/x\/one changed while it was packed/);
});
