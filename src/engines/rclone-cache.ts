// Reads rclone's VFS cache from outside: which cached files are complete, for promotion into the local copy.
import { lstatSync } from 'node:fs';
import { lstat, opendir, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import pMap from 'p-map';
import type { DatasetSpec } from '../dataset/params.js';
import { REMOTE, remoteConfig } from './rclone.js';

/** A file rclone holds whole in its cache, as the remote described it when rclone fetched it. */
export interface CompleteCacheFile {
  relative: string;
  /** rclone's data file (the copy links it). */
  dataPath: string;
  size: number;
  mtimeMs: number;
}

/** The parts of rclone's per-file metadata (vfsMeta/…) that tell completeness. */
interface CacheItemInfo {
  Size?: number;
  Rs?: { Pos: number; Size: number }[] | null;
  Fingerprint?: string;
  Dirty?: boolean;
}

/**
 * Go's time.String() as rclone writes it into fingerprints ("size,2026-12-01 04:21:46.72163 +0000
 * UTC[,hash]"): the remote's modification time, or undefined when the remote has none.
 */
export function fingerprintTime(fingerprint: string): number | undefined {
  const match = /^\d+,(\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\d)(\.\d+)? ([+-])(\d\d)(\d\d)/.exec(
    fingerprint,
  );
  if (!match) return undefined;
  const [, date, time, fraction = '', sign, hours, minutes] = match;
  const ms = Date.parse(`${date}T${time}${fraction.slice(0, 4)}${sign}${hours}:${minutes}`);
  return Number.isNaN(ms) ? undefined : ms;
}

/** Complete means one downloaded range covering the whole file, nothing written locally. */
function completeSize(info: CacheItemInfo): number | undefined {
  if (info.Dirty !== false || typeof info.Size !== 'number' || !info.Fingerprint) return undefined;
  const ranges = info.Rs ?? [];
  if (info.Size === 0) return ranges.length === 0 ? 0 : undefined;
  const [range] = ranges;
  return ranges.length === 1 && range?.Pos === 0 && range.Size === info.Size
    ? info.Size
    : undefined;
}

/** How much of the cache a scan looks at: items at once, and until when. */
export interface ScanBounds {
  /** Items offered at once (each is a few file-system calls, mostly waiting). */
  concurrency: number;
  /** performance.now() after which no item is offered any more: the rest waits for the next scan. */
  until: number;
}

const UNBOUNDED: ScanBounds = { concurrency: 1, until: Number.POSITIVE_INFINITY };

/** What a scan met: the bounds cut it short, or a directory had changed. */
interface ScanSeen {
  cut: boolean;
  changed: boolean;
}

interface DirState {
  mtimeMs: number;
  subdirectories: string[];
  /** Items seen here that were not complete yet (or not yet taken): looked at again each scan. */
  pending: Set<string>;
}

/**
 * Scans rclone's cache metadata for files that became complete. A directory whose modification
 * time did not change has no new items, so later scans only re-read the items still pending.
 */
export class RcloneCacheIndex {
  private readonly remotePath: string;
  private readonly dirs = new Map<string, DirState>();
  private readonly taken = new Set<string>();
  /** The remote's directory name in the cache, once seen. */
  private remoteName?: string;

  constructor(
    private readonly cacheDir: string,
    spec: DatasetSpec,
  ) {
    this.remotePath = remoteConfig(spec.source, {}).path;
  }

  /**
   * rclone keeps an item of remote SRC:path at <cache>/vfs/<name>/path/<item>, its metadata under
   * vfsMeta, where <name> is SRC or, for a remote defined with overrides, SRC{hash}.
   */
  private async roots(): Promise<{ data: string; meta: string } | undefined> {
    if (this.remoteName === undefined) {
      const names = await readdir(join(this.cacheDir, 'vfsMeta')).catch(() => [] as string[]);
      this.remoteName = names.find((name) => name === REMOTE || name.startsWith(`${REMOTE}{`));
      if (this.remoteName === undefined) return undefined;
    }
    return {
      data: join(this.cacheDir, 'vfs', this.remoteName, this.remotePath),
      meta: join(this.cacheDir, 'vfsMeta', this.remoteName, this.remotePath),
    };
  }

  /**
   * Whether rclone has an item for the file (whole, partial or being fetched): a pod opened it
   * through the mount. Synchronous, one lstat: a fill asks it of every file it is about to fetch.
   * Before the first scan found the cache's root, nothing is known and the answer is no.
   */
  hasItem(relative: string): boolean {
    if (this.remoteName === undefined) return false;
    const meta = join(this.cacheDir, 'vfsMeta', this.remoteName, this.remotePath, relative);
    return lstatSync(meta, { throwIfNoEntry: false }) !== undefined;
  }

  /**
   * Files complete since the last scan that `take` did not take before (within the bounds).
   * Returns whether the scan was quiet: it looked at every directory within the bounds, none had
   * changed since the scan before (no item came or went), and files were taken before (a cache
   * nothing was read from yet costs a scan next to nothing, and pods may start reading any time).
   */
  async scan(
    take: (file: CompleteCacheFile) => Promise<boolean>,
    bounds: ScanBounds = UNBOUNDED,
  ): Promise<boolean> {
    const roots = await this.roots();
    if (!roots) return false;
    const seen: ScanSeen = { cut: false, changed: false };
    await this.scanDir(roots, '', take, bounds, seen);
    return !seen.cut && !seen.changed && this.taken.size > 0;
  }

  /** Whether rclone still describes the item as complete with this size (after it was linked). */
  async isComplete(relative: string, size: number): Promise<boolean> {
    const roots = await this.roots();
    const info = roots && (await this.read(roots, relative));
    return info !== undefined && completeSize(info) === size;
  }

  private async read(
    roots: { meta: string },
    relative: string,
  ): Promise<CacheItemInfo | undefined> {
    try {
      return JSON.parse(await readFile(join(roots.meta, relative), 'utf8')) as CacheItemInfo;
    } catch {
      return undefined; // being rewritten or removed by rclone: looked at again next scan
    }
  }

  private async scanDir(
    roots: { data: string; meta: string },
    relative: string,
    take: (file: CompleteCacheFile) => Promise<boolean>,
    bounds: ScanBounds,
    seen: ScanSeen,
  ): Promise<void> {
    if (performance.now() > bounds.until) {
      seen.cut = true;
      return;
    }
    const path = join(roots.meta, relative);
    const stats = await lstat(path).catch(() => undefined);
    if (!stats?.isDirectory()) {
      seen.changed ||= this.dirs.delete(relative);
      return;
    }
    let state = this.dirs.get(relative);
    if (!state || state.mtimeMs !== stats.mtimeMs) {
      seen.changed = true;
      const previous = state;
      state = { mtimeMs: stats.mtimeMs, subdirectories: [], pending: new Set() };
      for await (const entry of await opendir(path)) {
        const child = relative === '' ? entry.name : `${relative}/${entry.name}`;
        if (entry.isDirectory()) state.subdirectories.push(child);
        // Items taken before stay taken; new and still-pending ones are looked at.
        else if (
          entry.isFile() &&
          (!previous || previous.pending.has(child) || !this.taken.has(child))
        )
          state.pending.add(child);
      }
      this.dirs.set(relative, state);
    }
    const pending = state.pending;
    await pMap(
      [...pending],
      async (item) => {
        if (performance.now() > bounds.until) {
          seen.cut = true;
          return;
        }
        if (await this.offer(roots, item, take)) {
          pending.delete(item);
          this.taken.add(item);
        }
      },
      { concurrency: bounds.concurrency },
    );
    for (const sub of state.subdirectories) await this.scanDir(roots, sub, take, bounds, seen);
  }

  private async offer(
    roots: { data: string; meta: string },
    relative: string,
    take: (file: CompleteCacheFile) => Promise<boolean>,
  ): Promise<boolean> {
    const info = await this.read(roots, relative);
    if (!info) return false;
    const size = completeSize(info);
    if (size === undefined) return false;
    const dataPath = join(roots.data, relative);
    const data = await lstat(dataPath).catch(() => undefined);
    if (!data?.isFile() || data.size !== size) return false;
    const mtimeMs = fingerprintTime(info.Fingerprint ?? '') ?? data.mtimeMs;
    return take({ relative, dataPath, size, mtimeMs });
  }
}
