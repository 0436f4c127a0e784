// Background prefetch per dataset: bulk copy into the local copy, or reads through the engine's mount in a worker process.
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { Semaphore } from 'async-mutex';
import type { Logger } from 'pino';
import { BESIDE_READERS, fillCopy } from '../copy/fill.js';
import type { LocalCopy } from '../copy/local-copy.js';
import type { Sweep } from '../copy/sweeps.js';
import type { PrefetchPattern } from '../dataset/patterns.js';
import type { RcloneTransfers } from '../engines/rclone-transfer.js';
import type { TransferSource } from '../engines/transfer-source.js';
import type { TierAccess } from '../tier/cluster-tier.js';
import {
  addFailed,
  combine,
  REFRESH,
  statusOf,
  SWEEP,
  type FailedSweeps,
  type Job,
  type PrefetchStatus,
} from './jobs.js';
import type { PrefetchProgress } from './walk.js';

/** dist/ and src/ are siblings, so this resolves to the built worker from either. */
const WORKER = fileURLToPath(new URL('../../dist/prefetch/worker.js', import.meta.url));

/**
 * Where a dataset's prefetch goes: its engine's own mount, and its local copy when it has one
 * (filled from the cluster tier first when the dataset uses one).
 */
export interface PrefetchTarget {
  key: string;
  engineMount: string;
  copy?: {
    copy: LocalCopy;
    source: TransferSource;
    tier?: TierAccess | undefined;
    /** Whether pods opened the file on demand (the engine fetches it: a sweep fill leaves it). */
    openedOnDemand?: (relative: string) => boolean;
    /** A sweep of the directory failed to fill: pods sweeping it again make a new sweep. */
    forgetSweep?: (directory: string) => void;
    /** No fill lists what pods read (sweeps are off): the copy finds its complete directories. */
    withoutSweeps?: () => void;
  };
}

/** What a dataset with a tier and no prefetch takes from the tier: all it holds. */
const EVERYTHING: PrefetchPattern = { glob: '**', metadataOnly: false };
const TIER_ONLY = 'tier-only:';

/** Shares of the node's transfer budget (see Prefetcher.budget). */
const BUDGET = 1024;

const signatureOf = (patterns: PrefetchPattern[]): string =>
  JSON.stringify(patterns.map((p) => `${p.metadataOnly ? 'meta:' : ''}${p.glob}`).sort());

/**
 * Warms datasets in the background: each distinct pattern set once per dataset on this node,
 * however many volumes stage it at once. Content patterns of a dataset with a local copy are
 * copied in bulk by rclone into the copy; otherwise (and for metadata-only patterns) a worker
 * process reads through the engine's mount, where a hung mount can only block the worker.
 */
export class Prefetcher {
  private readonly datasets = new Map<string, Map<string, Job>>();
  /** Per dataset, the running check of its copy against the remote. */
  private readonly checks = new Map<string, Promise<void>>();
  /** Datasets whose volumes keep exactly their prefetch list, or turned sweeps off. */
  private readonly noSweeps = new Set<string>();
  private readonly sweepsSeen = new Map<string, number>();
  /**
   * Per dataset, what its sweep fills that failed did: their jobs are dropped (pods sweeping the
   * directory again start a new one), so a remote that keeps failing grows no list of them.
   */
  private readonly failedSweeps = new Map<string, FailedSweeps>();
  /**
   * The node's transfer budget. Prefetches and warm-ups take one share each and run side by side,
   * as they always did; a sweep fill's batch takes its part of all of it (its batches in flight
   * take it all), so a sweep moves files only when nothing else does and never crowds out a
   * prefetch; two sweeps take turns.
   */
  private readonly budget = new Semaphore(BUDGET);

  constructor(
    private readonly log: Logger,
    private readonly concurrency: number,
    private readonly transfers: RcloneTransfers,
    private readonly worker = WORKER,
  ) {}

