// Prefetch into the local copy: list the remote, pick what the globs match, take what the cluster tier holds, copy the rest in bulk, install each file whole.
import { createHash } from 'node:crypto';
import { dirname } from 'node:path';
import picomatch from 'picomatch';
import {
  copyListsDirectories,
  type RcloneTransfers,
  type RemoteEntry,
} from '../engines/rclone-transfer.js';
import type { TransferSource } from '../engines/transfer-source.js';
import type { TierAccess } from '../tier/cluster-tier.js';
import type { Room } from '../tier/layout.js';
import { settleLeftToPods } from './left-to-pods.js';
import type { FillRoom } from './room.js';
import { BatchPipeline, type BatchShape } from './batches.js';
import { DirectoryMaker, removeEmptyDirectories } from './directory-maker.js';
import { canBeTold, fromRemote, fromTier, isFull, leftOutForRoom } from './fetch.js';
import { fetchTogether } from './together.js';
import { completeDirectories, listingsFor } from './listings.js';
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
   * dataset staged without prefetch still reads what other nodes fetched from the tier. Unless
   * other nodes start the same warm-up within two member refreshes: a job starting on many nodes
   * at once. Then they fill the dataset together, as far as the copy has room (see fetchTogether).
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

/**
 * A fill beside pods that read the same files on demand (a sweep fill) goes in small batches, two
 * at a time: each leaves out, as it starts, what the pods opened meanwhile (see FillOptions.skip),
 * so a file is rarely fetched by both. One batch is a few tenths of a second of transfer. Where
 * the copy lists the directories of its files, a batch holds one directory where it can (see
 * Selection.within): a sweep fill of 50,000 files runs a few hundred batches.
 */
export const BESIDE_READERS: BatchShape = { minBatch: 64, maxBatch: 256, inFlight: 2 };

/**
 * Fills the copy with the remote files matching `globs`: one listing, then `rclone copy` of what
 * the copy lacks (as much as its room allows) into a private workspace, each file renamed into the
 * copy as soon as rclone reports it whole.
 */
export async function fillCopy(options: FillOptions): Promise<FillProgress> {
  const room = options.copy.roomForFill();
  try {
    return await fillWithin(options, room);
  } finally {
    room.close();
  }
}

/** A fill's progress before it started. */
export const noProgress = (): FillProgress => ({
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
});

