// Prefetch into the local copy: list the remote, pick what the globs match, take what the cluster tier holds, copy the rest in bulk, install each file whole.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import picomatch from 'picomatch';
import type { RcloneTransfers, RemoteEntry, TransferSource } from '../engines/rclone-transfer.js';
import { processStartTime } from '../kernel/proc.js';
import { globBase } from '../dataset/patterns.js';
import type { TierAccess } from '../tier/cluster-tier.js';
import { BatchPipeline } from './batches.js';
import { isSafeRelativePath, type LocalCopy } from './local-copy.js';

export interface FillProgress {
  /** Remote files the globs matched. */
  matched: number;
  /** Matched files the copy holds (copied now or already current). */
  files: number;
  /** Of those, files the copy held already (current, or promoted from a read while the fill ran). */
  alreadyHeld: number;
  /** Matched files left to the engine: pods were reading them (see FillOptions.skip). */
  readOnDemand: number;
  /** Bytes copied by this fill (from the remote or the cluster tier). */
  bytes: number;
  /** Of those, files and bytes taken from the cluster tier. */
  tierFiles: number;
  tierBytes: number;
  errors: number;
  /** Matched files left out because the cache file system had no room for them. */
  noRoom: number;
  /** Remote names that cannot be local paths, skipped. */
  unsafeNames: number;
  /** Copies that no longer matched the remote and were removed (refresh). */
  stale: number;
  /** Directories found complete in the copy and marked opaque to the overlay. */
  completeDirectories: number;
  /** Time spent listing the remote, and transferring (the two overlap when there is no tier). */
  listSeconds: number;
  transferSeconds: number;
  done: boolean;
}

export interface FillOptions {
  copy: LocalCopy;
  /**
   * Files to leave out: pods are reading them through the engine, which fetches them anyway and
   * whose promotion brings them into the copy (a sweep fill must not fetch them a second time).
   */
  skip?: ((relative: string) => boolean) | undefined;
  /**
   * Runs each batch's transfer within the node's transfer budget (listings run outside it, so a
   * fill whose remote is slow to list holds up no other fill).
   */
  transferBudget?: ((work: () => Promise<void>) => Promise<void>) | undefined;
  transfers: RcloneTransfers;
  source: TransferSource;
  /** The cluster tier, asked before the remote for what the copy lacks. */
  tier?: TierAccess | undefined;
  /** Content globs relative to the dataset root. */
  globs: string[];
  concurrency: number;
  /** Re-check every file of the copy against the remote first and drop those that changed. */
  refresh?: boolean;
  /**
   * Take only what the cluster tier holds: the rest is left to reads on demand (no error), so a
   * dataset staged without prefetch still reads what other nodes fetched from the tier.
   */
  tierOnly?: boolean;
  /** Ends the listing and the transfer (their rclone processes) when aborted. */
  signal?: AbortSignal;
  onProgress?: (progress: FillProgress) => void;
}

/**
 * Files listed before the first transfer starts: enough that its process is worth starting, few
 * enough that it starts within a second of a listing's start.
 */
const FIRST_BATCH = 1000;

/** A directory to list for the globs, and how deep below it they can match (undefined: any depth). */
export interface Listing {
  base: string;
  maxDepth?: number;
}