  /**
   * Warms the dataset with `patterns`. Without any, a dataset with a cluster tier still takes what
   * the tier holds of it (reads on demand cannot ask the tier: rclone reads only the remote), so
   * what other nodes fetched is local before pods ask; patterns say exactly what to warm instead.
   */
  request(
    target: PrefetchTarget,
    patterns: PrefetchPattern[],
    { autoPrefetch = false }: { autoPrefetch?: boolean } = {},
  ): void {
    // Sweep fills only where no volume of the dataset turned them off, and none has a prefetch
    // list (a list says exactly what to warm).
    if (patterns.length > 0 || !autoPrefetch) {
      this.noSweeps.add(target.key);
      target.copy?.withoutSweeps?.();
    }
    const tierOnly = patterns.length === 0 && target.copy?.tier !== undefined;
    if (patterns.length === 0 && !tierOnly) return;
    const wanted = tierOnly ? [EVERYTHING] : patterns;
    const jobs = this.datasets.get(target.key) ?? new Map<string, Job>();
    this.datasets.set(target.key, jobs);
    const signature = `${tierOnly ? TIER_ONLY : ''}${signatureOf(wanted)}`;
    if (tierOnly) {
      // A dataset some volume prefetches is warmed by its patterns only. A finished warm-up runs
      // again at the next stage: other nodes may have shared more since (nodes started together).
      const prefetched = [...jobs.keys()].some(
        (k) => k !== REFRESH && k !== signature && !k.startsWith(SWEEP),
      );
      if (prefetched || jobs.get(signature)?.running) return;
    } else if (jobs.has(signature)) return;
    const content = wanted.filter((p) => !p.metadataOnly);
    const toCopy = target.copy && content.length > 0 ? content : [];
    const throughMount = target.copy ? wanted.filter((p) => p.metadataOnly) : wanted;
    const started = Date.now();
    const parts: Job[] = [];
    if (target.copy && toCopy.length > 0) {
      parts.push(this.copyJob(target, toCopy, target.copy, { tierOnly }));
    }
    if (throughMount.length > 0) parts.push(this.workerJob(target, throughMount));
    const job = combine(parts, () => {
      const { matched, files, bytes, errors, noRoom, done, listSeconds, transferSeconds } =
        job.progress;
      const { tierFiles, tierBytes } = job.progress;
      const fields = {
        listSeconds,
        transferSeconds,
        ...(target.copy?.tier ? { tierFiles, tierBytes } : {}),
        dataset: target.key,
        matched,
        files,
        bytes,
        errors,
        noRoom,
        mode: tierOnly ? 'from the cluster tier' : target.copy ? 'local copy' : 'through the mount',
        durationMs: Date.now() - started,
        mbPerSecond: Number(
          (bytes / 1e6 / Math.max(0.001, (Date.now() - started) / 1000)).toFixed(1),
        ),
      };
      if (done) this.log.info(fields, 'prefetch completed');
      else this.log.warn(fields, 'prefetch stopped early');
    });
    jobs.set(signature, job);
    this.log.info(
      {
        dataset: target.key,
        patterns: wanted.map((p) => p.glob),
        copy: target.copy !== undefined,
        ...(tierOnly ? { tierOnly } : {}),
      },
      'prefetch started',
    );
  }

  /**
   * Pods are sweeping a directory on demand: it is filled in bulk into the copy (tier first, then
   * the remote), as a prefetch of `directory/**` would, while they go on reading; what the fill
   * installs before they reach it is served by the kernel.
   */
  sweep(target: PrefetchTarget, sweep: Sweep): void {
    if (!target.copy || this.noSweeps.has(target.key)) return;
    this.sweepsSeen.set(target.key, (this.sweepsSeen.get(target.key) ?? 0) + 1);
    const glob = sweep.directory === '' ? '**' : `${sweep.directory}/**`;
    const jobs = this.datasets.get(target.key) ?? new Map<string, Job>();
    this.datasets.set(target.key, jobs);
    const signature = `${SWEEP}${glob}`;
    if (jobs.has(signature)) return;
    const started = Date.now();
    const job = this.copyJob(target, [{ glob, metadataOnly: false }], target.copy, {
      skip: target.copy.openedOnDemand,
      shares: BUDGET / (BESIDE_READERS.inFlight ?? 1),
    });
    job.onEnd = () => {
      const { files, bytes, noRoom, errors, done, readOnDemand, completeDirectories } =
        job.progress;
      // A fill that failed (the remote down, say) is tried again at the next sweep of its
      // directory: pods reading it whole on demand again say the remote answers. A dataset whose
      // volumes are gone (its jobs dropped) is not.
      const again = !done && this.datasets.get(target.key)?.get(signature) === job;
      if (again) {
        // Its figures stay (it was started; what it installed is in the copy, its errors count),
        // folded into the dataset's failed sweeps: the next sweep of the directory starts a fill.
        jobs.delete(signature);
        this.failedSweeps.set(target.key, addFailed(this.failedSweeps.get(target.key), job));
        target.copy?.forgetSweep?.(sweep.directory);
      }
      this.log.info(
        {
          dataset: target.key,
          directory: sweep.directory,
          files,
          bytes,
          noRoom,
          readOnDemand,
          completeDirectories,
          errors,
          done,
          ...(again ? { again: 'at the next sweep of the directory' } : {}),
          durationMs: Date.now() - started,
        },
        'sweep fill ended',
      );
    };
    jobs.set(signature, job);
    this.log.info(
      {
        dataset: target.key,
        directory: sweep.directory,
        evidence: `${sweep.files} files from ${sweep.branches} branches read whole on demand within ${sweep.windowMs / 1000}s`,
      },
      'sweep seen: filling the directory into the local copy',
    );
  }

