// Directories a copy filled by promotion alone (no fill lists them): found complete from the engine's own view of them, and marked so.
import { lstat, readdir } from 'node:fs/promises';
import { join, posix } from 'node:path';
import type { DirectoryEntries } from '../kernel/directory-entries.js';
import type { LocalCopy } from './local-copy.js';

/** A directory being watched: its files' names, and those the copy lacks. */
interface Watched {
  names: string[];
  missing: Set<string>;
}

/** Directories read at most at once (one process). */
const READ_AT_ONCE = 64;
/** Directories with more files than this are left merged: their names would sit in memory. */
const MAX_FILES = 10_000;
/** Names held at most for every directory watched at once; directories beyond are left merged. */
const MAX_NAMES = 500_000;

/**
 * Without a fill, no listing ever proves a directory of the copy complete: the overlay keeps
 * merging it with the engine's, so look-ups below it ask the engine too (measured on epochs of
 * 50,000 files in 500 directories promoted in epoch 1: rclone's mount worked 0.14-0.78 CPU s an
 * epoch; with the directories marked, 0.05-0.11). Here a directory is read once through the
 * engine's mount when a file of it is first promoted (rclone answers from the listing it made
 * when pods looked it up, so the remote is not asked again); each later promotion takes a name off
 * what the copy lacks, and once none is left the directory is marked complete. Only directories
 * without directories below them: a parent's mark would stand on its children's, which a refresh
 * may take back meanwhile (one merged parent costs rclone a look-up per second at most). Every
 * name is looked for in the copy again just before and just after marking, so a file a refresh
 * removed meanwhile is never hidden (a mark it overtook is taken back, as a refresh takes back
 * the marks above what it removes). A directory in which the copy has a directory (made from a
 * newer listing of the remote than rclone's) is not marked either. A directory of which pods read
 * a file in part, or none, stays merged.
 */
export class PromotedDirectories {
  /** Directories to read, each with the name of a file just promoted into it. */
  private readonly toRead = new Map<string, string>();
  private readonly watched = new Map<string, Watched>();
  /** Marked, or never to be (directories below them, or too many files). */
  private readonly settled = new Set<string>();
  /** Watched directories just read, or none of whose files the copy lacked when last told. */
  private readonly ready = new Set<string>();
  /** Marks to take back (a file went as they were set) that could not be yet. */
  private readonly toUnmark = new Map<string, string[]>();
  private names = 0;

  constructor(
    private readonly copy: Pick<LocalCopy, 'root' | 'markComplete' | 'unmarkAbove'>,
    /** Reads directories of the engine's mount (relative to the dataset root). */
    private readonly read: (directories: string[]) => Promise<Map<string, DirectoryEntries>>,
  ) {}

  /** Files just promoted into the copy. */
  promoted(files: Iterable<string>): void {
    for (const file of files) {
      const dir = parentOf(file);
      // The root is never marked: it stays merged, as every fill leaves it.
      if (dir === '' || this.settled.has(dir)) continue;
      const watched = this.watched.get(dir);
      if (!watched) {
        if (!this.toRead.has(dir)) this.toRead.set(dir, posix.basename(file));
      } else if (watched.missing.delete(posix.basename(file)) && watched.missing.size === 0) {
        this.ready.add(dir);
      }
    }
  }

  /**
   * Reads the directories first promoted into since the last call, and marks those now complete;
   * returns how many were marked.
   */
  async settle(): Promise<number> {
    for (const [dir, gone] of this.toUnmark) {
      if (await this.copy.unmarkAbove(gone)) this.toUnmark.delete(dir);
    }
    const reading = [...this.toRead].slice(0, READ_AT_ONCE);
    for (const [dir] of reading) this.toRead.delete(dir);
    const read = await this.read(reading.map(([dir]) => dir));
    for (const [dir, promoted] of reading) {
      const entries = read.get(dir);
      // Not read (read again at its next promotion), or read without the file just promoted
      // into it: not a listing to trust.
      if (!entries?.others.includes(promoted)) continue;
      const { others } = entries;
      if (entries.directories.length > 0 || others.length > MAX_FILES) {
        this.settled.add(dir);
        continue;
      }
      if (this.names + others.length > MAX_NAMES) continue;
      this.names += others.length;
      // What the copy lacks is looked for once, below, with the directories ready before.
      this.watched.set(dir, { names: others, missing: new Set(others) });
      this.ready.add(dir);
    }
    const complete: string[] = [];
    for (const dir of this.ready) {
      const watched = this.watched.get(dir);
      if (!watched) continue;
      // A refresh may have removed files meanwhile (the copy's, or another process's).
      watched.missing = new Set(await this.lacking(dir, watched.names));
      if (watched.missing.size > 0) continue;
      // The copy's directories are made from the remote's own listing (see LocalCopies.outline):
      // one below it says rclone's listing was older, and a mark would hide what is below it.
      if (await this.hasDirectories(dir)) this.forget(dir);
      else complete.push(dir);
    }
    this.ready.clear();
    if (complete.length === 0) return 0;
    const marked = await this.copy.markComplete(complete);
    for (const dir of complete) {
      const watched = this.watched.get(dir)!;
      const gone = await this.lacking(dir, watched.names);
      if (gone.length > 0) {
        // Removed while it was being marked: the mark goes, as a refresh's own would.
        const paths = gone.map((name) => `${dir}/${name}`);
        if (!(await this.copy.unmarkAbove(paths))) this.toUnmark.set(dir, paths);
        watched.missing = new Set(gone);
        continue;
      }
      this.forget(dir);
    }
    return marked;
  }

  /** The directory is settled: marked, or never to be. */
  private forget(dir: string): void {
    this.names -= this.watched.get(dir)?.names.length ?? 0;
    this.watched.delete(dir);
    this.settled.add(dir);
  }

  /** Whether the copy has a directory in this one. */
  private async hasDirectories(dir: string): Promise<boolean> {
    const entries = await readdir(join(this.copy.root, dir), { withFileTypes: true }).catch(
      () => [],
    );
    return entries.some((entry) => entry.isDirectory());
  }

  /** The names of the directory's files the copy lacks (one lstat each, in parallel). */
  private async lacking(dir: string, names: string[]): Promise<string[]> {
    const held = await Promise.all(
      names.map((name) =>
        lstat(join(this.copy.root, dir, name)).then(
          (stats) => stats.isFile(),
          () => false,
        ),
      ),
    );
    return names.filter((_, i) => !held[i]);
  }
}

const parentOf = (relative: string): string => {
  const dir = posix.dirname(relative);
  return dir === '.' ? '' : dir;
};
