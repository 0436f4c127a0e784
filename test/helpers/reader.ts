import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';
import { sleep } from '../../src/kernel/proc.js';

export interface StreamResult {
  sha256: string;
  bytes: number;
  /** Errors met (EIO, ENOTCONN…), each followed by a reopen and seek. */
  errors: string[];
  /** Longest time from a failed read to the next successful one. */
  longestOutageMs: number;
}

// A FUSE mount whose server was killed answers ENOTCONN or, caught mid-request, ECONNABORTED.
const RETRIABLE = new Set([
  'EIO',
  'ENOTCONN',
  'ECONNABORTED',
  'ENOENT',
  'ESTALE',
  'ENXIO',
  'EBADF',
]);

/**
 * Reads a file to the end in 1 MiB blocks, like a training job that survives a storage hiccup:
 * on a transport error it reopens the file and continues at the same offset.
 */
export async function streamWithRetry(
  path: string,
  options: { onProgress?: (bytes: number) => void; deadlineMs?: number } = {},
): Promise<StreamResult> {
  const hash = createHash('sha256');
  const buffer = Buffer.alloc(1 << 20);
  const errors: string[] = [];
  let offset = 0;
  let outageStart: number | undefined;
  let longestOutageMs = 0;
  const deadline = Date.now() + (options.deadlineMs ?? 120_000);
  for (;;) {
    if (Date.now() > deadline)
      throw new Error(`reader gave up after ${errors.length} errors at ${offset}`);
    let handle;
    try {
      handle = await open(path, 'r');
      for (;;) {
        const { bytesRead } = await handle.read(buffer, 0, buffer.length, offset);
        if (outageStart !== undefined) {
          longestOutageMs = Math.max(longestOutageMs, Date.now() - outageStart);
          outageStart = undefined;
        }
        if (bytesRead === 0) {
          return { sha256: hash.digest('hex'), bytes: offset, errors, longestOutageMs };
        }
        hash.update(buffer.subarray(0, bytesRead));
        offset += bytesRead;
        options.onProgress?.(offset);
      }
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? String(err);
      if (!RETRIABLE.has(code)) throw err;
      errors.push(code);
      outageStart ??= Date.now();
      await sleep(20);
    } finally {
      await handle?.close().catch(() => undefined);
    }
  }
}
