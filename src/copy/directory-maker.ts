// A local copy's directories: made from a listing a batch at a time, ahead of the files pods will look up there; removed once the remote has none of them.
import { readdir, rmdir } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { LocalCopy } from './local-copy.js';

/** Directories made at once as a listing finds them. */
const BATCH = 64;

export class DirectoryMaker {
  private readonly seen = new Set<string>();
  private batch: string[] = [];
  /** Directories that were new to the copy. */
  made = 0;

  constructor(private readonly copy: LocalCopy) {}

  /** A directory of the dataset (relative to its root). */
  add(dir: string): void {
    if (dir === '' || dir === '.' || this.seen.has(dir)) return;
    this.seen.add(dir);
    this.batch.push(dir);
    if (this.batch.length >= BATCH) this.flush();
  }

  /** A file of the dataset: its directory is made. */
  holding(relative: string): void {
    this.add(dirname(relative));
  }

  flush(): void {
    const made = this.copy.makeDirectories(this.batch.splice(0));
    this.made += made;
    // Names the overlay looked up before are looked up again at the next remount.
    if (made > 0) this.copy.onChanged();
  }
}

/**
 * Removes the copy's empty directories that `keep` does not name, deepest first: one the remote
 * no longer has would stay in the copy, and the overlay would show it. Returns how many.
 */
export async function removeEmptyDirectories(
  copy: LocalCopy,
  keep: (relative: string) => boolean,
): Promise<number> {
  let removed = 0;
  const emptied = async (relative: string): Promise<boolean> => {
    const entries = await readdir(join(copy.root, relative), { withFileTypes: true }).catch(
      () => [],
    );
    let left = entries.length;
    for (const entry of entries) {
      if (!entry.isDirectory()) continue;
      const path = relative === '' ? entry.name : `${relative}/${entry.name}`;
      if (!(await emptied(path)) || keep(path)) continue;
      // Forgotten first: a file installed meanwhile makes it again (or keeps it: ENOTEMPTY).
      copy.forgetDirectory(path);
      if (
        await rmdir(join(copy.root, path)).then(
          () => true,
          () => false,
        )
      ) {
        left -= 1;
        removed += 1;
      }
    }
    return left === 0;
  };
  await emptied('');
  return removed;
}
