/**
 * Directories of a copy filled by promotion alone: read from the engine's view by a real `find`,
 * marked complete (a real trusted.overlay.opaque attribute) once every file and every directory
 * below is in the copy, never before.
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import fc from 'fast-check';
import { LocalCopy } from '../../src/copy/local-copy.js';
import { PromotedDirectories } from '../../src/copy/promoted-directories.js';
import { readDirectories } from '../../src/kernel/directory-entries.js';
import { ExecaRunner } from '../../src/kernel/runner.js';
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

  it('reads nothing of a listing cut short by its deadline', async () => {
    await tree(scratch, ['a/f']);
    expect(await readDirectories(runner, scratch, ['a'], 0)).toEqual(new Map());
  });
});

describe('PromotedDirectories', () => {
  /** An engine's view (`engine/`) and a real copy beside it; the copy's files come by `promote`. */
  async function setUp(files: string[], directories: string[] = []) {
    const engine = join(scratch, 'engine');
    const cacheDir = join(scratch, 'cache');
    await tree(engine, files, directories);
    const copy = new LocalCopy(cacheDir, runner);
    await copy.prepare();
    const root = copyRoot(cacheDir);
    const marked: string[] = [];
    const watch = new PromotedDirectories(
      {
        root,
        markComplete: async (dirs) => {
          marked.push(...dirs);
          return copy.markComplete(dirs);
        },
      },
      (dirs) => readDirectories(runner, engine, dirs),
    );
    const promote = async (...promoted: string[]) => {
      await tree(root, promoted);
      watch.promoted(promoted);
      await watch.settle();
    };
    const opaque = (dir: string) => readXattr(runner, join(root, dir), 'trusted.overlay.opaque');
    return { watch, promote, marked, opaque };
  }

  it('marks a directory once every file and directory below it is in the copy, then its parent', async () => {
    const files = ['t/d1/a', 't/d1/b', 't/d2/c', 't/top', 'root-file'];
    const { promote, marked, opaque } = await setUp(files);
    await promote('t/d1/a');
    expect(marked).toEqual([]);
    await promote('t/d1/b', 't/d2/c');
    expect(marked.sort()).toEqual(['t/d1', 't/d2']);
    expect(await opaque('t/d1')).toBe('y');
    // t/ still lacks `top`: read now (its first directory complete), not marked.
    await promote('root-file');
    expect(marked).not.toContain('t');
    await promote('t/top');
    expect(marked).toContain('t');
    expect(await opaque('t')).toBe('y');
    // The root is never marked.
    expect(marked).not.toContain('');
  });

  it('never marks a directory with a file pods did not read whole, nor one with an unread directory below', async () => {
    const { promote, marked } = await setUp(['p/a', 'p/b', 'q/a', 'q/sub/x'], ['q/empty']);
    await promote('p/a', 'q/a', 'q/sub/x');
    await promote();
    expect(marked).toEqual(['q/sub']);
  });

  it('marks exactly the directories whose whole tree was promoted, whatever the order (generated)', async () => {
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
          // A few more rounds: parents read after their last directory completed.
          for (let i = 0; i < 4; i += 1) await promote();
          const held = new Set(order);
          const directories = [
            ...new Set(
              names.flatMap((name) => {
                const parts = name.split('/');
                return parts.slice(1).map((_, i) => parts.slice(0, i + 1).join('/'));
              }),
            ),
          ];
          const whole = directories.filter((dir) =>
            names.filter((name) => name.startsWith(`${dir}/`)).every((name) => held.has(name)),
          );
          expect(marked.sort()).toEqual(whole.sort());
        },
      ),
      { numRuns: 25 },
    );
  });
});
