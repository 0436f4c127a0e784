/**
 * The local copy's decisions, with generated inputs (fast-check) beside hand-written ones: which
 * remote names may become paths, what to list for prefetch globs, which directories are complete,
 * what time rclone recorded, when a copied file counts as current, which directories an outline
 * makes.
 */
import { mkdir, mkdtemp, readdir, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { join, posix } from 'node:path';
import fc from 'fast-check';
import picomatch from 'picomatch';
import { completeDirectories, listingsFor } from '../../src/copy/listings.js';
import { isSafeRelativePath, LocalCopy } from '../../src/copy/local-copy.js';
import { copyRoot } from '../../src/supervisor/cache-volume.js';
import { fingerprintTime } from '../../src/engines/rclone-cache.js';
import { globBase } from '../../src/dataset/patterns.js';

describe('isSafeRelativePath', () => {
  it('refuses what could leave the copy or is not a plain name', () => {
    for (const bad of [
      '',
      '/etc/passwd',
      '..',
      '../x',
      'a/../../x',
      'a/./b',
      'a//b',
      'a/',
      'nul\0byte',
      'line\nbreak',
      'carriage\rreturn',
      'tab\tname',
      'rclone␊picture',
      `${'x'.repeat(256)}`,
      `${'d/'.repeat(2100)}f`,
    ]) {
      expect([bad, isSafeRelativePath(bad)]).toEqual([bad, false]);
    }
    for (const good of ['a', 'train/img 001.jpg', 'ünïcödé/файл', '-rf', '--flag=x', '.hidden/x']) {
      expect([good, isSafeRelativePath(good)]).toEqual([good, true]);
    }
  });

  it('never accepts a name that resolves outside the copy (generated)', () => {
    const segment = fc.oneof(
      fc.constantFrom('..', '.', '', 'a', 'b', '-x', '--f=', '\0', '\n'),
      fc.string({ maxLength: 8 }),
    );
    fc.assert(
      fc.property(fc.array(segment, { minLength: 1, maxLength: 6 }), fc.boolean(), (parts, abs) => {
        const name = `${abs ? '/' : ''}${parts.join('/')}`;
        if (!isSafeRelativePath(name)) return true;
        const resolved = posix.normalize(posix.join('/copy', name));
        return (
          resolved.startsWith('/copy/') && resolved === `/copy/${name}` && !/[\0\n\r]/.test(name)
        );
      }),
      { numRuns: 2000 },
    );
  });
});

describe('listingsFor', () => {
  it("lists a literal path's directory only, a tree as deep as its globs need, each base once", () => {
    expect(listingsFor(['big.bin'])).toEqual([{ base: '', maxDepth: 1 }]);
    expect(listingsFor(['train/**'])).toEqual([{ base: 'train' }]);
    expect(listingsFor(['train/*/*.jpg', 'train/a/b.jpg'])).toEqual([
      { base: 'train', maxDepth: 2 },
    ]);
    expect(listingsFor(['a/*.txt', 'a/b/**', '*.md'])).toEqual([
      { base: '', maxDepth: 1 },
      { base: 'a', maxDepth: 1 },
      { base: 'a/b' },
    ]);
    expect(listingsFor(['**/*.jpg', 'a/b.jpg', 'c/**'])).toEqual([{ base: '' }]);
    expect(listingsFor(['x/{a,b/c}/*.jpg'])).toEqual([{ base: 'x' }]);
  });

  it('every file a glob matches below its base is inside a listing, within its depth (generated)', () => {
    // (`dir/**` also matches a file named `dir` for picomatch; a prefetch glob names what is
    // below its base, and only that is listed.)
    const segment = fc.constantFrom('a', 'b', 'c.jpg', 'd.txt', '*', '**', '*.jpg', '?');
    const glob = fc.array(segment, { minLength: 1, maxLength: 4 }).map((parts) => parts.join('/'));
    const path = fc
      .array(fc.constantFrom('a', 'b', 'c.jpg', 'd.txt', 'x.jpg'), { minLength: 1, maxLength: 5 })
      .map((parts) => parts.join('/'));
    const levels = (dir: string) => (dir === '' ? 0 : dir.split('/').length);
    fc.assert(
      fc.property(
        fc.array(glob, { minLength: 1, maxLength: 4 }),
        fc.array(path),
        (globs, paths) => {
          const listings = listingsFor(globs);
          for (const g of globs) {
            const base = globBase(g);
            const below = (file: string) => base === '' || file.startsWith(`${base}/`);
            for (const file of paths.filter((p) => below(p) && picomatch(g, { dot: true })(p))) {
              const listed = listings.some(
                (l) =>
                  (l.base === '' || file.startsWith(`${l.base}/`)) &&
                  (l.maxDepth === undefined || levels(file) - levels(l.base) <= l.maxDepth),
              );
              expect([g, file, listed]).toEqual([g, file, true]);
            }
          }
        },
      ),
      { numRuns: 500 },
    );
  });
});

describe('LocalCopy.holds', () => {
  it('trusts the size when the listing has no times, and compares both when it has', async () => {
    const cacheDir = await mkdtemp('/tmp/dcsi-copy-unit-');
    try {
      await mkdir(join(copyRoot(cacheDir), 'd'), { recursive: true });
      await writeFile(join(copyRoot(cacheDir), 'd', 'f'), 'abc');
      await utimes(join(copyRoot(cacheDir), 'd', 'f'), 1_000, 1_000);
      const copy = new LocalCopy(cacheDir);
      expect(copy.holds('d/f', { size: 3, mtimeMs: NaN })).toBe(true);
      expect(copy.holds('d/f', { size: 3, mtimeMs: 1_000_000 })).toBe(true);
      expect(copy.holds('d/f', { size: 3, mtimeMs: 2_000_000 })).toBe(false);
      expect(copy.holds('d/f', { size: 4, mtimeMs: NaN })).toBe(false);
      expect(copy.holds('d/g', { size: 3, mtimeMs: NaN })).toBe(false);
    } finally {
      await rm(cacheDir, { recursive: true, force: true });
    }
  });
});

describe('LocalCopy.makeDirectories', () => {
  it("makes the remote's directories with the dataset's modes, none outside the copy, and counts the new ones", async () => {
    const cacheDir = await mkdtemp('/tmp/dcsi-copy-unit-');
    try {
      const copy = new LocalCopy(cacheDir, undefined, { dirMode: 0o750 });
      await copy.prepare();
      await mkdir(join(copyRoot(cacheDir), 'old'));
      const made = copy.makeDirectories(['a', 'a/b/c', 'old', '../escape', 'x//y', 'd e/ü']);
      // a, a/b/c (with a/b above it), d e/ü: three made; `old` was there; the unsafe names skipped.
      expect(made).toBe(3);
      for (const dir of ['a', 'a/b', 'a/b/c', 'd e', 'd e/ü']) {
        expect((await stat(join(copyRoot(cacheDir), dir))).mode & 0o7777).toBe(0o750);
      }
      expect(await readdir(cacheDir)).not.toContain('escape');
      expect(await readdir(copyRoot(cacheDir))).not.toContain('x');
      // Asked again, nothing is new.
      expect(copy.makeDirectories(['a/b/c', 'old'])).toBe(0);
    } finally {
      await rm(cacheDir, { recursive: true, force: true });
    }
  });
});

describe('completeDirectories', () => {
  it('returns the outermost directories whose every listed file is held', () => {
    const listed = ['a/x', 'a/y', 'a/c/w', 'b/z', 'b/c/v', 'top'];
    expect(completeDirectories([''], listed, new Set(['a/x', 'a/y', 'a/c/w', 'b/c/v']))).toEqual([
      'a',
      'b/c',
    ]);
    // Below a base only: the base itself may be complete, never its parents.
    expect(completeDirectories(['b'], ['b/z', 'b/c/v'], new Set(['b/z', 'b/c/v']))).toEqual(['b']);
    expect(completeDirectories(['b/c'], ['b/c/v'], new Set(['b/c/v']))).toEqual(['b/c']);
    expect(completeDirectories([''], ['f'], new Set(['f']))).toEqual([]);
  });

  it('never marks a directory that has a file the copy lacks, nor one inside another marked (generated)', () => {
    const file = fc
      .array(fc.constantFrom('a', 'b', 'c'), { minLength: 1, maxLength: 4 })
      .map((parts) => parts.join('/'));
    fc.assert(
      fc.property(
        fc.uniqueArray(file, { maxLength: 30 }),
        fc.array(fc.boolean()),
        (files, flags) => {
          // A path cannot be both a file and a directory.
          const listed = files.filter((f) => !files.some((g) => g.startsWith(`${f}/`)));
          const held = new Set(listed.filter((_, i) => flags[i] ?? false));
          const marked = completeDirectories([''], listed, held);
          for (const dir of marked) {
            const below = listed.filter((f) => f.startsWith(`${dir}/`));
            if (below.length === 0 || below.some((f) => !held.has(f))) return false;
            if (marked.some((other) => dir.startsWith(`${other}/`))) return false;
          }
          return true;
        },
      ),
      { numRuns: 1000 },
    );
  });
});

describe('fingerprintTime', () => {
  it('reads the time rclone recorded for the remote object', () => {
    expect(fingerprintTime('67108864,2026-12-01 04:56:31 +0000 UTC')).toBe(
      Date.parse('2026-12-01T04:56:31Z'),
    );
    expect(fingerprintTime('16384,2026-12-01 04:21:46.721637233 +0000 UTC,362c4d4e')).toBe(
      Date.parse('2026-12-01T04:21:46.721Z'),
    );
    expect(fingerprintTime('5,2026-06-01 10:00:00.5 +0200 CEST')).toBe(
      Date.parse('2026-06-01T08:00:00.500Z'),
    );
    expect(fingerprintTime('5,,d41d8cd98f00b204e9800998ecf8427e')).toBeUndefined();
    expect(fingerprintTime('')).toBeUndefined();
  });
});
