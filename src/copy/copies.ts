// The node's local copies: one per read-only dataset with a copy layer, kept growing by promotion and made visible to the overlay.
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { DatasetSpec } from '../dataset/params.js';
import { RcloneCacheIndex } from '../engines/rclone-cache.js';
import type { Mounter } from '../kernel/mounter.js';
import { dropCachedPages } from '../kernel/page-cache.js';
import type { ProcessRunner } from '../kernel/runner.js';
import type { TierAccess } from '../tier/cluster-tier.js';
import { LocalCopy } from './local-copy.js';
import { promoteComplete } from './promote.js';
import { DEFAULT_SWEEP_RULE, SweepDetector, type Sweep, type SweepRule } from './sweeps.js';

/** Files from this size on have their page-cache-layer pages dropped once promoted. */
const DROP_PAGES_MIN_BYTES = 1 << 20;

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
}

interface Attached {
  host: CopyHost;
  copy: LocalCopy;
  index: RcloneCacheIndex;
  sweeps: SweepDetector;
  /** Files entered the copy since the overlay last dropped its cached names. */
  changed: boolean;
}

/**
 * Keeps each dataset's copy: every round links files the engine completed into the copy, then
 * remounts the overlays whose copy changed, so names looked up before (and so served from the
 * engine) are looked up again and found in the copy.
 */
export class LocalCopies {
  private readonly attached = new Map<string, Attached>();
  private timer?: NodeJS.Timeout;
  private round: Promise<void> = Promise.resolve();

  constructor(
    private readonly mounter: Mounter,
    private readonly runner: ProcessRunner,
    private readonly log: Logger,
    private readonly intervalMs = 1000,
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
    };
    copy.onChanged = () => {
      entry.changed = true;
    };
    this.attached.set(host.key, entry);
    const { files, bytes } = copy.current();
    this.log.info({ dataset: host.key, files, bytes }, 'local copy attached');
    return copy;
  }

  /** Whether pods opened the file through the dataset's engine (see RcloneCacheIndex.hasItem). */
  openedOnDemand(key: string, relative: string): boolean {
    return this.attached.get(key)?.index.hasItem(relative) ?? false;
  }

  get(key: string): LocalCopy | undefined {
    return this.attached.get(key)?.copy;
  }

  detach(key: string): void {
    this.attached.delete(key);
  }

  start(): void {
    this.timer ??= setInterval(() => {
      this.round = this.round.then(() => this.keepAll());
    }, this.intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await this.round;
  }

  /** One round: promotion for every copy, then visibility for those that changed. */
  async keepAll(): Promise<void> {
    for (const entry of [...this.attached.values()]) {
      const started = Date.now();
      try {
        const promoted = await promoteComplete(entry.copy, entry.index);
        if (entry.changed) {
          entry.changed = false;
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
  }
}
