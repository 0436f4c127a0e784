// How nodes filling one dataset together split its files: rendezvous hashing over the fresh members gives each file one fetcher; an idle node takes over a stalled member's files, and the far end of a slow member's.
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
 * share; when that is done, the last chunk of the biggest share left to another member, if that
 * share is more than two chunks (its owner works from the front, so the two meet at most one chunk
 * apart); else nothing (wait for the others' uploads).
 */
export function nextChunk(
  wanted: readonly RemoteEntry[],
  view: MemberView,
): { chunk: RemoteEntry[]; takenFrom?: string } {
  const byOwner = shares(wanted, view);
  const own = byOwner.get(view.self) ?? [];
  if (own.length > 0) {
    // Small chunks while a share is small: a node killed mid-fill loses little of it.
    const limit = Math.min(CHUNK_BYTES, Math.max(CHUNK_MIN_BYTES, bytesOf(own) / 4));
    return { chunk: headChunk(own, limit) };
  }
  let biggest: { owner: string; list: RemoteEntry[]; bytes: number } | undefined;
  for (const [owner, list] of byOwner) {
    const bytes = bytesOf(list);
    if (!biggest || bytes > biggest.bytes) biggest = { owner, list, bytes };
  }
  if (!biggest) return { chunk: [] };
  const tail = headChunk([...biggest.list].reverse());
  if (bytesOf(tail) * 2 >= biggest.bytes || tail.length * 2 >= biggest.list.length) {
    return { chunk: [] };
  }
  return { chunk: tail.reverse(), takenFrom: biggest.owner };
}
