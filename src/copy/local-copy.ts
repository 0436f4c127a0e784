// A dataset's local copy: complete files of a read-only dataset in its cache file system, each made visible by one rename.
import { randomBytes } from 'node:crypto';
import {
  chmodSync,
  chownSync,
  lstatSync,
  mkdirSync,
  renameSync,
  unlinkSync,
  utimesSync,
  type Stats,
  type StatsFs,
} from 'node:fs';
import {
  link,
  lstat,
  mkdir,
  opendir,
  readFile,
  rm,
  stat,
  statfs,
  unlink,
  writeFile,
} from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { isSameProcess } from '../kernel/proc.js';
import type { ProcessRunner } from '../kernel/runner.js';
import { setXattr } from '../kernel/xattr.js';
import { copyRoot, ENGINE_SHARE } from '../supervisor/cache-volume.js';
import { isIdentical, type RemoteFile, sameTimeOrUnlisted } from '../dataset/fingerprint.js';
import type { Ownership } from '../dataset/params.js';
import { type FillRoom, RoomLedger } from './room.js';

/** Files being written or linked before their rename into the copy: never seen by readers. */
const incomingRoot = (cacheDir: string): string => join(cacheDir, 'incoming');

/** Modes the engine's mount shows (rclone's defaults), so a file looks the same from either layer. */
const FILE_MODE = 0o644;
const DIR_MODE = 0o755;
const MAX_NAME_BYTES = 255;
const MAX_PATH_BYTES = 4000;

/**
 * Whether a name from the remote can be a path inside the copy: relative, no empty, `.` or `..`
 * segment, no control character (nor the "control pictures" U+2400–U+2421 rclone lists in their
 * place, which its local backend turns back into control characters), and within the kernel's name
 * and path limits.
 */
export function isSafeRelativePath(path: string): boolean {
  // eslint-disable-next-line no-control-regex
  if (path === '' || path.startsWith('/') || /[\u0000-\u001f\u007f\u2400-\u2421]/.test(path))
    return false;
  if (Buffer.byteLength(path) > MAX_PATH_BYTES) return false;
  return path
    .split('/')
    .every(
      (segment) =>
        segment !== '' &&
        segment !== '.' &&
        segment !== '..' &&
        Buffer.byteLength(segment) <= MAX_NAME_BYTES,
    );
}

export interface CopyFigures {
  files: number;
  bytes: number;
  /** Files the copy could not take because the cache file system has no room left for it. */
  refusedForRoom: number;
  /** Names from the remote that cannot be local paths (skipped, never written). */
  unsafeNames: number;
  /** Files pods read whole on demand through the cache client, then linked into the copy. */
  promoted: number;
}

const OPAQUE = 'trusted.overlay.opaque';
/** Paths per helper process: an argv stays far below the kernel's limit. */
const XATTR_BATCH = 512;

/** Why a file was not installed; undefined when it was. */
export type InstallRefusal = 'present' | 'unsafe-name' | 'no-room' | 'not-as-expected';

/**
 * The local copy of one dataset. Every file enters complete: written or linked under
 * `incoming/`, checked, then renamed into `copy/`, so a reader of the overlay sees either no file
 * (and falls through to the engine) or the whole file, never a partial one.
 */
export class LocalCopy {
  readonly root: string;
  private readonly incoming: string;
  private readonly figures: CopyFigures = {
    files: 0,
    bytes: 0,
    refusedForRoom: 0,
    unsafeNames: 0,
    promoted: 0,
  };
  /** Directories of the copy known to exist (see removeEmptyDirectories, the one that removes any). */
  private readonly directories = new Set<string>();
  /** Files the engine holds that were refused for room once (counted once each). */
  private readonly refusedLinks = new Set<string>();
  /** Room fills admitted files into and have not installed them yet. */
  private readonly ledger = new RoomLedger();
  /** Called after files were installed: the overlay must drop names it cached from the engine. */
  onChanged: () => void = () => undefined;
  /**
   * Directories of the dataset a fill lists whole, making the directories below them as it finds
   * them (see fillCopy): an outline of the copy need not read them again (see LocalCopies.outline).
   */
  private readonly listedByFills = new Set<string>();
  /** Called when a fill gave up listing a directory it had taken over from the outline. */
  onUnlisted: (base: string) => void = () => undefined;