  /**
   * Checks the dataset's copy against the remote once: copies whose size or time changed, or
   * whose file is gone, are dropped (and served through the engine, or copied again by prefetch).
   */
  refresh(target: PrefetchTarget): void {
    if (!target.copy) return;
    const jobs = this.datasets.get(target.key) ?? new Map<string, Job>();
    this.datasets.set(target.key, jobs);
    if (jobs.has(REFRESH)) return;
    const started = Date.now();
    const job = this.copyJob(target, [], target.copy, { refresh: true });
    job.onEnd = () =>
      this.log.info(
        { dataset: target.key, stale: job.progress.stale, durationMs: Date.now() - started },
        'local copy checked against the remote',
      );
    jobs.set(REFRESH, job);
  }

  private copyJob(
    target: PrefetchTarget,
    globs: PrefetchPattern[],
    { copy, source, tier }: NonNullable<PrefetchTarget['copy']>,
    {
      refresh = false,
      tierOnly = false,
      skip,
      shares = 1,
    }: {
      refresh?: boolean;
      tierOnly?: boolean;
      skip?: (relative: string) => boolean;
      /** Of the node's transfer budget, per batch. */
      shares?: number;
    } = {},
  ): Job {
    const abort = new AbortController();
    const job: Job = {
      progress: { matched: 0, files: 0, bytes: 0, errors: 0, noRoom: 0, done: false },
      running: true,
      stop: () => abort.abort(),
    };
    // A check of the copy against the remote goes first: a prefetch must not take a stale copy for
    // a current one.
    const checked = refresh
      ? Promise.resolve()
      : (this.checks.get(target.key) ?? Promise.resolve());
    const run = checked.then(() =>
      fillCopy({
        copy,
        transfers: this.transfers,
        source,
        tier,
        globs: globs.map((p) => p.glob),
        concurrency: this.concurrency,
        refresh,
        tierOnly,
        skip,
        // A check of the copy only lists: it never waits for other fills' transfers.
        transferBudget: refresh ? undefined : (work) => this.budget.runExclusive(work, shares),
        signal: abort.signal,
        onProgress: (progress) => {
          job.progress = progress;
        },
      }),
    );
    void run
      .catch((err: unknown) => {
        this.log.warn(
          { dataset: target.key, err: String(err) },
          'prefetch into the local copy failed',
        );
        job.progress = { ...job.progress, errors: job.progress.errors + 1, done: false };
      })
      .finally(() => {
        job.running = false;
        job.endedAt = Date.now();
        job.onEnd?.();
      });
    if (refresh) {
      this.checks.set(
        target.key,
        run.then(
          () => undefined,
          () => undefined,
        ),
      );
    }
    return job;
  }

  private workerJob(target: PrefetchTarget, patterns: PrefetchPattern[]): Job {
    const child = execa(
      process.execPath,
      [this.worker, target.engineMount, String(this.concurrency), JSON.stringify(patterns)],
      {
        stdin: 'ignore',
        stderr: 'ignore',
        buffer: false,
        reject: false,
        extendEnv: false,
        env: { PATH: process.env.PATH ?? '/usr/bin:/bin' },
      },
    );
    const job: Job = {
      progress: { matched: 0, files: 0, bytes: 0, errors: 0, done: false },
      running: true,
      stop: () => child.kill('SIGKILL'),
    };
    if (child.stdout) {
      createInterface({ input: child.stdout }).on('line', (line) => {
        try {
          job.progress = JSON.parse(line) as PrefetchProgress;
        } catch {
          // a partial line of a killed worker
        }
      });
    }
    void child.then(() => {
      job.running = false;
      job.endedAt = Date.now();
      job.onEnd?.();
    });
    return job;
  }

  status(key: string): PrefetchStatus | undefined {
    const jobs = this.datasets.get(key) ?? new Map<string, Job>();
    const failed = this.failedSweeps.get(key);
    const prefetched = failed !== undefined || [...jobs.keys()].some((s) => s !== REFRESH);
    if (!prefetched && !this.sweepsSeen.has(key)) return undefined;
    return statusOf(jobs, failed, this.sweepsSeen.get(key) ?? 0);
  }

  /** The dataset's client is gone: stop its jobs; a later stage prefetches again. */
  forget(key: string): void {
    for (const job of this.datasets.get(key)?.values() ?? []) job.stop();
    this.datasets.delete(key);
    this.checks.delete(key);
    this.noSweeps.delete(key);
    this.sweepsSeen.delete(key);
    this.failedSweeps.delete(key);
  }

  close(): void {
    for (const key of [...this.datasets.keys()]) this.forget(key);
  }
}
