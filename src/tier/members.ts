// Who is filling a dataset's tier folder now: each filling node keeps an object of its own fresh under members/, named with its progress, and the store's own times say who is fresh and who is stalled.
import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { RcloneTransfers, StoreObject } from '../engines/rclone-transfer.js';
import type { TransferSource } from '../engines/transfer-source.js';
import { processIo } from '../kernel/proc.js';
import { messageOf } from '../util/errors.js';

/** How often a member with nothing of its own left looks for the others' uploads, at most. */
const LOOK_MS = 1000;

/**
 * The tier listings a second all members' looks for uploads cost together, at most (two a look:
 * packs, big files): each member looks less often as members grow, 100 of them every 4 s.
 */
const CLUSTER_LISTINGS_PER_SECOND = 50;
const LISTINGS_PER_LOOK = 2;

/** How long a joining node waits for the others that join with it before its first split. */
const GATHER_MS = 300;
/** A member object this many refresh intervals old is a crashed node's: removed by whoever sees it. */
const LEFTOVER_INTERVALS = 10;

/** The fresh members of a fill as this node last saw them. */
export interface MemberView {
  /** This node's member name. */
  self: string;
  /** Fresh members, this node included, sorted. */
  members: string[];
  /** Fresh members whose progress has not moved for two refresh intervals (the store's clock). */
  stalled: Set<string>;
  /**
   * Members that had been at work for a refresh interval when this node joined (their progress had
   * moved twice; it moves once a refresh at most, and only after a member's join): they may hold
   * files of its share, fetched before they saw it. Nodes staged a moment apart count none.
   */
  earlier?: Set<string>;
  /**
   * Files making a chunk alone that other fresh members said they fetch now (claimOf -> member):
   * theirs, whoever rendezvous hashing names (see FillGroup.claim).
   */
  claims?: Map<string, string>;
}

/** 16 hex digits of a name's SHA-256: the same on every node, short enough for many in a key. */
const shortDigest = (text: string): string =>
  createHash('sha256').update(text).digest('hex').slice(0, 16);

/** How a file is named in a claim. */
export const claimOf = shortDigest;

/** A node's member name in the tier: the same for the same node (a restarted driver is the same member). */
export const memberName = shortDigest;

/**
 * The claims one member object carries at most (each 17 characters; a key has 1,024): a node
 * whose uploads lag this far behind its fetches waits before it claims more.
 */
export const MAX_CLAIMS = 16;

/**
 * `<member>~<progress>`, then `~<claim>` per file making a chunk alone the member fetches now;
 * undefined for another object.
 */
export function parseMemberObject(
  name: string,
): { member: string; progress: number; claims: string[] } | undefined {
  const match = /^([0-9a-f]{16})~(\d{1,12})((?:~[0-9a-f]{16})*)$/.exec(name);
  if (!match) return undefined;
  const claims = match[3] ? match[3].slice(1).split('~') : [];
  return { member: match[1]!, progress: Number(match[2]), claims };
}

/**
 * The members of a listing that are fresh at `now` (the store's time of this node's own object),
 * with the progress each last reported and when that object was written.
 */
export function freshMembers(
  objects: StoreObject[],
  now: number,
  refreshMs: number,
): Map<string, { progress: number; at: number; claims: Map<string, number> }> {
  const latest = new Map<string, { progress: number; at: number; claims: string[] }>();
  /** Per member and claim, its oldest object carrying it: when the claim was made. */
  const claimedAt = new Map<string, number>();
  for (const object of objects) {
    const parsed = parseMemberObject(object.name);
    if (!parsed || now - object.storedAtMs > 2 * refreshMs) continue;
    for (const claim of parsed.claims) {
      const key = `${parsed.member}~${claim}`;
      claimedAt.set(key, Math.min(claimedAt.get(key) ?? object.storedAtMs, object.storedAtMs));
    }
    const known = latest.get(parsed.member);
    if (!known || object.storedAtMs > known.at) {
      latest.set(parsed.member, { ...parsed, at: object.storedAtMs });
    }
  }
  return new Map(
    [...latest].map(([member, { progress, at, claims }]) => [
      member,
      {
        progress,
        at,
        claims: new Map(claims.map((c) => [c, claimedAt.get(`${member}~${c}`) ?? at])),
      },
    ]),
  );
}

/**
 * Who holds each claim among `members` (fresh, not stalled), as the others see it: the earliest
 * made (the store's times), ties to the lower name. Two claims show together only for a moment
 * (see FillGroup.claim, which decides whether a node holds its own); meanwhile the others wait
 * for the file in the tier.
 */
export function claimHolders(
  fresh: Map<string, { claims: Map<string, number> }>,
  members: ReadonlySet<string>,
): Map<string, { member: string; at: number }> {
  const holders = new Map<string, { member: string; at: number }>();
  for (const [member, { claims }] of fresh) {
    if (!members.has(member)) continue;
    for (const [claim, at] of claims) {
      const held = holders.get(claim);
      if (!held || at < held.at || (at === held.at && member < held.member)) {
        holders.set(claim, { member, at });
      }
    }
  }
  return holders;
}