  constructor(
    readonly cacheDir: string,
    /** Runs the helper that marks directories opaque (none: nothing is marked). */
    private readonly runner?: ProcessRunner,
    /**
     * The dataset's owner and modes: the copy shows what the engine's mount shows, so a file
     * served by the kernel is never readable by more users than through the engine.
     */
    private readonly ownership: Ownership = {},
  ) {
    this.root = copyRoot(cacheDir);
    this.incoming = incomingRoot(cacheDir);
  }

  /**
   * Makes the directories, ends transfers a crashed driver left running (by PID and start time)
   * and discards their unfinished files, and counts what an earlier client copied (disk caches
   * outlive clients).
   */
  async prepare(): Promise<void> {
    await mkdir(this.root, { recursive: true });
    this.own(this.root, 'dir');
    await mkdir(this.incoming, { recursive: true, mode: 0o700 });
    const dir = await opendir(this.incoming);
    for await (const entry of dir) {
      const owner = await readFile(join(this.incoming, entry.name, 'owner'), 'utf8').catch(
        () => '',
      );
      const [pid, startTime] = owner.split(' ');
      if (
        pid !== undefined &&
        startTime !== undefined &&
        (await isSameProcess(Number(pid), startTime))
      ) {
        process.kill(Number(pid), 'SIGKILL');
      }
      await rm(join(this.incoming, entry.name), { recursive: true, force: true });
    }
    await this.count();
  }

  /** Counts what the copy holds (an earlier client's copy, or the one a running driver keeps). */
  async count(): Promise<void> {
    this.figures.files = 0;
    this.figures.bytes = 0;
    await this.walk('', (_, stats) => {
      this.figures.files += 1;
      this.figures.bytes += stats.size;
    });
  }

  current(): CopyFigures {
    return { ...this.figures };
  }

  /** A private directory for one transfer, on the copy's file system (so installing is a rename). */
  async workspace(): Promise<string> {
    const dir = join(this.incoming, randomBytes(8).toString('hex'));
    await mkdir(dir, { mode: 0o700 });
    return dir;
  }

  /** Names the process writing into a workspace, so a restarted driver can end it by PID. */
  async recordOwner(workspace: string, owner: { pid: number; startTime: string }): Promise<void> {
    await writeFile(join(workspace, 'owner'), `${owner.pid} ${owner.startTime}`, { mode: 0o600 });
  }

  async releaseWorkspace(dir: string): Promise<void> {
    await rm(dir, { recursive: true, force: true });
  }

  /**
   * Bytes the copy may still add: its files (linked ones included: the engine may drop its own
   * name of them at any time) and what fills admitted and are fetching stay within the cache file
   * system less the engine's share. Beyond it the engine meets a full file system that its own
   * eviction cannot free, and a pod's read fails.
   */
  async room(options: { linked?: boolean } = {}): Promise<number> {
    return this.roomIn(await statfs(this.cacheDir), options.linked ?? false);
  }

  /** The room, from the file system's figures (synchronous: what is held cannot change meanwhile). */
  private roomIn(fs: StatsFs, linked: boolean): number {
    const capacity = fs.blocks * fs.bsize;
    const budget = capacity * (1 - ENGINE_SHARE) - this.figures.bytes - this.ledger.holding();
    // A hard link takes no space: the engine's file already does.
    return Math.max(0, linked ? budget : Math.min(budget, fs.bavail * fs.bsize));
  }

  /**
   * Whether the copy holds this file as the remote describes it: its size, and its time when the
   * listing knew it (a listing without times trusts the size; a refresh compares both).
   */
  holds(relative: string, remote: RemoteFile): boolean {
    // Synchronous: a fill asks this of every listed file, one stat each (see place()).
    const stats = lstatOrUndefined(join(this.root, relative));
    return (
      stats !== undefined &&
      stats.isFile() &&
      stats.size === remote.size &&
      sameTimeOrUnlisted(stats.mtimeMs, remote.mtimeMs)
    );
  }

  /** The room a fill takes its files' bytes from (see FillRoom); closed when the fill ends. */
  roomForFill(): FillRoom {
    return this.ledger.open();
  }

  countUnsafe(): void {
    this.figures.unsafeNames += 1;
  }

  countNoRoom(files = 1): void {
    this.figures.refusedForRoom += files;
  }

  /**
   * Installs a file fully written under a workspace (moved in: it costs no room). The size must be
   * the remote's; the time is set to the remote's. An `exact` file did not come from the remote
   * itself (but from the cluster tier): its time, or its MD5 where the remote listed one, must be
   * the remote's as well.
   */
  async installWritten(
    written: string,
    relative: string,
    remote: RemoteFile,
    exact = false,
  ): Promise<InstallRefusal | undefined> {
    if (!isSafeRelativePath(relative)) {
      this.countUnsafe();
      discard(written);
      return 'unsafe-name';
    }
    const stats = lstatOrUndefined(written);
    if (
      !stats?.isFile() ||
      stats.size !== remote.size ||
      (exact && !(await isIdentical(written, stats, remote)))
    ) {
      discard(written);
      return 'not-as-expected';
    }
    this.place(written, relative, remote, stats);
    return undefined;
  }

