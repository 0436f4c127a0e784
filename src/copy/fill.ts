// Prefetch into the local copy: list the remote, pick what the globs match, copy it in bulk, install each file whole.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import picomatch from 'picomatch';
import type { RcloneTransfers, RemoteEntry, TransferSource } from '../engines/rclone-transfer.js';
import { processStartTime } from '../kernel/proc.js';
import { globBase } from '../prefetch/walk.js';
import { isSafeRelativePath, type LocalCopy } from './local-copy.js';

export interface FillProgress {
  /** Remote files the globs matched. */
  matched: number;
  /** Matched files the copy holds (copied now or already current). */
  files: number;
  /** Bytes copied from the remote by this fill. */
  bytes: number;
  errors: number;
  /** Matched files left out because the cache file system had no room for them. */
  noRoom: number;
  /** Remote names that cannot be local paths, skipped. */
  unsafeNames: number;
  /** Copies that no longer matched the remote and were removed (refresh). */
  stale: number;
  /** Time spent listing the remote, and transferring. */
  listSeconds: number;
  transferSeconds: number;
  done: boolean;
}

export interface FillOptions {
  copy: LocalCopy;
  transfers: RcloneTransfers;
  source: TransferSource;
  /** Content globs relative to the dataset root. */
  globs: string[];
  concurrency: number;
  /** Re-check every file of the copy against the remote first and drop those that changed. */
  refresh?: boolean;
  /** Ends the listing and the transfer (their rclone processes) when aborted. */
  signal?: AbortSignal;
  onProgress?: (progress: FillProgress) => void;
}

/** The bases of globs, without those inside another one (listed with it). */
function listingBases(globs: string[]): string[] {
  const bases = [...new Set(globs.map(globBase))].sort();
  return bases.filter(
    (base) =>
      !bases.some((other) => other !== base && (other === '' || base.startsWith(`${other}/`))),
  );
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
    bytes: 0,
    errors: 0,
    noRoom: 0,
    unsafeNames: 0,
    stale: 0,
    listSeconds: 0,
    transferSeconds: 0,
    done: false,
  };
  const listStarted = Date.now();
  const report = () => options.onProgress?.({ ...progress });
  if (options.refresh) progress.stale = await dropStale(copy, transfers, source, options.signal);

  const matches = options.globs.length > 0 ? picomatch(options.globs, { dot: true }) : () => false;
  const wanted: RemoteEntry[] = [];
  for (const base of listingBases(options.globs)) {
    await transfers.list(source, base, options.signal, (entry) => {
      if (!matches(entry.relative)) return;
      if (!isSafeRelativePath(entry.relative)) {
        progress.unsafeNames += 1;
        copy.countUnsafe();
        return;
      }
      progress.matched += 1;
      wanted.push(entry);
    });
  }
  const missing: RemoteEntry[] = [];
  for (const entry of wanted) {
    if (await copy.holds(entry.relative, entry)) progress.files += 1;
    else missing.push(entry);
  }
  let room = await copy.room();
  const admitted = new Map<string, RemoteEntry>();
  for (const entry of missing) {
    if (entry.size > room) {
      progress.noRoom += 1;
      copy.countNoRoom();
      continue;
    }
    room -= entry.size;
    admitted.set(entry.relative, entry);
  }
  progress.listSeconds = (Date.now() - listStarted) / 1000;
  report();
  const transferStarted = Date.now();
  if (admitted.size > 0) await transfer(options, admitted, progress, report);
  progress.transferSeconds = (Date.now() - transferStarted) / 1000;
  progress.done = true;
  report();
  return progress;
}

async function transfer(
  options: FillOptions,
  admitted: Map<string, RemoteEntry>,
  progress: FillProgress,
  report: () => void,
): Promise<void> {
  const { copy, transfers, source } = options;
  const workspace = await copy.workspace();
  try {
    const list = join(workspace, 'files');
    await writeFile(list, [...admitted.keys()].map((name) => `${name}\n`).join(''), {
      mode: 0o600,
    });
    const destination = join(workspace, 'data');
    let installs = Promise.resolve();
    let installed = 0;
    const result = await transfers.copy(
      source,
      list,
      destination,
      options.concurrency,
      options.signal,
      async (pid) => {
        const startTime = await processStartTime(pid);
        if (startTime !== undefined) await copy.recordOwner(workspace, { pid, startTime });
      },
      (relative) => {
        const entry = admitted.get(relative);
        if (!entry) return;
        admitted.delete(relative);
        installs = installs.then(async () => {
          const refused = await copy
            .installWritten(join(destination, relative), relative, entry)
            .catch(() => 'not-as-expected' as const);
          if (refused === undefined) {
            installed += 1;
            progress.files += 1;
            progress.bytes += entry.size;
          } else {
            progress.errors += 1;
          }
          if (installed % 64 === 0) report();
        });
      },
    );
    await installs;
    // Whatever rclone did not report copied is not in the copy; the engine still serves it.
    progress.errors += admitted.size;
    if (!result.ok && admitted.size === 0 && progress.errors === 0) progress.errors += 1;
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
  await transfers.list(source, '', signal, (entry) => remote.set(entry.relative, entry), true);
  const stale: string[] = [];
  await copy.walk('', (relative, stats) => {
    const entry = remote.get(relative);
    if (!entry || entry.size !== stats.size || Math.abs(entry.mtimeMs - stats.mtimeMs) >= 1) {
      stale.push(relative);
    }
  });
  for (const relative of stale) await copy.remove(relative);
  if (stale.length > 0) copy.onChanged();
  return stale.length;
}
