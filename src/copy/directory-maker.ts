// Makes a listing's directories in a local copy a batch at a time, ahead of the files pods will look up there.
import { dirname } from 'node:path';
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