  /**
   * Installs a file the engine holds complete in its own cache by a hard link into the copy: no
   * byte is copied and no room is taken (both names share the blocks). `isStillComplete` is asked
   * after the link is made, so a cache file the engine replaced meanwhile is never installed.
   */
  async installLinked(
    engineFile: string,
    relative: string,
    remote: RemoteFile,
    isStillComplete: () => Promise<boolean>,
  ): Promise<InstallRefusal | undefined> {
    if (!isSafeRelativePath(relative)) {
      this.countUnsafe();
      return 'unsafe-name';
    }
    if (this.holds(relative, remote)) return 'present';
    const fs = await statfs(this.cacheDir);
    // Held at once, so that promotions at the same time do not count the same room twice. A file a
    // fill admitted and a pod read meanwhile is promoted within the room the fill holds for it.
    const room = this.ledger.open();
    const heldByFill = this.ledger.heldFor(relative);
    room.measured(this.roomIn(fs, true) + heldByFill);
    if (heldByFill < remote.size && !room.take({ relative, size: remote.size })) {
      room.close();
      if (!this.refusedLinks.has(relative)) this.countNoRoom();
      this.refusedLinks.add(relative);
      return 'no-room';
    }
    const linked = join(this.incoming, `link-${randomBytes(8).toString('hex')}`);
    try {
      await link(engineFile, linked);
      const [ours, theirs] = await Promise.all([lstat(linked), lstat(engineFile)]);
      // The same inode as the engine's current file, of the full size, with every block present:
      // the engine recreates (never rewrites) a cache file it resets, so this cannot change later.
      const whole =
        ours.ino === theirs.ino &&
        ours.isFile() &&
        ours.size === remote.size &&
        ours.blocks * 512 >= ours.size &&
        (await isStillComplete());
      if (!whole) {
        await unlink(linked);
        return 'not-as-expected';
      }
      this.place(linked, relative, remote, ours);
      this.figures.promoted += 1;
      return undefined;
    } catch (err) {
      await unlink(linked).catch(() => undefined);
      throw err;
    } finally {
      room.close();
    }
  }

  /**
   * Marks directories whose whole remote content the copy holds as opaque: look-ups below them
   * never reach the engine (faster, and they keep working while the engine is restarted). Returns
   * how many were marked.
   */
  async markComplete(directories: string[]): Promise<number> {
    return this.changeOpaque(directories, 'y');
  }

  /**
   * Unmarks every directory above these files, so that what the copy lacks shows through again;
   * whether every mark went.
   */
  async unmarkAbove(files: string[]): Promise<boolean> {
    const ancestors = new Set<string>();
    for (const file of files) {
      const parts = file.split('/');
      for (let depth = 1; depth < parts.length; depth += 1) {
        ancestors.add(parts.slice(0, depth).join('/'));
      }
    }
    return (await this.changeOpaque([...ancestors], undefined)) === ancestors.size;
  }

  private async changeOpaque(directories: string[], value: string | undefined): Promise<number> {
    if (!this.runner || directories.length === 0) return 0;
    let changed = 0;
    for (let i = 0; i < directories.length; i += XATTR_BATCH) {
      const batch = directories.slice(i, i + XATTR_BATCH).map((dir) => join(this.root, dir));
      changed += batch.length - (await setXattr(this.runner, batch, OPAQUE, value)).length;
    }
    this.onChanged();
    return changed;
  }

  /** A directory about to be removed (see removeEmptyDirectories): made again when needed. */
  forgetDirectory(relative: string): void {
    this.directories.delete(join(this.root, relative));
  }

  /** Removes a file from the copy (it changed or vanished on the remote). */
  async remove(relative: string): Promise<void> {
    const path = join(this.root, relative);
    const stats = await lstat(path).catch(() => undefined);
    if (!stats?.isFile()) return;
    await unlink(path);
    this.figures.files -= 1;
    this.figures.bytes -= stats.size;
  }