/**
 * One node's membership in the fill of one tier folder, refreshed in the background while the node
 * fills. Each refresh writes this node's object (a new name when its progress moved, the old one
 * removed) and lists the folder: three requests per refresh interval, whatever the number of
 * members (a listing pages 1,000 of them at once). Progress moves at a refresh when the node
 * installed or uploaded files since the last one, or its transfer process received bytes (a big
 * file takes longer than a refresh interval, and its fetcher is not stalled).
 */
export class FillGroup {
  private progress = 0;
  private worked = false;
  private uploads = 0;
  /** Per process fetching for this node, the bytes it had received at the last refresh. */
  private readonly watched = new Map<number, number>();
  private written: string | undefined;
  private view: MemberView;
  /** Per other member, its progress and the store's time when this node first saw it there. */
  private readonly progressSeen = new Map<string, { progress: number; since: number }>();
  private timer: NodeJS.Timeout | undefined;
  /** Refreshes and claims, one at a time: each writes this node's object and lists the folder. */
  private refreshing: Promise<void> = Promise.resolve();
  /** Files making a chunk alone this node fetches now (claimOf): named in its member object. */
  private readonly claims = new Set<string>();
  /** Claims working members other than this node named at the last look, held or not. */
  private othersClaims = new Set<string>();
  private stopped = false;
  /** Set once the join's second look is done: `earlier` is decided then. */
  private joined = false;
  private earlier = new Set<string>();

  constructor(
    private readonly transfers: RcloneTransfers,
    private readonly membersFolder: TransferSource,
    node: string,
    readonly refreshMs: number,
    private readonly onError: (reason: string) => void = () => undefined,
  ) {
    this.membersFolder = membersFolder;
    const self = memberName(node);
    this.view = { self, members: [self], stalled: new Set() };
  }

  /** Who fills now, as the last refresh saw it. */
  get members(): MemberView {
    return this.view;
  }

  /** Joins: the first refresh is awaited (who fills already decides this node's share). */
  async join(): Promise<MemberView> {
    await this.refresh();
    // Nodes of one job stage within moments of each other: each looks again a moment later, so
    // those that joined together split the files alike from the start (a chunk begun under
    // another split would be fetched twice: a big file whole). Later joiners cost at most a chunk
    // in flight per member.
    await sleep(Math.min(GATHER_MS, this.refreshMs));
    const started = performance.now();
    await this.refresh();
    this.joined = true;
    this.schedule(started);
    return this.view;
  }

  /** Files this node installed or uploaded: its progress moves at the next refresh. */
  noteWork(): void {
    this.worked = true;
  }

  /** A process fetching this node's share (its bytes received show it working), until it ends. */
  watch(pid: number): void {
    this.watched.set(pid, 0);
  }

  unwatch(pid: number): void {
    this.watched.delete(pid);
  }

  /**
   * An upload of this node's share is under way: uploads give up within seconds on a tier that
   * does not answer, so while one runs the node is at work. Returns its end.
   */
  uploading(): () => void {
    this.uploads += 1;
    return () => {
      this.uploads -= 1;
      this.worked = true;
    };
  }

  /**
   * Claims a file that makes a chunk alone (see claimed in split.ts) before this node fetches it from the remote: a node that
   * staged a moment before the others (its listing was faster) may have started on a file their
   * split gives to one of them, which would fetch it whole again (a chunk's waste at most, but a
   * big file is a chunk alone). The folder is listed first (a claim seen then is its holder's),
   * then this node's object names the claim and the folder is listed again: held only if no other
   * member's claim of it shows then. Of two claims made in the same moment, the one written last
   * sees the other (listings show every write completed before them), so at most one member holds
   * a file; when each saw the other's, neither does, and each waits a random part of a refresh
   * interval before its fetcher may claim it again (the store's times cannot decide: an object
   * may show a time before the moment it became visible). False when another member claimed it:
   * its file, for the tier. Four requests a big file, seven when two nodes claim it at once.
   */
  async claim(relative: string): Promise<boolean> {
    const claim = claimOf(relative);
    const outcome = await this.serially(async () => {
      if (this.stopped) return 'theirs';
      await this.look();
      if (this.othersClaims.has(claim)) return 'theirs';
      this.claims.add(claim);
      // A claim is work: members that counted this node stalled see its claim from now on.
      this.worked = true;
      try {
        await this.refresh();
      } catch (err) {
        this.claims.delete(claim); // never left named for a file this node will not fetch
        throw err;
      }
      if (this.stopped) {
        this.claims.delete(claim); // left meanwhile: its object is gone, it fetches nothing more
        return 'theirs';
      }
      if (!this.othersClaims.has(claim)) return 'held';
      this.claims.delete(claim);
      await this.refresh();
      return 'both';
    });
    if (outcome === 'both') await sleep(Math.random() * this.refreshMs);
    return outcome === 'held';
  }

