// A dataset's prefetch jobs (prefetches, sweep fills, checks of its copy) and the figures they add up to.
import type { PrefetchProgress } from './walk.js';

/** The job key of a dataset's copy check (prefetch jobs are keyed by their patterns). */
export const REFRESH = 'refresh';
/** Sweep fills are keyed by the directory they fill. */
export const SWEEP = 'sweep:';

export interface Job {
  progress: PrefetchProgress & {
    noRoom?: number;
    alreadyHeld?: number;
    readOnDemand?: number;
    completeDirectories?: number;
    stale?: number;
    tierFiles?: number;
    tierBytes?: number;
    listSeconds?: number;
    transferSeconds?: number;
  };
  running: boolean;
  /** When it ended (ms since the epoch). */
  endedAt?: number;
  stop(): void;
  /** Told once when the job has ended. */
  onEnd?: () => void;
}

export interface PrefetchStatus {
  matched: number;
  files: number;
  bytes: number;
  errors: number;
  /** Matched files the local copy had no room for. */
  noRoom: number;
  /** Prefetch jobs of the dataset still running. */
  running: number;
  /** Prefetch jobs of the dataset that finished. */
  completed: number;
  /** When the last of them finished (ms since the epoch). */
  lastCompletedAt?: number;
  /** Fills started because pods swept a directory on demand (included in the figures above). */
  sweeps: { seen: number; filled: number; files: number; bytes: number };
}

/**
 * The sum of a dataset's failed sweep fills' figures: their jobs are dropped (pods sweeping the
 * directory again start a new one), so a remote that keeps failing grows no list of them.
 */
export interface FailedSweeps {
  fills: number;
  matched: number;
  files: number;
  /** Files they installed (what the copy held already left out). */
  installed: number;
  bytes: number;
  errors: number;
  noRoom: number;
}

export function addFailed(sum: FailedSweeps | undefined, { progress }: Job): FailedSweeps {
  return {
    fills: (sum?.fills ?? 0) + 1,
    matched: (sum?.matched ?? 0) + progress.matched,
    files: (sum?.files ?? 0) + progress.files,
    installed: (sum?.installed ?? 0) + progress.files - (progress.alreadyHeld ?? 0),
    bytes: (sum?.bytes ?? 0) + progress.bytes,
    errors: (sum?.errors ?? 0) + progress.errors,
    noRoom: (sum?.noRoom ?? 0) + (progress.noRoom ?? 0),
  };
}

/** A dataset's figures: its jobs (its copy's check left out), its failed sweep fills, its sweeps seen. */
export function statusOf(
  jobs: ReadonlyMap<string, Job>,
  failed: FailedSweeps | undefined,
  sweepsSeen: number,
): PrefetchStatus {
  const status: PrefetchStatus = {
    matched: failed?.matched ?? 0,
    files: failed?.files ?? 0,
    bytes: failed?.bytes ?? 0,
    errors: failed?.errors ?? 0,
    noRoom: failed?.noRoom ?? 0,
    running: 0,
    completed: 0,
    sweeps: {
      seen: sweepsSeen,
      filled: failed?.fills ?? 0,
      files: failed?.installed ?? 0,
      bytes: failed?.bytes ?? 0,
    },
  };
  for (const [signature, { progress, running, endedAt }] of jobs) {
    if (signature === REFRESH) continue; // a check of the copy, not a prefetch
    status.matched += progress.matched;
    status.files += progress.files;
    status.bytes += progress.bytes;
    status.errors += progress.errors;
    status.noRoom += progress.noRoom ?? 0;
    if (running) status.running += 1;
    else if (progress.done) {
      status.completed += 1;
      status.lastCompletedAt = Math.max(status.lastCompletedAt ?? 0, endedAt ?? 0);
    }
    if (signature.startsWith(SWEEP)) {
      status.sweeps.filled += 1;
      status.sweeps.files += progress.files - (progress.alreadyHeld ?? 0);
      status.sweeps.bytes += progress.bytes;
    }
  }
  return status;
}

/** One job made of parts (copy and metadata walk): its progress is their sum. */
export function combine(parts: Job[], onEnd: () => void): Job {
  const sum = (): Job['progress'] => ({
    matched: parts.reduce((n, p) => n + p.progress.matched, 0),
    files: parts.reduce((n, p) => n + p.progress.files, 0),
    bytes: parts.reduce((n, p) => n + p.progress.bytes, 0),
    errors: parts.reduce((n, p) => n + p.progress.errors, 0),
    noRoom: parts.reduce((n, p) => n + (p.progress.noRoom ?? 0), 0),
    done: parts.every((p) => p.progress.done),
    tierFiles: parts.reduce((n, p) => n + (p.progress.tierFiles ?? 0), 0),
    tierBytes: parts.reduce((n, p) => n + (p.progress.tierBytes ?? 0), 0),
    listSeconds: parts.reduce((n, p) => n + (p.progress.listSeconds ?? 0), 0),
    transferSeconds: parts.reduce((n, p) => n + (p.progress.transferSeconds ?? 0), 0),
  });
  const job = {
    get progress() {
      return sum();
    },
    get running() {
      return parts.some((p) => p.running);
    },
    get endedAt() {
      const ends = parts.map((p) => p.endedAt);
      return ends.every((t) => t !== undefined) ? Math.max(...ends) : undefined;
    },
    stop: () => parts.forEach((p) => p.stop()),
  };
  let left = parts.length;
  for (const part of parts) {
    part.onEnd = () => {
      left -= 1;
      if (left === 0) onEnd();
    };
  }
  return job;
}