  /** Every file of the copy, relative to its root. */
  async walk(
    relative: string,
    visit: (relative: string, stats: { size: number; mtimeMs: number }) => Promise<void> | void,
  ): Promise<void> {
    const dir = await opendir(join(this.root, relative)).catch(() => undefined);
    if (!dir) return;
    for await (const entry of dir) {
      const path = relative === '' ? entry.name : `${relative}/${entry.name}`;
      if (entry.isDirectory()) await this.walk(path, visit);
      else if (entry.isFile()) await visit(path, await stat(join(this.root, path)));
    }
  }

  /**
   * Moves a checked file into the copy. Synchronous on purpose: on the cache file system (tmpfs, or
   * a local disk image) each of these system calls takes microseconds, and through the thread pool
   * every one of them cost more than the call itself (a bulk fill installs tens of thousands of
   * files; measured 4,000 against 18,000 files a second). Being synchronous also makes each
   * install atomic against the others (promotion and prefetch may install the same name at once),
   * which keeps the count right.
   */
  private place(from: string, relative: string, remote: RemoteFile, stats: Stats): void {
    this.own(from, 'file', stats);
    // Without a listed time, the one rclone set from the download stands.
    if (!sameTimeOrUnlisted(stats.mtimeMs, remote.mtimeMs)) {
      utimesSync(from, remote.mtimeMs / 1000, remote.mtimeMs / 1000);
    }
    const target = join(this.root, relative);
    const parent = dirname(target);
    if (!this.directories.has(parent)) this.makeDirectory(parent);
    const replaced = lstatOrUndefined(target);
    try {
      renameSync(from, target);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      // The directory went away under the copy (its file system was made anew): make it again.
      this.makeDirectory(parent);
      renameSync(from, target);
    }
    if (replaced?.isFile()) {
      this.figures.bytes -= replaced.size;
    } else {
      this.figures.files += 1;
    }
    this.figures.bytes += stats.size;
    this.ledger.settle(relative);
    this.onChanged();
  }

  /** A fill lists `base` whole and makes its directories (see LocalCopies.outline). */
  leaveToFill(base: string): void {
    this.listedByFills.add(base);
  }

  /** Directories fills list whole: the outline leaves them out. */
  leftToFills(): string[] {
    return [...this.listedByFills];
  }

  /**
   * A fill's listing of `base` ended before its end (the remote refused it, say): the directories
   * below it that the outline left out are nobody's to make unless the outline takes them back.
   */
  fillGaveUp(base: string): void {
    if (this.listedByFills.delete(base)) this.onUnlisted(base);
  }

  /**
   * Makes these directories of the dataset in the copy (and those above them) before pods look
   * them up (see LocalCopies.outline and fillCopy); returns how many were new.
   */
  makeDirectories(relatives: string[]): number {
    let made = 0;
    for (const relative of relatives) {
      if (!isSafeRelativePath(relative)) continue;
      const dir = join(this.root, relative);
      if (!this.directories.has(dir) && this.makeDirectory(dir)) made += 1;
    }
    return made;
  }

  /** Makes a directory of the copy and those above it, each with the dataset's modes; whether it was new. */
  private makeDirectory(dir: string): boolean {
    const firstMade = mkdirSync(dir, { recursive: true });
    if (firstMade !== undefined) {
      // Each directory made here, from the first one down to this one.
      for (let made = dir; made.length >= firstMade.length; made = dirname(made)) {
        this.own(made, 'dir');
      }
    }
    this.directories.add(dir);
    return firstMade !== undefined;
  }

  /**
   * Gives a file or directory of the copy the dataset's modes and, when set, its owner (nothing
   * to do when `current` shows it has them already).
   */
  private own(path: string, kind: 'file' | 'dir', current?: Stats): void {
    const { uid, gid, fileMode, dirMode } = this.ownership;
    const mode = kind === 'file' ? (fileMode ?? FILE_MODE) : (dirMode ?? DIR_MODE);
    if (current === undefined || (current.mode & 0o7777) !== mode) chmodSync(path, mode);
    const owned =
      current !== undefined &&
      (uid === undefined || current.uid === uid) &&
      (gid === undefined || current.gid === gid);
    if ((uid !== undefined || gid !== undefined) && !owned) chownSync(path, uid ?? -1, gid ?? -1);
  }
}

/** The entry's stats; undefined when there is none (or it cannot be looked at). */
function lstatOrUndefined(path: string): Stats | undefined {
  try {
    return lstatSync(path, { throwIfNoEntry: false });
  } catch {
    return undefined;
  }
}

/** Removes a file that will not be installed (gone already is fine). */
function discard(path: string): void {
  try {
    unlinkSync(path);
  } catch {
    // nothing to remove
  }
}
