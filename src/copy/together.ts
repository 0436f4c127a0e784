// Filling a dataset's copy together with the other nodes filling it now: each file is fetched from the remote by one of them, uploaded to the cluster tier at once, and taken from there by the others.
import { setTimeout as sleep } from 'node:timers/promises';
import type { RemoteEntry } from '../engines/rclone-transfer.js';
import type { TierAccess } from '../tier/cluster-tier.js';
import type { Room } from '../tier/layout.js';
import { claimOf, lookIntervalMs, MAX_CLAIMS } from '../tier/members.js';
import { claimed, inOthersHands, nextChunk, ownerOf, UPLOAD_LAG } from '../tier/split.js';
import { messageOf } from '../util/errors.js';
import { canBeTold, fromRemote, fromTier, leftOutForRoom } from './fetch.js';
import type { FillOptions, FillProgress } from './fill.js';

/** How often a node waiting for the others sees again who fills what (no request: its view). */
const POLL_MS = 1000;

/** Keeps of `admitted` what the room holds, in path order; the rest counts as left out for room. */
function admitWithin(
  room: Room,
  admitted: Map<string, RemoteEntry>,
  progress: FillProgress,
  copy: FillOptions['copy'],
): void {
  for (const entry of [...admitted.values()].sort(byPath)) {
    if (!room.take(entry)) {
      admitted.delete(entry.relative);
      leftOutForRoom(copy, progress);
    }
  }
}

/**
 * Files of this node's share that the members filling before it may hold (inOthersHands): fetched
 * last, once they stop arriving in the tier, that is once two takes begun after the last arrival
 * brought none and two refresh intervals passed. A clock alone gave up on files a take was
 * bringing: on a loaded node one take of a few packs lasts seconds (a CI run fetched 64 of 94 such
 * files twice).
 */
class HeldBack {
  /** The files still waited for; emptied when the wait ends. */
  readonly files: Set<string>;
  private left: number;
  private since = performance.now();
  private emptyTakes = 0;

  constructor(
    private readonly admitted: ReadonlyMap<string, RemoteEntry>,
    private readonly waitMs: number,
  ) {
    this.files = new Set();
    this.left = 0;
  }

  /** Waits for these from now on. */
  hold(files: ReadonlySet<string>): void {
    for (const relative of files) this.files.add(relative);
    Object.assign(this, { left: this.files.size, since: performance.now(), emptyTakes: 0 });
  }

  /** A take begun at `began` ended: did it bring any of them? */
  taken(began: number): void {
    if (this.files.size === 0) return;
    const left = this.count();
    if (left < this.left) {
      Object.assign(this, { left, since: performance.now(), emptyTakes: 0 });
    } else if (began >= this.since) {
      this.emptyTakes += 1;
    }
  }

  /** Whether they may still come (they are then fetched after the rest of the share). */
  waiting(): boolean {
    if (this.files.size === 0) return false;
    const recent = performance.now() - this.since < this.waitMs;
    if (this.count() > 0 && (recent || this.emptyTakes < 2)) return true;
    this.files.clear();
    return false;
  }