  /** Claims this node holds now (see MAX_CLAIMS). */
  get claimsHeld(): number {
    return this.claims.size;
  }

  /** The claimed file is in the tier (or given up): the claim goes at the next refresh. */
  release(relative: string): void {
    this.claims.delete(claimOf(relative));
  }

  private serially<T>(work: () => Promise<T>): Promise<T> {
    const done = this.refreshing.then(work);
    this.refreshing = done.then(
      () => undefined,
      () => undefined,
    );
    return done;
  }

  /** This node no longer fills: the others stop counting on it at once. */
  async leave(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.refreshing;
    if (this.written === undefined) return;
    await this.transfers.remove(this.membersFolder, this.written).catch(() => undefined);
    this.written = undefined;
  }

  /**
   * Refreshes at a fixed rate (a slow refresh, on a loaded node, does not stretch the interval the
   * others judge freshness by), or at once when the last one overran it.
   */
  private schedule(startedAt = performance.now()): void {
    if (this.stopped) return;
    const delay = Math.max(0, startedAt + this.refreshMs - performance.now());
    this.timer = setTimeout(() => {
      const started = performance.now();
      void this.serially(() => this.refresh()).then(
        () => this.schedule(started),
        (err: unknown) => {
          this.onError(messageOf(err));
          this.schedule(started);
        },
      );
    }, delay);
    this.timer.unref();
  }

  private async moved(): Promise<boolean> {
    let moved = this.worked || this.uploads > 0;
    this.worked = false;
    for (const [pid, before] of this.watched) {
      const io = await processIo(pid);
      if (io && io.readBytes > before) {
        this.watched.set(pid, io.readBytes);
        moved = true;
      }
    }
    return moved;
  }

  /** Writes this node's object (its progress and claims) and lists the folder. */
  private async refresh(): Promise<void> {
    if (await this.moved()) this.progress += 1;
    const { self } = this.view;
    const name = [`${self}~${this.progress}`, ...this.claims].join('~');
    const body = Buffer.from(`${this.progress}\n`);
    await this.transfers.upload(this.membersFolder, name, body.length, [body]);
    if (this.written !== undefined && this.written !== name) {
      await this.transfers.remove(this.membersFolder, this.written).catch(() => undefined);
    }
    this.written = name;
    if (this.stopped) return;
    await this.look();
  }

  /** Lists the folder: who is fresh, who stalled, who holds which claim. */
  private async look(): Promise<void> {
    const { self } = this.view;
    const objects = await this.transfers.listObjects(this.membersFolder);
    const own = objects.find((o) => o.name === this.written);
    const now = own?.storedAtMs ?? Math.max(0, ...objects.map((o) => o.storedAtMs));
    const fresh = freshMembers(objects, now, this.refreshMs);
    if (!fresh.has(self)) fresh.set(self, { progress: this.progress, at: now, claims: new Map() });
    const stalled = new Set<string>();
    for (const [member, { progress }] of fresh) {
      if (member === self) continue;
      const seen = this.progressSeen.get(member);
      if (!seen || seen.progress !== progress) {
        this.progressSeen.set(member, { progress, since: now });
      } else if (now - seen.since >= 2 * this.refreshMs) {
        stalled.add(member);
      }
    }
    // A crashed node's last object would stay forever: whoever sees it long after removes it.
    for (const object of objects) {
      const old = now - object.storedAtMs > LEFTOVER_INTERVALS * this.refreshMs;
      if (old && parseMemberObject(object.name)) {
        await this.transfers.remove(this.membersFolder, object.name).catch(() => undefined);
      }
    }
    const working = new Set([...fresh.keys()].filter((m) => !stalled.has(m)));
    const claims = new Map<string, string>();
    for (const [claim, { member }] of claimHolders(fresh, working)) {
      if (member !== self) claims.set(claim, member);
    }
    this.othersClaims = new Set(
      [...fresh]
        .filter(([member]) => member !== self && working.has(member))
        .flatMap(([, { claims: theirs }]) => [...theirs.keys()]),
    );
    if (!this.joined) {
      const before = [...fresh].filter(([m, { progress }]) => m !== self && progress >= 2);
      this.earlier = new Set(before.map(([member]) => member));
    }
    const earlier = new Set([...this.earlier].filter((m) => fresh.has(m)));
    this.view = { self, members: [...fresh.keys()].sort(), stalled, earlier, claims };
  }
}

/**
 * A member's interval between looks for the others' uploads: a second (half the refresh interval
 * when that is shorter), longer with many members, never longer than the refresh interval.
 */
export const lookIntervalMs = (members: number, refreshMs: number): number =>
  Math.min(
    refreshMs,
    Math.max(
      Math.min(LOOK_MS, refreshMs / 2),
      (members * LISTINGS_PER_LOOK * 1000) / CLUSTER_LISTINGS_PER_SECOND,
    ),
  );