/** The fill, its files' bytes held in `room` until each is installed. */
async function fillWithin(options: FillOptions, room: FillRoom): Promise<FillProgress> {
  const { copy, transfers, source } = options;
  const progress = noProgress();
  const listStarted = Date.now();
  const report = () => options.onProgress?.({ ...progress });
  const listings = listingsFor(options.globs);
  /** Listings of whole trees: only they can prove a directory complete. */
  const bases = listings.filter((l) => l.maxDepth === undefined).map((l) => l.base);
  // Their directories are made here, as listed: the copy's outline leaves them out (told at once,
  // before the outline's levels below a stage's).
  for (const base of bases) copy.leaveToFill(base);
  const directories = new DirectoryMaker(copy);

  const matches = options.globs.length > 0 ? picomatch(options.globs, { dot: true }) : () => false;
  /** Every file listed under those bases, matched or not: what makes a directory complete. */
  const listed: string[] = [];
  /** A limited listing may overlap a whole-tree one below it: each file is taken once. */
  const seen = new Set<string>();
  const held = new Set<string>();
  /** Files the copy held already, as listed: offered to the tier again where it lacks them. */
  const heldBefore: RemoteEntry[] = [];
  // The copy's room is measured once stale copies are gone. A fill from the tier alone takes room
  // only for what the tier holds (see takeFromTier).
  /** Files pods had opened when the fill came to them (see FillOptions.skip). */
  const leftToPods: RemoteEntry[] = [];
  let transferStarted: number | undefined;
  const fetchWithinBudget = (admitted: Map<string, RemoteEntry>, leftBehind: RemoteEntry[]) =>
    (options.transferBudget ?? ((work) => work()))(() => {
      transferStarted ??= Date.now();
      return fetchAdmitted(options, admitted, progress, held, room, leftBehind);
    });
  // Without a tier, files go to the remote's transfer while the listing goes on. With one, the
  // whole listing first: the tier's packs are taken once each, for every file they hold.
  const batches = new BatchPipeline<RemoteEntry>(
    options.tier
      ? { minBatch: Number.POSITIVE_INFINITY }
      : options.skip
        ? copyListsDirectories(options.source)
          ? { ...BESIDE_READERS, groupOf: (entry) => dirname(entry.relative) }
          : BESIDE_READERS
        : { minBatch: FIRST_BATCH },
    (batch) => fetchWithinBudget(new Map(batch.map((e) => [e.relative, e])), leftToPods),
  );
  /** Whole-tree listings not run to their end (yet): their directories may be unmade. */
  const unfinished = new Set(bases);
  try {
    if (options.refresh) progress.stale = await dropStale(copy, transfers, source, options.signal);
    room.measured(await copy.room());
    for (const { base, maxDepth } of listings) {
      const listing = { dir: base, maxDepth, checkers: options.concurrency };
      await transfers.list(source, listing, options.signal, (entry) => {
        if (maxDepth === undefined) {
          listed.push(entry.relative);
          directories.holding(entry.relative);
        }
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
          heldBefore.push(entry);
        } else if (options.skip?.(entry.relative)) {
          progress.readOnDemand += 1;
          leftToPods.push(entry);
        } else if (options.tierOnly || room.take(entry)) {
          batches.add(entry);
        } else {
          leftOutForRoom(copy, progress);
        }
      });
      if (maxDepth === undefined) unfinished.delete(base);
    }
  } finally {
    directories.flush();
    for (const base of unfinished) copy.fillGaveUp(base);
    progress.listSeconds = (Date.now() - listStarted) / 1000;
    report();
    // What was handed over is fetched (or given up) before the fill ends, listed whole or not.
    await batches.finish();
  }
  await settleLeftToPods(leftToPods, {
    holds: (entry) => copy.holds(entry.relative, entry),
    withEngine: (relative) => options.skip?.(relative) ?? false,
    room,
    fetch: fetchWithinBudget,
    onHeld: (entry) => held.add(entry.relative),
    onTakenBack: (_, admitted) => {
      progress.readOnDemand -= 1;
      if (!admitted) leftOutForRoom(copy, progress);
    },
    signal: options.signal,
  });
  progress.transferSeconds =
    transferStarted === undefined ? 0 : (Date.now() - transferStarted) / 1000;
  progress.completeDirectories = await copy.markComplete(completeDirectories(bases, listed, held));
  if (options.tier) await offerAgain(options, options.tier, heldBefore);
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
  room: Room,
  leftBehind: RemoteEntry[],
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
      leftBehind.push(entry);
    }
  }
  const { tier } = options;
  if (tier && options.tierOnly) {
    await fromTier(options, tier, admitted, progress, held, room);
    if (admitted.size === 0) return;
    await fetchTogether(options, tier, admitted, progress, held, scopeOf(options.globs), room);
  } else if (tier) {
    await fetchTogether(options, tier, admitted, progress, held, scopeOf(options.globs));
  } else {
    await fromRemote(options, admitted, progress, held);
  }
}

/**
 * Offers the tier what the copy held before this fill and the tier lacks: what a node fetched but
 * had not uploaded when its driver stopped (uploads wait in memory) reaches the tier at the next
 * fill (a restarted driver resumes every volume's fill). A tier that fails here costs nothing.
 */
async function offerAgain(
  options: FillOptions,
  tier: TierAccess,
  held: RemoteEntry[],
): Promise<void> {
  const tellable = held.filter(canBeTold);
  if (tellable.length === 0 || options.signal?.aborted || !(await tier.check())) return;
  // Nor does a cache file system too full for a scratch directory: the fill's work is done.
  const scratch = await options.copy.workspace().catch((err: unknown) => {
    if (isFull(err)) return undefined;
    throw err;
  });
  if (scratch === undefined) return;
  try {
    const lacking = await tier.lacking(tellable, scratch).catch(() => []);
    tier.offer(lacking.filter((e) => options.copy.holds(e.relative, e)));
  } finally {
    await options.copy.releaseWorkspace(scratch);
  }
}

/** Which fills share their work: those of the same patterns (in any order). */
const scopeOf = (globs: string[]): string =>
  createHash('sha256')
    .update(JSON.stringify([...new Set(globs)].sort()))
    .digest('hex')
    .slice(0, 16);

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
  // Once more: a directory marked complete meanwhile (promotions) must not hide what went.
  await copy.unmarkAbove(stale);
  // Directories the remote no longer has (none of its files is below them) go too.
  const remoteDirectories = new Set<string>();
  for (const relative of remote.keys()) {
    for (let dir = dirname(relative); dir !== '.'; dir = dirname(dir)) remoteDirectories.add(dir);
  }
  const gone = await removeEmptyDirectories(copy, (dir) => remoteDirectories.has(dir));
  if (stale.length > 0 || gone > 0) copy.onChanged();
  return stale.length;
}
