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
}

/** A node's member name in the tier: the same for the same node (a restarted driver is the same member). */
export const memberName = (node: string): string =>
  createHash('sha256').update(node).digest('hex').slice(0, 16);

/** `<member>~<files uploaded so far>`; undefined for another object. */
export function parseMemberObject(name: string): { member: string; progress: number } | undefined {
  const match = /^([0-9a-f]{16})~(\d{1,12})$/.exec(name);
  return match ? { member: match[1]!, progress: Number(match[2]) } : undefined;
}

/**
 * The members of a listing that are fresh at `now` (the store's time of this node's own object),
 * with the progress each last reported and when that object was written.
 */
export function freshMembers(
  objects: StoreObject[],
  now: number,
  refreshMs: number,
): Map<string, { progress: number; at: number }> {
  const latest = new Map<string, { progress: number; at: number }>();
  for (const object of objects) {
    const parsed = parseMemberObject(object.name);
    if (!parsed || now - object.storedAtMs > 2 * refreshMs) continue;
    const known = latest.get(parsed.member);
    if (!known || object.storedAtMs > known.at) {
      latest.set(parsed.member, { progress: parsed.progress, at: object.storedAtMs });
    }
  }
  return latest;
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
  private refreshing: Promise<void> = Promise.resolve();
  private stopped = false;

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
      this.refreshing = this.refresh().then(
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

  private async refresh(): Promise<void> {
    if (await this.moved()) this.progress += 1;
    const { self } = this.view;
    const name = `${self}~${this.progress}`;
    const body = Buffer.from(`${this.progress}\n`);
    await this.transfers.upload(this.membersFolder, name, body.length, [body]);
    if (this.written !== undefined && this.written !== name) {
      await this.transfers.remove(this.membersFolder, this.written).catch(() => undefined);
    }
    this.written = name;
    if (this.stopped) return;
    const objects = await this.transfers.listObjects(this.membersFolder);
    const own = objects.find((o) => o.name === name);
    const now = own?.storedAtMs ?? Math.max(0, ...objects.map((o) => o.storedAtMs));
    const fresh = freshMembers(objects, now, this.refreshMs);
    fresh.set(self, { progress: this.progress, at: now });
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
    this.view = { self, members: [...fresh.keys()].sort(), stalled };
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
