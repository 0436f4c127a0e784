export { sha256File, writeRandomFile } from '../../src/demo/files.js';
import { createHash } from 'node:crypto';
import { access, mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';

/** A tree of small files with distinct contents, as a small-file dataset has. */
export async function writeTree(root: string, dirs: number, filesPerDir: number): Promise<void> {
  // A file at the top as well: s3rver only reports a common prefix for a directory that holds a
  // file directly, so a tree of directories only would look empty through S3 listings.
  await mkdir(root, { recursive: true });
  await writeFile(join(root, 'MANIFEST'), `${dirs} directories of ${filesPerDir} files\n`);
  for (let d = 0; d < dirs; d += 1) {
    await mkdir(join(root, `d${d}`), { recursive: true });
    for (let f = 0; f < filesPerDir; f += 1) {
      await writeFile(
        join(root, `d${d}`, `f${f}.txt`),
        `dir ${d} file ${f} ${'x'.repeat((d * 31 + f * 17) % 3000)}\n`,
      );
    }
  }
}

/** relative path -> sha256 of every file below root. */
export async function treeDigest(root: string): Promise<Record<string, string>> {
  const result: Record<string, string> = {};
  const walk = async (dir: string): Promise<void> => {
    for (const entry of await readdir(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) await walk(path);
      else
        result[relative(root, path)] = createHash('sha256')
          .update(await readFile(path))
          .digest('hex');
    }
  };
  await walk(root);
  return result;
}

/** Whether anything exists at path. */
export const pathExists = (path: string): Promise<boolean> =>
  access(path).then(
    () => true,
    () => false,
  );
