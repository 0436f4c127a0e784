/**
 * Directories of a copy filled by promotion alone: read from the engine's view by a real `find`,
 * marked complete (a real trusted.overlay.opaque attribute) once every file of a directory without
 * directories below is in the copy, never before, and never over a file a refresh removed.
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { join, posix, relative } from 'node:path';
import fc from 'fast-check';
import { LocalCopy } from '../../src/copy/local-copy.js';
import { PromotedDirectories } from '../../src/copy/promoted-directories.js';
import { readDirectories, type DirectoryEntries } from '../../src/kernel/directory-entries.js';
import { ExecaRunner, type ProcessRunner } from '../../src/kernel/runner.js';
import { readXattr } from '../../src/kernel/xattr.js';
import { copyRoot } from '../../src/supervisor/cache-volume.js';

const runner = new ExecaRunner();
let scratch: string;

beforeEach(async () => {
  scratch = await mkdtemp('/tmp/dcsi-promoted-unit-');
});
afterEach(async () => {
  await rm(scratch, { recursive: true, force: true });
});

/** Writes each file (and its directories) below `root`. */
async function tree(root: string, files: string[], directories: string[] = []): Promise<void> {
  for (const dir of directories) await mkdir(join(root, dir), { recursive: true });
  for (const file of files) {
    await mkdir(join(root, file, '..'), { recursive: true });
    await writeFile(join(root, file), file);
  }
}

describe('readDirectories', () => {
  it('reads every name as it is, directories apart, and leaves out what it could not read', async () => {
    const odd = ['-rf', 'new\nline', 'sp ace', "qu'ote", 'ü'];
    await tree(scratch, [...odd.map((name) => `a/${name}`), 'a/sub/deeper/x', 'b/y'], ['empty']);
    await tree(scratch, ['-d/z']);
    const read = await readDirectories(runner, scratch, ['a', 'a/sub', 'empty', 'missing', 'b/y']);
    expect([...read.keys()].sort()).toEqual(['a', 'a/sub', 'empty']);
    expect(read.get('a')!.others.sort()).toEqual([...odd].sort());
    expect(read.get('a')!.directories).toEqual(['sub']);
    expect(read.get('a/sub')).toEqual({ directories: ['deeper'], others: [] });
    expect(read.get('empty')).toEqual({ directories: [], others: [] });
    expect(await readDirectories(runner, scratch, [])).toEqual(new Map());
    // A directory named like an option, below a root given relative to the working directory.
    const fromHere = await readDirectories(runner, relative(process.cwd(), scratch), ['-d']);
    expect(fromHere.get('-d')).toEqual({ directories: [], others: ['z'] });
  });

  it('takes nothing of a directory find told but then failed to read', async () => {
    await tree(scratch, ['a/f', 'b/g']);
    // find tells a directory before it reads it; a read failing then (EIO from a FUSE server, which
    // root cannot be refused here otherwise) ends find with status 1 after its output.
    const failing: ProcessRunner = {
      run: async (...args) => ({ ...(await runner.run(...args)), exitCode: 1 }),
      spawnDetached: (...args) => runner.spawnDetached(...args),
    };
    expect(await readDirectories(failing, scratch, ['a', 'b'])).toEqual(new Map());
  });

  it('takes nothing of a listing killed at its deadline', async () => {
    await tree(scratch, ['a/f']);
    // What a hung FUSE directory leaves: find killed after telling some of it.
    const killed: ProcessRunner = {
      run: async (...args) => ({ ...(await runner.run(...args)), exitCode: -1 }),
      spawnDetached: (...args) => runner.spawnDetached(...args),
    };
    expect(await readDirectories(killed, scratch, ['a'])).toEqual(new Map());
  });
});

