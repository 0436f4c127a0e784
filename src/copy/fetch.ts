// The two sources of a fill's files: the cluster tier (what it holds, checked against the remote's listing) and the remote itself (rclone copy into a workspace); each file installed whole as it arrives.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { CopyResult } from '../engines/rclone-copy-log.js';
import { copyListsDirectories, type RemoteEntry } from '../engines/rclone-transfer.js';
import { processStartTime } from '../kernel/proc.js';
import type { TierAccess } from '../tier/cluster-tier.js';
import type { Room } from '../tier/layout.js';
import type { FillOptions, FillProgress } from './fill.js';
import type { LocalCopy } from './local-copy.js';

/**
 * A tier object stands for a remote file only when its time or MD5 can be compared with the
 * remote's: other files are neither taken from the tier nor uploaded to it.
 */
export const canBeTold = (entry: RemoteEntry): boolean =>
  !Number.isNaN(entry.mtimeMs) || entry.md5 !== undefined;

/**
 * Takes from the cluster tier what it holds of the admitted files, each checked against the
 * remote's listing before it is installed; the rest stays admitted, for the remote. A tier file
 * that is not the remote's is no error of the fill: the remote has it.
 */
export async function fromTier(
  options: FillOptions,
  tier: TierAccess,
  admitted: Map<string, RemoteEntry>,
  progress: FillProgress,
  held: Set<string>,
  room?: Room,
  onStarted?: (pid: number) => void,
): Promise<void> {
  if (!(await tier.check())) return;
  const eligible = [...admitted.values()].filter(canBeTold);
  if (eligible.length === 0) return;
  const { copy } = options;
  const taken = { files: 0, bytes: 0 };
  // A full cache file system has no room for a workspace: the files stay admitted, and the
  // remote's transfer counts them left out for want of room.
  const workspace = await copy.workspace().catch((err: unknown) => {
    if (isFull(err)) return undefined;
    throw err;
  });
  if (workspace === undefined) return;
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
        onStarted: (pid) => {
          onStarted?.(pid);
          return recordOwner(copy, workspace, pid);
        },
      },
      room,
    );
    tier.rejected(result.rejected);
    leftOutForRoom(copy, progress, result.noRoom);
    if (!result.ok && !options.signal?.aborted) tier.failed(result.reason);
  } finally {
    await copy.releaseWorkspace(workspace);
  }
  progress.tierFiles += taken.files;
  progress.tierBytes += taken.bytes;
  tier.read(taken.files, taken.bytes);
}

/** Whether a write failed because the cache file system (or its quota) is full. */
export const isFull = (err: unknown): boolean => {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return code === 'ENOSPC' || code === 'EDQUOT';
};

/** Counts files a fill left out for want of room, in its progress and in the copy's figures. */
export function leftOutForRoom(copy: LocalCopy, progress: FillProgress, files = 1): void {
  progress.noRoom += files;
  copy.countNoRoom(files);
}

/** Names the process writing into a workspace, so a restarted driver can end it by PID. */
async function recordOwner(copy: LocalCopy, workspace: string, pid: number): Promise<void> {
  const startTime = await processStartTime(pid);
  if (startTime !== undefined) await copy.recordOwner(workspace, { pid, startTime });
}

/** The deepest directory holding every one of these files ('' for the root). */
export function deepestCommonDirectory(files: Iterable<string>): string {
  let common: string[] | undefined;
  for (const file of files) {
    const parts = file.split('/').slice(0, -1);
    if (common === undefined) common = parts;
    let same = 0;
    while (same < common.length && same < parts.length && common[same] === parts[same]) same += 1;
    common.length = same;
    if (same === 0) break;
  }
  return (common ?? []).join('/');
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
  onStarted?: (pid: number) => void,
): Promise<CopyResult & { installed: RemoteEntry[] }> {
  const { copy, transfers } = options;
  const report = () => options.onProgress?.({ ...progress });
  const workspace = await copy.workspace();
  const installed: RemoteEntry[] = [];
  try {
    const list = join(workspace, 'files');
    // Over HTTP files are fetched by name (nothing is listed): the copy starts at the root there.
    const within = copyListsDirectories(options.source)
      ? deepestCommonDirectory(admitted.keys())
      : '';
    const below = within === '' ? 0 : within.length + 1;
    await writeFile(list, [...admitted.keys()].map((name) => `${name.slice(below)}\n`).join(''), {
      mode: 0o600,
    });
    const destination = join(workspace, 'data');
    const result = await transfers.copy(
      options.source,
      { localDir: destination },
      { listFile: list, within },
      {
        transfers: options.concurrency,
        signal: options.signal,
        // Each file's size (and time, where listed) is checked against the listing at install.
        listed: true,
        onStarted: (pid) => {
          onStarted?.(pid);
          return recordOwner(copy, workspace, pid);
        },
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

/**
 * Fetches the admitted files from the remote; what is not in the copy afterwards counts as an error
 * (the engine still serves it). What was installed is offered to the tier, uploaded later.
 */
export async function fromRemote(
  options: FillOptions,
  admitted: Map<string, RemoteEntry>,
  progress: FillProgress,
  held: Set<string>,
  { offer = true, onStarted }: { offer?: boolean; onStarted?: (pid: number) => void } = {},
): Promise<RemoteEntry[]> {
  // The cache file system full (the engine went past its share between its own polls) is no
  // failure of the fill: what could not be written is left out for want of room, as the room
  // would have left it out, and the next batch goes on (the engine may have freed room by then).
  const attempt = () =>
    transfer(options, admitted, progress, held, onStarted).catch((err: unknown) => {
      if (!isFull(err)) throw err;
      return { ok: true, reason: '', corrupted: [], noSpace: [...admitted.keys()], installed: [] };
    });
  let fetched = await attempt();
  // rclone makes one attempt (see ONE_ATTEMPT): a second one of its own would fetch again every
  // file already taken away, so the second asks only for what is still missing, and only when the
  // first got files through (one that got none met a remote down: a second doubles the wait).
  const partly = fetched.installed.length > 0;
  if (!fetched.ok && partly && admitted.size > 0 && !options.signal?.aborted) {
    const again = await attempt();
    fetched = {
      ...again,
      installed: [...fetched.installed, ...again.installed],
      noSpace: [...fetched.noSpace, ...again.noSpace],
    };
  }
  let outOfRoom = 0;
  for (const relative of fetched.noSpace) if (admitted.delete(relative)) outOfRoom += 1;
  leftOutForRoom(options.copy, progress, outOfRoom);
  // Whatever rclone did not report copied is not in the copy; the engine still serves it.
  progress.errors += admitted.size;
  if (!fetched.ok && admitted.size === 0 && progress.errors === 0) progress.errors += 1;
  options.tier?.fetched(fetched.installed.reduce((n, e) => n + e.size, 0));
  if (offer) options.tier?.offer(fetched.installed.filter(canBeTold));
  return fetched.installed;
}
