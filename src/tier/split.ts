// How nodes filling one dataset together split its files: rendezvous hashing over the fresh members gives each file one fetcher; an idle node takes over a stalled member's files, and the far end of a slow member's; a late joiner fetches last what the earlier members may hold.
import type { RemoteEntry } from '../engines/rclone-transfer.js';
import { claimOf, type MemberView } from './members.js';

/**
 * What one turn of a fetch from the remote takes at most, uploaded while the next one runs: small
 * enough that a node killed mid-fill costs the others little, big enough that each turn's
 * process start and ramp-up are a small part of it.
 */
export const CHUNK_BYTES = 64 << 20;
export const CHUNK_FILES = 2000;
/** A share goes in four chunks at least, down to chunks of this size (a big file is one alone). */
export const CHUNK_MIN_BYTES = 2 << 20;

/**
 * A member's score for a file: FNV-1a over both names, then murmur3's finalizer to spread it. Cheap
 * (a fill scores every file it still wants against every member at each turn) and the same on
 * every node, which is all rendezvous hashing needs.
 */
function score(member: string, relative: string): number {
  let h = 0x811c9dc5;
  const mix = (text: string) => {
    for (let i = 0; i < text.length; i += 1) {
      h ^= text.charCodeAt(i);
      h = Math.imul(h, 0x01000193);
    }
  };
  mix(member);
  mix('\0');
  mix(relative);
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** The member of `members` that fetches `relative`: the highest score (rendezvous hashing). */
export function ownerOf(relative: string, members: readonly string[]): string {
  let best = '';
  let bestScore = -1;
  for (const member of members) {
    const points = score(member, relative);
    if (points > bestScore || (points === bestScore && member < best)) {
      best = member;
      bestScore = points;
    }
  }
  return best;
}

/**
 * Files that may make a chunk alone (a chunk is at least CHUNK_MIN_BYTES): claimed by their
 * fetcher (see FillGroup.claim), since one fetched twice is a whole chunk.
 */
export const claimed = (entry: RemoteEntry): boolean => entry.size >= CHUNK_MIN_BYTES;

/**
 * The files still wanted, by the member that fetches each (stalled members own nothing): a file
 * another member claimed is its claimer's.
 */
export function shares(
  wanted: readonly RemoteEntry[],
  view: MemberView,
): Map<string, RemoteEntry[]> {
  const working = view.members.filter((m) => !view.stalled.has(m) || m === view.self);
  const byOwner = new Map<string, RemoteEntry[]>();
  for (const entry of wanted) {
    const claimer = claimed(entry) ? view.claims?.get(claimOf(entry.relative)) : undefined;
    const owner = claimer ?? ownerOf(entry.relative, working);
    const list = byOwner.get(owner) ?? [];
    list.push(entry);
    byOwner.set(owner, list);
  }
  return byOwner;
}

/**
 * Chunks of its share a member fetched and has not uploaded yet, at most, while others fill with
 * it (fetchTogether waits beyond): the others see those files still wanted.
 */
export const UPLOAD_LAG = 2;
/** Chunks a member may hold that are not in the tier yet: two in flight, UPLOAD_LAG to upload. */
const IN_HAND_CHUNKS = 2 + UPLOAD_LAG;

/**
 * A chunk's bytes at most early in a fill (`early` in nextChunk: its first two refresh
 * intervals): nodes of one job may finish listing seconds apart, and one that joined alone, or
 * before the last, has its share cut by those that join after; its first chunks, begun under the
 * old split, are partly theirs. Measured in the full bench (50,000 files, listings of 28 s): one
 * node's first two chunks of 2,000 files made 2,700 files fetched twice (1.18x the bytes).
 */
const EARLY_CHUNK_BYTES = 4 * CHUNK_MIN_BYTES;

/** Small chunks while a share is small: a node killed mid-fill loses little of it. */
const chunkLimit = (share: readonly RemoteEntry[]): number =>
  Math.min(CHUNK_BYTES, Math.max(CHUNK_MIN_BYTES, bytesOf(share) / 4));

/**
 * Files of this node's share that members filling before it came may hold already, fetched and
 * not yet in the tier (they fetched from their shares without it until they saw it): the first
 * chunks of each one's share in the split without this node. A node joining a fill in progress
 * fetches those last, once they stop arriving in the tier.
 */
export function inOthersHands(wanted: readonly RemoteEntry[], view: MemberView): Set<string> {
  const earlier = view.members.filter((m) => m !== view.self && view.earlier?.has(m));
  const inHand = new Set<string>();
  if (earlier.length === 0) return inHand;
  const without = shares(wanted, { ...view, members: view.members.filter((m) => m !== view.self) });
  const own = new Set((shares(wanted, view).get(view.self) ?? []).map((e) => e.relative));
  for (const member of earlier) {
    let rest = without.get(member) ?? [];
    const limit = chunkLimit(rest);
    for (let chunks = 0; chunks < IN_HAND_CHUNKS && rest.length > 0; chunks += 1) {
      const chunk = headChunk(rest, limit);
      for (const entry of chunk) if (own.has(entry.relative)) inHand.add(entry.relative);
      rest = rest.slice(chunk.length);
    }
  }
  return inHand;
}

/** The first files of `list` up to `limit` bytes or CHUNK_FILES (one file at least). */
export function headChunk(list: readonly RemoteEntry[], limit = CHUNK_BYTES): RemoteEntry[] {
  const chunk: RemoteEntry[] = [];
  let bytes = 0;
  for (const entry of list) {
    if (chunk.length > 0 && (bytes + entry.size > limit || chunk.length >= CHUNK_FILES)) break;
    chunk.push(entry);
    bytes += entry.size;
  }
  return chunk;
}

const bytesOf = (list: readonly RemoteEntry[]): number => list.reduce((n, e) => n + e.size, 0);

/**
 * What this node fetches from the remote next, in path order within each share: a chunk of its own
 * share (the files of `last` after the others: see inOthersHands); when that is done, the last chunk of the biggest share left to another member, if that
 * share is more than two chunks (its owner works from the front, so the two meet at most one chunk
 * apart); else nothing (wait for the others' uploads).
 */
export function nextChunk(
  wanted: readonly RemoteEntry[],
  view: MemberView,
  last: ReadonlySet<string> = new Set(),
  early = false,
): { chunk: RemoteEntry[]; takenFrom?: string } {
  const byOwner = shares(wanted, view);
  const own = byOwner.get(view.self) ?? [];
  if (own.length > 0) {
    const later = (e: RemoteEntry) => last.has(e.relative);
    const ordered = last.size === 0 ? own : [...own.filter((e) => !later(e)), ...own.filter(later)];
    const limit = early ? Math.min(EARLY_CHUNK_BYTES, chunkLimit(own)) : chunkLimit(own);
    return { chunk: headChunk(ordered, limit) };
  }
  let biggest: { owner: string; list: RemoteEntry[]; bytes: number } | undefined;
  for (const [owner, list] of byOwner) {
    const bytes = bytesOf(list);
    if (!biggest || bytes > biggest.bytes) biggest = { owner, list, bytes };
  }
  if (!biggest) return { chunk: [] };
  // Two chunks of the share or less: waited for (its owner is at work on them).
  const far = headChunk([...biggest.list].reverse());
  if (bytesOf(far) * 2 >= biggest.bytes || far.length * 2 >= biggest.list.length) {
    return { chunk: [] };
  }
  // Idle members take from the same share each from their own part of it: else all of them fetch
  // the same far end (the share of a member killed mid-fill went to both survivors: 11 MiB of a
  // 31.9 MiB dataset fetched twice).
  const { owner, list } = biggest;
  const idle = view.members.filter((m) => m !== owner && (!view.stalled.has(m) || m === view.self));
  const part = idle.includes(view.self)
    ? list.filter((e) => ownerOf(e.relative, idle) === view.self)
    : list;
  return { chunk: headChunk([...part].reverse()).reverse(), takenFrom: owner };
}