describe('PromotedDirectories', () => {
  /**
   * An engine's view (`engine/`) and a real copy beside it; the copy's files come by `promote`.
   * `beforeMark` runs as the marks are being set (a refresh removing a file meanwhile), `listing`
   * may take names out of what the engine shows (a listing cut short).
   */
  async function setUp(
    files: string[],
    {
      beforeMark,
      listing = (entries) => entries,
    }: {
      beforeMark?: (root: string) => Promise<void>;
      listing?: (entries: DirectoryEntries) => DirectoryEntries;
    } = {},
  ) {
    const engine = join(scratch, 'engine');
    const cacheDir = join(scratch, 'cache');
    await tree(engine, files);
    const copy = new LocalCopy(cacheDir, runner);
    await copy.prepare();
    const root = copyRoot(cacheDir);
    const marked: string[] = [];
    const watch = new PromotedDirectories(
      {
        root,
        markComplete: async (dirs) => {
          marked.push(...dirs);
          const count = await copy.markComplete(dirs);
          await beforeMark?.(root);
          return count;
        },
        unmarkAbove: (gone) => copy.unmarkAbove(gone),
      },
      async (dirs) => {
        const read = await readDirectories(runner, engine, dirs);
        return new Map([...read].map(([dir, entries]) => [dir, listing(entries)]));
      },
    );
    const promote = async (...promoted: string[]) => {
      await tree(root, promoted);
      watch.promoted(promoted);
      await watch.settle();
    };
    const opaque = (dir: string) => readXattr(runner, join(root, dir), 'trusted.overlay.opaque');
    return { promote, marked, opaque, root };
  }

  it('marks a directory without directories below once every file of it is in the copy', async () => {
    const { promote, marked, opaque } = await setUp(['t/d1/a', 't/d1/b', 't/d2/c', 't/top', 'r']);
    await promote('t/d1/a');
    expect(marked).toEqual([]);
    await promote('t/d1/b', 't/d2/c');
    expect(marked.sort()).toEqual(['t/d1', 't/d2']);
    expect(await opaque('t/d1')).toBe('y');
    // A directory with directories below, and the root, stay merged.
    await promote('t/top', 'r');
    await promote();
    expect(marked.sort()).toEqual(['t/d1', 't/d2']);
    expect(await opaque('t')).toBeUndefined();
  });

  it('never marks a directory with a file pods did not read whole', async () => {
    const { promote, marked, opaque } = await setUp(['p/a', 'p/b', 'q/a']);
    await promote('p/a', 'q/a');
    await promote();
    expect(marked).toEqual(['q']);
    expect(await opaque('p')).toBeUndefined();
  });

  it('never hides a file removed from the copy before or while its directory is marked', async () => {
    // Before: a refresh drops p/a after p was read; p/b then completes what was missing.
    const before = await setUp(['p/a', 'p/b']);
    await before.promote('p/a');
    await rm(join(before.root, 'p/a'));
    await before.promote('p/b');
    expect(before.marked).toEqual([]);
    await before.promote('p/a');
    expect(before.marked).toEqual(['p']);
    await rm(scratch, { recursive: true, force: true });
    await mkdir(scratch, { recursive: true });
    // While: the file goes as the mark is set; the mark goes with it.
    let once = true;
    const during = await setUp(['q/a', 'q/b'], {
      beforeMark: async (root) => {
        if (once) await rm(join(root, 'q/a'));
        once = false;
      },
    });
    await during.promote('q/a', 'q/b');
    expect(during.marked).toEqual(['q']);
    expect(await during.opaque('q')).toBeUndefined();
    // Back in the copy (fetched again, promoted again): marked for good.
    await during.promote('q/a');
    expect(await during.opaque('q')).toBe('y');
  });

  it('never marks a directory in which the copy has a directory (a listing older than the remote)', async () => {
    const { promote, marked, root } = await setUp(['w/a', 'w/b']);
    // The outline made w/new from the remote's listing; rclone's listing of w predates it.
    await mkdir(join(root, 'w', 'new'), { recursive: true });
    await promote('w/a', 'w/b');
    await promote();
    expect(marked).toEqual([]);
  });

  it('trusts no listing that lacks the file just promoted into its directory', async () => {
    const { promote, marked, root } = await setUp(['u/f', 'u/g'], {
      listing: (entries) => ({ ...entries, others: entries.others.filter((n) => n !== 'g') }),
    });
    // f is in the copy already; the listing shows only f. Were it trusted, u would be marked
    // though g, just promoted, is not in it.
    await tree(root, ['u/f']);
    await promote('u/g');
    expect(marked).toEqual([]);
  });

  it('marks exactly the directories without directories below whose files were all promoted (generated)', async () => {
    const names = ['r/a', 'r/b', 'r/s/c', 'r/s/d', 'r/s/t/e', 'u/f', 'u/g', 'v/w/h'];
    await fc.assert(
      fc.asyncProperty(
        fc.shuffledSubarray(names),
        fc.integer({ min: 1, max: 4 }),
        async (order, step) => {
          await rm(scratch, { recursive: true, force: true });
          await mkdir(scratch, { recursive: true });
          const { promote, marked } = await setUp(names);
          for (let i = 0; i < order.length; i += step) await promote(...order.slice(i, i + step));
          await promote();
          const held = new Set(order);
          const parents = new Set(names.map((name) => posix.dirname(name)));
          const leaves = [...parents].filter(
            (dir) => ![...parents].some((other) => other.startsWith(`${dir}/`)),
          );
          const whole = leaves.filter((dir) =>
            names.filter((name) => posix.dirname(name) === dir).every((name) => held.has(name)),
          );
          expect(marked.sort()).toEqual(whole.sort());
        },
      ),
      { numRuns: 25 },
    );
  });
});