/** How many directory levels below its base a glob can match; undefined when any (`**`, braces). */
function globDepth(glob: string): number | undefined {
  const base = globBase(glob);
  const rest = base === '' ? glob : glob.slice(base.length + 1);
  return /\*\*|\{/.test(rest) ? undefined : rest.split('/').length;
}

/**
 * What to list for the globs: each base once, as deep as its deepest glob needs (a literal path
 * lists one directory, not the dataset), without the bases another listing already covers.
 */
export function listingsFor(globs: string[]): Listing[] {
  const byBase = new Map<string, Listing>();
  for (const glob of globs) {
    const base = globBase(glob);
    const depth = globDepth(glob);
    const known = byBase.get(base);
    const maxDepth =
      known === undefined
        ? depth
        : known.maxDepth === undefined || depth === undefined
          ? undefined
          : Math.max(known.maxDepth, depth);
    byBase.set(base, { base, ...(maxDepth === undefined ? {} : { maxDepth }) });
  }
  const listings = [...byBase.values()].sort((a, b) => a.base.localeCompare(b.base));
  const levels = (dir: string) => (dir === '' ? 0 : dir.split('/').length);
  const covers = (outer: Listing, inner: Listing): boolean => {
    if (outer === inner) return false;
    if (outer.base !== '' && !inner.base.startsWith(`${outer.base}/`)) return false;
    if (outer.maxDepth === undefined) return true;
    return (
      inner.maxDepth !== undefined &&
      outer.maxDepth >= levels(inner.base) - levels(outer.base) + inner.maxDepth
    );
  };
  return listings.filter((inner) => !listings.some((outer) => covers(outer, inner)));
}

/**
 * The outermost directories below a listing base whose every listed file the copy holds: the
 * overlay need not look below the copy there. (A remote directory with no file in it is not in a
 * files-only listing: inside a complete directory it is not shown.)
 */
export function completeDirectories(
  bases: string[],
  listed: string[],
  held: Set<string>,
): string[] {
  const incomplete = new Set<string>();
  const known = new Set<string>();
  for (const file of listed) {
    const base = bases.find((b) => b === '' || file.startsWith(`${b}/`));
    if (base === undefined) continue;
    const parts = file.split('/');
    const first = base === '' ? 1 : base.split('/').length;
    for (let depth = first; depth < parts.length; depth += 1) {
      const dir = parts.slice(0, depth).join('/');
      known.add(dir);
      if (!held.has(file)) incomplete.add(dir);
    }
  }
  const complete = [...known].filter((dir) => !incomplete.has(dir));
  const completeSet = new Set(complete);
  return complete.filter((dir) => !completeSet.has(dir.split('/').slice(0, -1).join('/'))).sort();
}

/**
 * Fills the copy with the remote files matching `globs`: one listing, then `rclone copy` of what
 * the copy lacks (as much as its room allows) into a private workspace, each file renamed into the
 * copy as soon as rclone reports it whole.
 */
export async function fillCopy(options: FillOptions): Promise<FillProgress> {
  const { copy, transfers, source } = options;
  const progress: FillProgress = {
    matched: 0,
    files: 0,
    alreadyHeld: 0,
    readOnDemand: 0,
    bytes: 0,
    tierFiles: 0,
    tierBytes: 0,
    errors: 0,
    noRoom: 0,
    unsafeNames: 0,
    stale: 0,
    completeDirectories: 0,
    listSeconds: 0,
    transferSeconds: 0,
    done: false,
  };
  const listStarted = Date.now();
  const report = () => options.onProgress?.({ ...progress });
  if (options.refresh) progress.stale = await dropStale(copy, transfers, source, options.signal);

  const matches = options.globs.length > 0 ? picomatch(options.globs, { dot: true }) : () => false;
  const listings = listingsFor(options.globs);
  /** Listings of whole trees: only they can prove a directory complete. */
  const bases = listings.filter((l) => l.maxDepth === undefined).map((l) => l.base);
  /** Every file listed under those bases, matched or not: what makes a directory complete. */
  const listed: string[] = [];
  /** A limited listing may overlap a whole-tree one below it: each file is taken once. */
  const seen = new Set<string>();
  const held = new Set<string>();
  let room = await copy.room();
  let transferStarted: number | undefined;
  // Without a tier, files go to the remote's transfer while the listing goes on. With one, the
  // whole listing first: the tier's packs are taken once each, for every file they hold.
  const batches = new BatchPipeline<RemoteEntry>(
    options.tier ? Number.POSITIVE_INFINITY : FIRST_BATCH,
    async (batch) => {
      const fetch = () =>
        fetchAdmitted(options, new Map(batch.map((e) => [e.relative, e])), progress, held);
      await (options.transferBudget ?? ((work) => work()))(() => {
        transferStarted ??= Date.now();
        return fetch();
      });
    },
  );
  try {
    for (const { base, maxDepth } of listings) {
      const listing = { dir: base, maxDepth, checkers: options.concurrency };
      await transfers.list(source, listing, options.signal, (entry) => {
        if (maxDepth === undefined) listed.push(entry.relative);
        if (seen.has(entry.relative)) return;
        seen.add(entry.relative);
        if (!matches(entry.relative)) return;
        if (!isSafeRelativePath(entry.relative)) {
          progress.unsafeNames += 1;
          copy.countUnsafe();
          return;
        }
        progress.matched += 1;
        if (copy.holds(entry.relative, entry)) {
          progress.files += 1;
          progress.alreadyHeld += 1;
          held.add(entry.relative);
        } else if (options.skip?.(entry.relative)) {
          progress.readOnDemand += 1;
        } else if (entry.size > room) {
          progress.noRoom += 1;
          copy.countNoRoom();
        } else {
          room -= entry.size;
          batches.add(entry);
        }
      });
    }
  } finally {
    progress.listSeconds = (Date.now() - listStarted) / 1000;
    report();
    // What was handed over is fetched (or given up) before the fill ends, listed whole or not.
    await batches.finish();
  }
  progress.transferSeconds =
    transferStarted === undefined ? 0 : (Date.now() - transferStarted) / 1000;
  progress.completeDirectories = await copy.markComplete(completeDirectories(bases, listed, held));
  progress.done = true;
  report();
  return progress;
}

/**
 * Fetches admitted files: what the cluster tier holds from there, the rest from the remote. What
 * is not in the copy afterwards counts as an error (the engine still serves it).
 */
async function fetchAdmitted(
  options: FillOptions,
  admitted: Map<string, RemoteEntry>,
  progress: FillProgress,
  held: Set<string>,
): Promise<void> {
  if (options.signal?.aborted) return;
  // Pods reading on demand while the fill ran may have had files promoted since the listing: a
  // second download of those would cost the remote a second copy.
  for (const [relative, entry] of admitted) {
    if (options.copy.holds(relative, entry)) {
      admitted.delete(relative);
      held.add(relative);
      progress.files += 1;
      progress.alreadyHeld += 1;
    } else if (options.skip?.(relative)) {
      admitted.delete(relative);
      progress.readOnDemand += 1;
    }
  }
  if (options.tier) await fromTier(options, options.tier, admitted, progress, held);
  if (admitted.size === 0 || options.tierOnly) return;
  const fetched = await transfer(options, admitted, progress, held);
  // Whatever rclone did not report copied is not in the copy; the engine still serves it.
  progress.errors += admitted.size;
  if (!fetched.ok && admitted.size === 0 && progress.errors === 0) progress.errors += 1;
  options.tier?.offer(fetched.installed.filter(canBeTold));
}

/**
 * A tier object stands for a remote file only when its time or MD5 can be compared with the
 * remote's: other files are neither taken from the tier nor uploaded to it.
 */
const canBeTold = (entry: RemoteEntry): boolean =>
  !Number.isNaN(entry.mtimeMs) || entry.md5 !== undefined;

/**
 * Takes from the cluster tier what it holds of the admitted files, each checked against the
 * remote's listing before it is installed; the rest stays admitted, for the remote. A tier file
 * that is not the remote's is no error of the fill: the remote has it.
 */
async function fromTier(
  options: FillOptions,
  tier: TierAccess,
  admitted: Map<string, RemoteEntry>,
  progress: FillProgress,
  held: Set<string>,
): Promise<void> {
  if (!(await tier.check())) return;
  const eligible = [...admitted.values()].filter(canBeTold);
  if (eligible.length === 0) return;
  const { copy } = options;
  const taken = { files: 0, bytes: 0 };
  const workspace = await copy.workspace();
  try {
    const result = await tier.take(
      eligible,
      workspace,
      async (written, entry) => {
        const refused = await copy
          .installWritten(written, entry.relative, entry, true)
          .catch(() => 'not-as-expected' as const);
        if (refused !== undefined) return false;
        admitted.delete(entry.relative);
        held.add(entry.relative);
        taken.files += 1;
        taken.bytes += entry.size;
        progress.files += 1;
        progress.bytes += entry.size;
        if (taken.files % 64 === 0) options.onProgress?.({ ...progress });
        return true;
      },
      {
        transfers: options.concurrency,
        signal: options.signal,
        onStarted: (pid) => recordOwner(copy, workspace, pid),
      },
    );
    tier.rejected(result.rejected);
    if (!result.ok && !options.signal?.aborted) tier.failed(result.reason);
  } finally {
    await copy.releaseWorkspace(workspace);
  }
  progress.tierFiles += taken.files;
  progress.tierBytes += taken.bytes;
  tier.read(taken.files, taken.bytes);
}

/** Names the process writing into a workspace, so a restarted driver can end it by PID. */
async function recordOwner(copy: LocalCopy, workspace: string, pid: number): Promise<void> {
  const startTime = await processStartTime(pid);
  if (startTime !== undefined) await copy.recordOwner(workspace, { pid, startTime });
}

/**
 * Copies the admitted files from the remote into a private workspace and installs each one as
 * soon as rclone reports it whole. What rclone reports copied leaves `admitted`, installed or
 * (counted as an error) not.
 */
async function transfer(
  options: FillOptions,
  admitted: Map<string, RemoteEntry>,
  progress: FillProgress,
  held: Set<string>,
): Promise<{ ok: boolean; reason: string; installed: RemoteEntry[] }> {
  const { copy, transfers } = options;
  const report = () => options.onProgress?.({ ...progress });
  const workspace = await copy.workspace();
  const installed: RemoteEntry[] = [];
  try {
    const list = join(workspace, 'files');
    await writeFile(list, [...admitted.keys()].map((name) => `${name}\n`).join(''), {
      mode: 0o600,
    });
    const destination = join(workspace, 'data');
    const result = await transfers.copy(
      options.source,
      { localDir: destination },
      { listFile: list },
      {
        transfers: options.concurrency,
        signal: options.signal,
        // Each file's size (and time, where listed) is checked against the listing at install.
        listed: true,
        onStarted: (pid) => recordOwner(copy, workspace, pid),
        onCopied: async (relative) => {
          const entry = admitted.get(relative);
          if (!entry) return;
          admitted.delete(relative);
          const refused = await copy
            .installWritten(join(destination, relative), relative, entry)
            .catch(() => 'not-as-expected' as const);
          if (refused === undefined) {
            held.add(relative);
            installed.push(entry);
            progress.files += 1;
            progress.bytes += entry.size;
          } else {
            progress.errors += 1;
          }
          if (installed.length % 64 === 0) report();
        },
      },
    );
    return { ...result, installed };
  } finally {
    await copy.releaseWorkspace(workspace);
  }
}

/** Removes copies the remote no longer has as they are (changed size or time, or gone). */
async function dropStale(
  copy: LocalCopy,
  transfers: RcloneTransfers,
  source: TransferSource,
  signal: AbortSignal | undefined,
): Promise<number> {
  const remote = new Map<string, RemoteEntry>();
  await transfers.list(
    source,
    { dir: '' },
    signal,
    (entry) => remote.set(entry.relative, entry),
    true,
  );
  const stale: string[] = [];
  await copy.walk('', (relative, stats) => {
    const entry = remote.get(relative);
    if (!entry || entry.size !== stats.size || Math.abs(entry.mtimeMs - stats.mtimeMs) >= 1) {
      stale.push(relative);
    }
  });
  await copy.unmarkAbove(stale);
  for (const relative of stale) await copy.remove(relative);
  if (stale.length > 0) copy.onChanged();
  return stale.length;
}