  private count(): number {
    return [...this.files].filter((relative) => this.admitted.has(relative)).length;
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
 * remote, as a fill without a tier. With `gatherWithin` (a warm-up without prefetch, which took
 * what the tier held already), it fetches from the remote only if another node joins within two
 * refresh intervals, and only as much as that room holds.
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
  const figures = {
    members: 1,
    ownFiles: 0,
    takenOverFiles: 0,
    waitSeconds: 0,
    remoteFiles: 0,
    heldBackFiles: 0,
    heldBackFetched: 0,
  };
  const tierFilesBefore = progress.tierFiles;
  /** Every member seen during this fill, this node included. */
  const seen = new Set<string>();
  /** Files of others' shares looked for in the tier before this node fetches them itself. */
  const askedTier = new Set<string>();
  /** Claims other members held during this fill: their files are looked for in the tier first. */
  const claimedElsewhere = new Set<string>();
  /** Takes from the tier what it holds of the admitted files, one take at a time. */
  let taking: Promise<void> = Promise.resolve();
  let takes = 0;
  /**
   * Processes of the first take (`working`): they show this node at work to the others once it has
   * joined, not before (members joining together see each other's progress unmoved: none of them
   * is earlier than the others, see MemberView.earlier).
   */
  const firstTake = { pids: new Set<number>(), joined: false };
  const heldBack = new HeldBack(admitted, 2 * group.refreshMs);
  const take = (working = false): Promise<void> => {
    takes += 1;
    let began = 0;
    const watch = working
      ? (pid: number) => {
          firstTake.pids.add(pid);
          if (firstTake.joined) group.watch(pid);
        }
      : undefined;
    taking = taking
      .then(() => {
        began = performance.now();
        return timed('take', () =>
          fromTier(options, tier, admitted, progress, held, undefined, watch),
        );
      })
      .finally(() => {
        takes -= 1;
        heldBack.taken(began);
        if (!working) return;
        for (const pid of firstTake.pids) group.unwatch(pid);
        firstTake.pids.clear();
      });
    return taking;
  };
  let uploads: Promise<void> = Promise.resolve();
  /** Uploads queued or under way, oldest first (they run one after the other). */
  const lagging: Promise<void>[] = [];
  /** Seconds spent fetching from the remote, uploading for the others, taking from the tier. */
  const seconds = { fetch: 0, upload: 0, take: 0 };
  const timed = async <T>(part: keyof typeof seconds, work: () => Promise<T>): Promise<T> => {
    const began = performance.now();
    try {
      return await work();
    } finally {
      seconds[part] += (performance.now() - began) / 1000;
    }
  };
  const remote = async (batch: Map<string, RemoteEntry>, share: boolean, claim?: string) => {
    const release = () => {
      if (claim !== undefined) group.release(claim);
    };
    for (const relative of batch.keys()) admitted.delete(relative);
    let fetching: number | undefined;
    const installed = await timed('fetch', () =>
      fromRemote(options, batch, progress, held, {
        offer: !share,
        onStarted: (pid) => {
          fetching = pid;
          group.watch(pid);
        },
      }),
    );
    if (fetching !== undefined) group.unwatch(fetching);
    figures.remoteFiles += installed.length;
    if (!share || installed.length === 0) {
      release();
      return;
    }
    group.noteWork();
    const files = installed.map((e) => ({ relative: e.relative, size: e.size }));
    const uploaded = group.uploading();
    // A claimed file is held until it is in the tier: the others wait for it there.
    const upload = uploads
      .then(() => timed('upload', () => tier.together.share(files, signal)))
      .then(uploaded, uploaded)
      .finally(() => {
        release();
        const at = lagging.indexOf(upload);
        if (at >= 0) lagging.splice(at, 1);
      });
    uploads = upload;
    lagging.push(upload);
  };
  try {
    // Files the tier cannot stand for (no time, no hash) are nobody's share: fetched here first.
    const untold = [...admitted.values()].filter((e) => !canBeTold(e));
    if (untold.length > 0) await remote(new Map(untold.map((e) => [e.relative, e])), false);
    if (admitted.size === 0) return;
    // What the tier holds already comes first, and the node joins meanwhile: staged while others
    // are mid-fill, it is left its share at once (a take of what they uploaded lasts seconds, in
    // which they would fetch it all). Its take shows it at work once joined, not stalled; its
    // fetches start once the take is done (the take may hold them). One that finds everything
    // there leaves.
    const taken = gatherWithin ? undefined : take(true);
    let tierDown = await group.join().then(
      () => false,
      (err: Error) => {
        tier.failed(err.message);
        return true;
      },
    );
    firstTake.joined = true;
    const joinedAt = performance.now();
    for (const pid of firstTake.pids) group.watch(pid);
    await taken;
    if (admitted.size === 0) return;
    // Files of this node's share the members filling before it may hold: fetched last.
    const inHand = inOthersHands([...admitted.values()].sort(byPath), group.members);
    heldBack.hold(inHand);
    figures.heldBackFiles = inHand.size;
    const pause = (ms = Math.min(POLL_MS, group.refreshMs / 2)) =>
      sleep(ms, undefined, { signal }).catch(() => undefined);
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
    const fetcher = async (worker: number) => {
      while (!signal?.aborted) {
        if (tierDown) {
          // The tier failed: the rest comes from the remote, as without a tier.
          if (admitted.size > 0) await remote(new Map(admitted), false);
          return;
        }
        const view = group.members;
        // Fetched files not yet in the tier are still wanted by the others (one joining now may
        // be given them): with others, fetches wait for uploads. One uploading and one waiting
        // keep the tier's link busy; a node alone is not held back (uploads follow its fill).
        if (view.members.length > 1 && lagging.length >= UPLOAD_LAG) {
          await lagging[0];
          continue;
        }
        figures.members = Math.max(figures.members, view.members.length);
        for (const member of view.members) seen.add(member);
        for (const claim of view.claims?.keys() ?? []) claimedElsewhere.add(claim);
        const early = performance.now() - joinedAt < 2 * group.refreshMs;
        const { chunk } = nextChunk(
          [...admitted.values()].sort(byPath),
          view,
          heldBack.files,
          early,
        );
        // Files of a member gone or stalled: it may have uploaded them just before (a member
        // leaves once its uploads are in): the tier is asked first, once for each file. So are
        // files another member claimed (it may have let them go once they were in the tier).
        const everyone = [...seen];
        const others = chunk.filter(
          (e) =>
            ownerOf(e.relative, everyone) !== view.self ||
            (claimed(e) && claimedElsewhere.has(claimOf(e.relative))),
        );
        const unasked = others.filter((e) => !askedTier.has(e.relative));
        if (unasked.length > 0 || (others.length > 0 && takes > 0)) {
          // (A take the other worker asked for may hold them: its end is awaited as well.)
          for (const entry of unasked) askedTier.add(entry.relative);
          await (unasked.length > 0 ? take() : taking);
          continue;
        }
        const onlyHeld = chunk.length > 0 && chunk.every((e) => heldBack.files.has(e.relative));
        if (chunk.length === 0 || (onlyHeld && heldBack.waiting())) {
          if (admitted.size === 0) return;
          const waiting = performance.now();
          await pause();
          // Both workers wait at once: the time is counted once.
          if (worker === 0) figures.waitSeconds += (performance.now() - waiting) / 1000;
          continue;
        }
        // A file making a chunk alone is claimed first: it goes to the tier if another member
        // started on it (the split changes as members appear).
        const big = chunk.length === 1 && chunk[0] && claimed(chunk[0]) ? chunk[0] : undefined;
        if (big) {
          if (group.claimsHeld >= MAX_CLAIMS) {
            // Uploads lag far behind: claims wait for them.
            await pause();
            continue;
          }
          // Out of the other worker's sight while the claim is made.
          admitted.delete(big.relative);
          const mine = await group.claim(big.relative).catch((err: unknown) => {
            tier.failed(messageOf(err));
            tierDown = true;
            return false;
          });
          if (!mine) {
            admitted.set(big.relative, big);
            continue;
          }
        }
        // Whose each file was among every member seen: one gone since is still its first owner.
        figures.takenOverFiles += others.length;
        figures.ownFiles += chunk.length - others.length;
        figures.heldBackFetched += chunk.filter((e) => inHand.has(e.relative)).length;
        await remote(new Map(chunk.map((e) => [e.relative, e])), true, big?.relative);
      }
    };
    const taker = async () => {
      while (!signal?.aborted && !tierDown && admitted.size > 0) {
        // Alone, nothing new reaches the tier but what this node uploads (and files held back,
        // which members that left may have uploaded just before).
        if (group.members.members.length > 1 || heldBack.waiting()) await take();
        if (!(await tier.check())) tierDown = true;
        else if (admitted.size > 0) {
          await pause(lookIntervalMs(group.members.members.length, group.refreshMs));
        }
      }
    };
    // Two chunks in flight: one's start and tail overlap the other's middle.
    await Promise.all([taker(), fetcher(0), fetcher(1)]);
  } finally {
    const fillSeconds = (performance.now() - started) / 1000;
    const tierFiles = progress.tierFiles - tierFilesBefore;
    // The copy is filled: the fill ends now. Its last uploads go on, and the node stays a member
    // until they are in the tier (others wait for them rather than fetch them again).
    tier.together.finishing(
      uploads
        .catch(() => undefined)
        .then(() => group.leave())
        .then(() =>
          tier.together.ended({
            ...figures,
            tierFiles,
            durationSeconds: fillSeconds,
            fetchSeconds: seconds.fetch,
            uploadSeconds: seconds.upload,
            takeSeconds: seconds.take,
          }),
        ),
    );
  }
}
