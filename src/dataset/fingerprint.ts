// A dataset file's fingerprint as a remote listing gives it (size, time) and how a local file is compared with it.
import { createHash } from 'node:crypto';
import { createReadStream, type Stats } from 'node:fs';
import { pipeline } from 'node:stream/promises';

/** What the remote says a file is: a copy is current only when both match (NaN: time not known). */
export interface RemoteFile {
  size: number;
  mtimeMs: number;
  /** The content's MD5 (hex), when the remote's listing gave it. */
  md5?: string;
}

/** File times within a millisecond are the same time (remotes differ in precision below that). */
export const sameTime = (a: number, b: number): boolean => Math.abs(a - b) < 1;

/**
 * Whether a local time matches a listed one; a listing without times (NaN) cannot tell, and the
 * size alone decides.
 */
export const sameTimeOrUnlisted = (localMs: number, listedMs: number): boolean =>
  Number.isNaN(listedMs) || sameTime(localMs, listedMs);

/**
 * Whether a file of the remote's size is the remote's file: the same time when the remote listed
 * one, else the same MD5 when it listed that; a remote file with neither cannot be told apart.
 */
export async function isIdentical(
  path: string,
  stats: Stats,
  remote: RemoteFile,
): Promise<boolean> {
  if (!Number.isNaN(remote.mtimeMs)) return sameTime(stats.mtimeMs, remote.mtimeMs);
  if (remote.md5 === undefined) return false;
  const hash = createHash('md5');
  await pipeline(createReadStream(path), hash);
  return hash.digest('hex') === remote.md5.toLowerCase();
}
