// Packs: small files travel to and from the cluster tier many to an object (their bytes end to end, and an index of where each one is), so a node moves a few big objects instead of a request per file.
import { createHash } from 'node:crypto';
import { closeSync, futimesSync, openSync, readSync, writeSync } from 'node:fs';
import { open, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';

/** Files from this size on travel as objects of their own; smaller ones in packs. */
export const PACK_MEMBER_MAX = 1 << 20;
/** A pack is closed once it holds this much (it may pass it by one member). */
export const PACK_TARGET_BYTES = 64 << 20;

/** Where one file is in its pack, and what it was when packed. */
const MemberSchema = z.object({
  path: z.string().min(1),
  offset: z.number().int().min(0),
  size: z.number().int().min(0),
  mtimeMs: z.number(),
});
export type PackMember = z.infer<typeof MemberSchema>;

/** A pack's index (`<id>.json` beside `<id>.data`): members in the order of their bytes. */
const IndexSchema = z.object({
  version: z.literal(1),
  size: z.number().int().min(0),
  files: z.array(MemberSchema),
});
export type PackIndex = z.infer<typeof IndexSchema>;

/** A file held complete, to pack. */
export interface PackCandidate {
  relative: string;
  size: number;
  mtimeMs: number;
}

/**
 * Packs for these files, in path order (a prefetch of one directory then finds it in few packs).
 * Every candidate goes into exactly one pack.
 */
export function planPacks(files: PackCandidate[]): PackIndex[] {
  const sorted = [...files].sort((a, b) => (a.relative < b.relative ? -1 : 1));
  const packs: PackIndex[] = [];
  let current: PackIndex | undefined;
  for (const file of sorted) {
    if (!current || current.size >= PACK_TARGET_BYTES) {
      current = { version: 1, size: 0, files: [] };
      packs.push(current);
    }
    current.files.push({
      path: file.relative,
      offset: current.size,
      size: file.size,
      mtimeMs: file.mtimeMs,
    });
    current.size += file.size;
  }
  return packs;
}

/** A pack's name: the digest of its index, so equal packs are one object and names never clash. */
export const packId = (index: PackIndex): string =>
  createHash('sha256').update(JSON.stringify(index)).digest('hex').slice(0, 40);

/** The index as read from the tier; undefined when it is not one (a stray or damaged object). */
export function parsePackIndex(text: string): PackIndex | undefined {
  try {
    const index = IndexSchema.parse(JSON.parse(text));
    const end = index.files.reduce((at, f) => (f.offset === at ? at + f.size : NaN), 0);
    return end === index.size ? index : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The pack's bytes, read member after member from `root`. A member whose size is no longer the
 * indexed one (replaced meanwhile) ends the stream with an error: the pack is never completed.
 */
export async function* packContent(root: string, index: PackIndex): AsyncIterable<Buffer> {
  for (const member of index.files) {
    const file = await open(join(root, member.path), 'r');
    try {
      const stats = await file.stat();
      if (stats.size !== member.size || stats.mtimeMs !== member.mtimeMs) {
        throw new Error(`${member.path} changed while it was packed`);
      }
      let read = 0;
      while (read < member.size) {
        const chunk = Buffer.allocUnsafe(Math.min(member.size - read, 1 << 20));
        const { bytesRead } = await file.read(chunk, 0, chunk.length, read);
        if (bytesRead === 0) throw new Error(`${member.path} ended early while it was packed`);
        read += bytesRead;
        yield chunk.subarray(0, bytesRead);
      }
    } finally {
      await file.close();
    }
  }
}

/**
 * Writes one member of a downloaded pack (the open descriptor `pack`) to `to` through `buffer` (of
 * PACK_MEMBER_MAX bytes at least), with the time it had when packed and the modes the copy shows
 * by default (no chmod at install). The caller checked the pack's size against its index.
 * Synchronous, like the install that follows: a member is a few system calls on the cache file
 * system, each cheaper than a trip through the thread pool; and one buffer serves every member.
 */
export function extractMember(pack: number, member: PackMember, to: string, buffer: Buffer): void {
  let read = 0;
  while (read < member.size) {
    const got = readSync(pack, buffer, read, member.size - read, member.offset + read);
    if (got === 0) throw new Error(`pack ends inside ${member.path}`);
    read += got;
  }
  const out = openSync(to, 'wx', 0o644);
  try {
    let written = 0;
    while (written < member.size) written += writeSync(out, buffer, written, member.size - written);
    futimesSync(out, member.mtimeMs / 1000, member.mtimeMs / 1000);
  } finally {
    closeSync(out);
  }
}

/** Whether a downloaded pack has the size its index says (a cut object never does). */
export const packIsWhole = async (pack: string, index: PackIndex): Promise<boolean> =>
  (await stat(pack).catch(() => undefined))?.size === index.size;
