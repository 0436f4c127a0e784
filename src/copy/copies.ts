// The node's local copies: one per read-only dataset with a copy layer, kept growing by promotion and made visible to the overlay.
import { join } from 'node:path';
import { setImmediate, setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import type { DatasetSpec } from '../dataset/params.js';
import { RcloneCacheIndex } from '../engines/rclone-cache.js';
import type { DirectoryWalk, RcloneTransfers } from '../engines/rclone-transfer.js';
import type { TransferSource } from '../engines/transfer-source.js';
import type { Mounter } from '../kernel/mounter.js';
import { readDirectories } from '../kernel/directory-entries.js';
import { dropCachedPages } from '../kernel/page-cache.js';
import type { ProcessRunner } from '../kernel/runner.js';
import type { TierAccess } from '../tier/cluster-tier.js';
import { DirectoryMaker } from './directory-maker.js';
import { LocalCopy } from './local-copy.js';
import { promoteComplete } from './promote.js';
import { PromotedDirectories } from './promoted-directories.js';
import { DEFAULT_SWEEP_RULE, SweepDetector, type Sweep, type SweepRule } from './sweeps.js';

/** Files from this size on have their page-cache-layer pages dropped once promoted. */
const DROP_PAGES_MIN_BYTES = 1 << 20;

/** The overlay is remounted (see keepAll) at most this often. */
const REMOUNT_SPACING_MS = 1000;

/**
 * Rounds that found nothing to do (rclone's cache unchanged, looked at whole) come ever further
 * apart, up to this: a round looks at every directory of rclone's cache, and with a dataset of
 * 50,000 files in 500 directories promoted, rounds every 250 ms cost the idle driver 6-8% of a core
 * (0.63-0.82 CPU s in 10 s). A round that finds work brings the next one back to the keeper's
 * interval; a sweep after a quiet spell is seen within this much more.
 */
export const QUIET_INTERVAL_MS = 2000;

/**
 * How long a keeper round waits, at most, for rclone to show it the directories promoted into: it
 * answers from its own listing in milliseconds; a remote it must ask again and that is slow holds
 * no round longer (those directories are read again at their next promotion).
 */
const READ_DIRECTORIES_MS = 2000;

/** Files a keeper round promotes at once, and for how long at most per dataset. */
const PROMOTIONS_AT_ONCE = 16;
const PROMOTION_SLICE_MS = 300;

/**
 * How long attaching a copy (a stage) waits, at most, for the remote's top STAGE_LEVELS levels of
 * directories to be made in it; the levels below go on in the background.
 */
const OUTLINE_WAIT_MS = 1000;
const STAGE_LEVELS = 2;

/** What the copies need of a dataset's client: where its cache and its overlay are. */
export interface CopyHost {
  key: string;
  spec: DatasetSpec;
  cacheDir: string;
  /** The overlay whose upper lower layer is the copy. */
  overlay: string;
  /** The page-cache layer under the overlay, where files read on demand left their pages. */
  fuseMount: string;
  /** The cluster tier the dataset shares what it fetched through, when it uses one. */
  tier?: TierAccess | undefined;
  /** Told when pods sweep a directory on demand (see SweepDetector): a fill is worth it. */
  onSweep?: ((sweep: Sweep) => void) | undefined;
  /** The dataset's remote, whose directories the copy makes ahead of pods (see outline). */
  source: TransferSource;
}

interface Attached {
  host: CopyHost;
  copy: LocalCopy;
  index: RcloneCacheIndex;
  sweeps: SweepDetector;
  /** Files entered the copy since the overlay last dropped its cached names. */
  changed: boolean;
  /** Ends the listing of the remote's directories (see outline) when the copy is detached. */
  outlining: AbortController;
  /** What the outline left to fills below the stage's levels (once it walked them) and still does. */
  leftOut?: Set<string>;
  remountedAt: number;
  /**
   * The copy's top levels were made after the stage returned: pods may have looked one up first
   * and hold it from the engine alone as long as they keep a file below it open (see attach).
   * Every round remounts the overlay then, whether or not the copy changed, so that the first
   * pause of the pods' reads lets the overlay find the copy's directory.
   */
  lateTopLevels: boolean;
  /** Where no fill lists what pods read (sweeps off): directories found complete by promotion. */
  promotedDirectories?: PromotedDirectories;
}

/**
 * Keeps each dataset's copy: every round links files the engine completed into the copy, then
 * remounts the overlays whose copy changed, so names looked up before (and so served from the
 * engine) are looked up again and found in the copy.
 */
export class LocalCopies {
  private readonly attached = new Map<string, Attached>();
  private timer?: NodeJS.Timeout | undefined;
  private keeping = false;
  /** Rounds in a row that found nothing to do: the next one waits the longer (see start). */
  private quietRounds = 0;
  private round: Promise<void> = Promise.resolve();

  constructor(
    private readonly mounter: Mounter,
    private readonly runner: ProcessRunner,
    private readonly log: Logger,
    private readonly transfers: RcloneTransfers,
    /** Promotion, and the sweeps it shows, run this often: a sweep is seen within a round or two. */
    private readonly intervalMs = 250,
    private readonly sweepRule: SweepRule = DEFAULT_SWEEP_RULE,
  ) {}

  /** Starts keeping a dataset's copy (idempotent: a restarted client keeps its copy object). */
  async attach(host: CopyHost): Promise<LocalCopy> {
    const known = this.attached.get(host.key);
    if (known) {
      known.host = host;
      return known.copy;
    }
    const copy = new LocalCopy(host.cacheDir, this.runner, host.spec.ownership);
    await copy.prepare();
    const entry: Attached = {
      host,
      copy,
      index: new RcloneCacheIndex(host.cacheDir, host.spec),
      sweeps: new SweepDetector(this.sweepRule),
      changed: false,
      outlining: new AbortController(),
      remountedAt: 0,
      lateTopLevels: false,
    };
    copy.onChanged = () => {
      entry.changed = true;
    };
    // A fill that gave up a tree the outline had left to it: the outline takes it back, once.
    copy.onUnlisted = (base) => {
      if (entry.leftOut?.delete(base)) void this.outline(entry, { under: base });
    };
    this.attached.set(host.key, entry);
    this.wake();
    const { files, bytes } = copy.current();
    this.log.info({ dataset: host.key, files, bytes }, 'local copy attached');
    // The stage waits for the top levels only (the last level of a walk lists every directory to
    // find none below): a path a pod opens goes through one of them, held as long as any file
    // below it is open. A deeper directory looked up before the outline made it is held only
    // while a file right below it is, and a remount makes the overlay look it up again, in the
    // copy as well (measured on a shuffled epoch of 5,000 files in 50 directories below one:
    // 41 of 2,732 files the copy held were read through the engine when the stage waited for one
    // level, none of 2,796 when it waited for two).
    const topLevels = new Promise<void>((resolve) => {
      void this.outline(entry, { onTopLevels: resolve }).finally(resolve);
    });
    const late = await Promise.race([
      topLevels.then(() => false),
      sleep(OUTLINE_WAIT_MS, true, { ref: false }),
    ]);
    // Measured at 50,000 files in 500 directories on s3rver (its listings walk every object
    // below a prefix): the top levels took 29.7 s, pods reading from the start held `small/`
    // from the engine alone for both epochs, and the remote sent the tree twice (the fill's copy
    // unseen, rclone's evicted). Remounts go on until one comes while pods hold nothing below.
    entry.lateTopLevels = late;
    return copy;
  }

  /**
   * Makes the remote's directories in the copy, so that pods find them there from their first
   * look-up. An overlay merges a directory of both layers only if the copy had it when the
   * directory was first looked up; one looked up before is served from the engine alone, files
   * the copy gains below it included, until the kernel forgets its name, which never happens
   * while pods keep files below it open. Measured on a shuffled epoch of 5,000 files in 50
   * directories while a sweep fill ran: without the directories, all 2,790 files the copy held
   * when a pod opened them were read through the engine again; with them, none. `under`: the
   * directories below one the outline left to a fill that gave up listing it (see
   * LocalCopy.fillGaveUp), in one walk.
   */
  private async outline(
    entry: Attached,
    { onTopLevels, under }: { onTopLevels?: () => void; under?: string },
  ): Promise<void> {
    const started = Date.now();
    const directories = new DirectoryMaker(entry.copy);
    // A tree taken back is walked but for what other fills list.
    const walk =
      under === undefined
        ? this.stageWalk(entry, directories, onTopLevels)
        : { under, leaveOut: () => Promise.resolve(entry.copy.leftToFills()) };
    const fields = { dataset: entry.host.key, ...(under === undefined ? {} : { below: under }) };
    try {
      await this.transfers.listDirectories(
        entry.host.source,
        entry.outlining.signal,
        (dir) => directories.add(dir),
        { firstDepth: Number.POSITIVE_INFINITY, ...walk },
      );
      directories.flush();
      if (entry.outlining.signal.aborted) return;
      this.log.info(
        {
          ...fields,
          directories: directories.made,
          ...(under === undefined ? { leftToFills: entry.copy.leftToFills() } : {}),
          durationMs: Date.now() - started,
        },
        'local copy outlined',
      );
    } catch (err) {
      directories.flush();
      if (entry.outlining.signal.aborted) return;
      this.log.warn(
        { ...fields, err: String(err), durationMs: Date.now() - started },
        'local copy not outlined: directories the copy gains later may be read through the engine',
      );
    }
  }

  /** How a stage's outline walks: its top levels first, then what fills do not list below them. */
  private stageWalk(
    entry: Attached,
    directories: DirectoryMaker,
    onTopLevels?: () => void,
  ): DirectoryWalk {
    return {
      firstDepth: STAGE_LEVELS,
      onLevel: (depth) => {
        directories.flush();
        if (depth === STAGE_LEVELS) onTopLevels?.();
      },
      // Below the stage's levels, what a fill lists whole is left to it: a second reading of
      // those directories would cost the remote as much again (an HTTP server's index pages of
      // a tree of small files: 2% of its bytes). The fill a stage starts is told to the copy
      // once the stage has its top levels; a turn of the event loop lets it.
      leaveOut: async (depth) => {
        if (depth <= STAGE_LEVELS) return [];
        await setImmediate();
        entry.leftOut = new Set(entry.copy.leftToFills());
        return [...entry.leftOut];
      },
    };
  }

  /**
   * No fill lists what pods of the dataset read (sweeps are off): directories whose every file was
   * promoted are found complete from the engine's mount (see PromotedDirectories).
   */
  completeByPromotion(key: string): void {
    const entry = this.attached.get(key);
    if (!entry || entry.promotedDirectories) return;
    const { fuseMount } = entry.host;
    entry.promotedDirectories = new PromotedDirectories(entry.copy, (directories) =>
      readDirectories(this.runner, fuseMount, directories, READ_DIRECTORIES_MS),
    );
  }

  /** A sweep of the directory may be seen again (its fill failed). */
  forgetSweep(key: string, directory: string): void {
    this.attached.get(key)?.sweeps.forget(directory);
  }

  /** Whether pods opened the file through the dataset's engine (see RcloneCacheIndex.hasItem). */
  openedOnDemand(key: string, relative: string): boolean {
    return this.attached.get(key)?.index.hasItem(relative) ?? false;
  }

  get(key: string): LocalCopy | undefined {
    return this.attached.get(key)?.copy;
  }

  detach(key: string): void {
    this.attached.get(key)?.outlining.abort();
    this.attached.delete(key);
  }

  /**
   * Rounds follow each other `intervalMs` apart, each after the last one ended; after rounds that
   * found nothing to do, twice as far apart each time, up to QUIET_INTERVAL_MS.
   */
  start(): void {
    if (this.keeping) return;
    this.keeping = true;
    this.quietRounds = 0;
    this.schedule();
  }

  private schedule(): void {
    if (!this.keeping) return;
    const interval = Math.min(this.intervalMs * 2 ** this.quietRounds, QUIET_INTERVAL_MS);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.round = this.keepAll()
        .then((busy) => {
          this.quietRounds = busy ? 0 : this.quietRounds + 1;
        })
        .finally(() => this.schedule());
    }, interval);
    this.timer.unref();
  }

  /**
   * Rounds at the keeper's interval again, from now: a copy was just attached, and its pods may
   * start reading at once (a sweep is then seen a round or two into their first epoch).
   */
  private wake(): void {
    this.quietRounds = 0;
    if (this.timer === undefined) return; // a round runs: the next one follows it soon
    clearTimeout(this.timer);
    this.schedule();
  }

  async stop(): Promise<void> {
    for (const entry of this.attached.values()) entry.outlining.abort();
    this.keeping = false;
    clearTimeout(this.timer);
    this.timer = undefined;
    await this.round;
  }

  /**
   * One round: promotion for every copy, then visibility for those that changed. Whether it found
   * anything to do: files to promote, rclone's cache changed or not looked at whole, an overlay
   * to remount now or soon.
   */
  async keepAll(): Promise<boolean> {
    let busy = false;
    for (const entry of [...this.attached.values()]) {
      const started = Date.now();
      try {
        // Bounded, so that neither the remount below nor the next round's sweep evidence waits
        // for a long promotion: measured during a sweep fill on 2 busy cores, promoting 967 files
        // one at a time held a round for 6.6 s.
        const { promoted, quiet } = await promoteComplete(entry.copy, entry.index, {
          concurrency: PROMOTIONS_AT_ONCE,
          until: performance.now() + PROMOTION_SLICE_MS,
        });
        const { promotedDirectories } = entry;
        if (promotedDirectories) {
          promotedDirectories.promoted(promoted.map((file) => file.relative));
          const marked = await promotedDirectories.settle();
          if (marked > 0) {
            this.log.debug(
              { dataset: entry.host.key, directories: marked, durationMs: Date.now() - started },
              'directories promoted whole marked complete',
            );
          }
        }
        busy ||= !quiet || promoted.length > 0 || entry.changed;
        // A remount makes the overlay forget every name no pod holds: looked up again, they find
        // the copy's files. Not more often than REMOUNT_SPACING_MS, as pods look them up anew.
        const remount = entry.changed || entry.lateTopLevels;
        if (remount && Date.now() - entry.remountedAt >= REMOUNT_SPACING_MS) {
          entry.changed = false;
          entry.remountedAt = Date.now();
          await this.mounter.remount(entry.host.overlay).catch((err: unknown) => {
            entry.changed = true; // the overlay is being rebuilt: next round
            throw err;
          });
        }
        if (promoted.length > 0) {
          for (const sweep of entry.sweeps.observe(promoted.map((file) => file.relative))) {
            entry.host.onSweep?.(sweep);
          }
          // Fetched from the remote on demand: other nodes find them in the tier.
          entry.host.tier?.offer(promoted);
          // Read through FUSE, these files also sit in the page-cache layer's pages: a second copy
          // in RAM next to the (tmpfs) copy, no longer read now that the overlay serves the copy.
          // Dropping costs a FUSE open per file, so only big files are worth it; small files'
          // pages stay as reclaimable page cache.
          const { fuseMount } = entry.host;
          const big = promoted.filter((file) => file.size >= DROP_PAGES_MIN_BYTES);
          await dropCachedPages(
            this.runner,
            big.map((file) => join(fuseMount, file.relative)),
          );
          this.log.debug(
            {
              dataset: entry.host.key,
              promoted: promoted.length,
              durationMs: Date.now() - started,
            },
            'files promoted into the local copy',
          );
        }
      } catch (err) {
        this.log.warn({ dataset: entry.host.key, err: String(err) }, 'local copy round failed');
      }
    }
    return busy;
  }
}
