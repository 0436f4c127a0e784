// Filling a dataset's copy together with the other nodes filling it now: each file is fetched from the remote by one of them, uploaded to the cluster tier at once, and taken from there by the others.
import { setTimeout as sleep } from 'node:timers/promises';
import type { RemoteEntry } from '../engines/rclone-transfer.js';
import type { TierAccess } from '../tier/cluster-tier.js';
import type { Room } from '../tier/layout.js';
import { nextChunk, ownerOf } from '../tier/split.js';
import { canBeTold, fromRemote, fromTier } from './fetch.js';
import type { FillOptions, FillProgress } from './fill.js';

/** How often a node with nothing of its own left looks for the others' uploads, at most. */
const POLL_MS = 1000;

/** Keeps of `admitted` what the room holds, in path order; the rest counts as left out for room. */
function admitWithin(
  room: Room,
  admitted: Map<string, RemoteEntry>,
  progress: FillProgress,
  copy: FillOptions['copy'],
): void {
  for (const entry of [...admitted.values()].sort(byPath)) {
    if (entry.size <= room.left) {
      room.left -= entry.size;
    } else {
      admitted.delete(entry.relative);
      progress.noRoom += 1;
      copy.countNoRoom();
    }
  }
}

const byPath = (a: RemoteEntry, b: RemoteEntry): number =>
  a.relative < b.relative ? -1 : a.relative > b.relative ? 1 : 0;

/**
 * Fetches the admitted files as one member of the dataset's fill in the tier. One loop takes what
 * the tier holds (what the others uploaded) as it appears; beside it, another fetches a chunk of
 * this node's share from the remote at a time (nextChunk) and uploads it while the next one comes,
 * or waits for the others when it has nothing to fetch. A node alone fetches everything, a chunk
 * at a time. Whatever goes wrong with the tier (unreachable, refusing) leaves the rest to the
 * remote, as a fill without a tier.
 */
export async function fetchTogether(
  options: FillOptions,
  tier: TierAccess,
  admitted: Map<string, RemoteEntry>,
  progress: FillProgress,
  held: Set<string>,
  scope: string,
  gatherWithin?: Room,
): Promise<void> {
  const { signal } = options;
  const started = performance.now();
  const group = tier.together.group(scope, (reason) => tier.failed(reason));
  const figures = { members: 1, ownFiles: 0, takenOverFiles: 0, waitSeconds: 0, remoteFiles: 0 };
  const tierFilesBefore = progress.tierFiles;
  let uploads: Promise<void> = Promise.resolve();
  const remote = async (batch: Map<string, RemoteEntry>, share: boolean) => {
    for (const relative of batch.keys()) admitted.delete(relative);
    const installed = await fromRemote(options, batch, progress, held, {
      offer: !share,
      onStarted: (pid) => group.watch(pid),
    });
    group.watch(undefined);
    figures.remoteFiles += installed.length;
    if (!share || installed.length === 0) return;
    group.noteWork();
    const files = installed.map((e) => ({ relative: e.relative, size: e.size }));
    uploads = uploads.then(async () => {
      if ((await tier.together.share(files, signal)) > 0) group.noteWork();
    });
  };
  try {
    // Files the tier cannot stand for (no time, no hash) are nobody's share: fetched here first.
    const untold = [...admitted.values()].filter((e) => !canBeTold(e));
    if (untold.length > 0) await remote(new Map(untold.map((e) => [e.relative, e])), false);
    let tierDown = await group.join().then(
      () => false,
      (err: Error) => {
        tier.failed(err.message);
        return true;
      },
    );
    const pause = () =>
      sleep(Math.min(POLL_MS, group.refreshMs / 2), undefined, { signal }).catch(() => undefined);
    if (gatherWithin && !tierDown) {
      // A warm-up: it fetches from the remote only with others (a job starting on many nodes).
      const until = performance.now() + 2 * group.refreshMs;
      while (group.members.members.length < 2 && performance.now() < until && !signal?.aborted) {
        await pause();
      }
      if (group.members.members.length < 2) return;
      admitWithin(gatherWithin, admitted, progress, options.copy);
    }
    // Two loops side by side: the remote's link and the tier's are different links.
    const fetcher = async () => {
      while (!signal?.aborted) {
        if (tierDown) {
          // The tier failed: the rest comes from the remote, as without a tier.
          if (admitted.size > 0) await remote(new Map(admitted), false);
          return;
        }
        const view = group.members;
        figures.members = Math.max(figures.members, view.members.length);
        const { chunk } = nextChunk([...admitted.values()].sort(byPath), view);
        if (chunk.length === 0) {
          if (admitted.size === 0) return;
          const waiting = performance.now();
          await pause();
          figures.waitSeconds += (performance.now() - waiting) / 1000;
          continue;
        }
        for (const entry of chunk) {
          if (ownerOf(entry.relative, view.members) === view.self) figures.ownFiles += 1;
          else figures.takenOverFiles += 1;
        }
        await remote(new Map(chunk.map((e) => [e.relative, e])), true);
      }
    };
    const taker = async () => {
      while (!signal?.aborted && !tierDown && admitted.size > 0) {
        // Alone, nothing new reaches the tier but what this node uploads.
        if (group.members.members.length > 1) {
          await fromTier(options, tier, admitted, progress, held);
        }
        if (!(await tier.check())) tierDown = true;
        else if (admitted.size > 0) await pause();
      }
    };
    // What the tier holds already is taken before anything is fetched from the remote.
    if (!tierDown) await fromTier(options, tier, admitted, progress, held);
    await Promise.all([taker(), fetcher()]);
  } finally {
    await uploads.catch(() => undefined);
    await group.leave();
    tier.together.ended({
      ...figures,
      tierFiles: progress.tierFiles - tierFilesBefore,
      durationSeconds: (performance.now() - started) / 1000,
    });
  }
}
