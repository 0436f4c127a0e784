// Test files for the demo and the benchmarks: random contents, timed whole-file reads and SHA-256 checksums.
import { createHash, randomFillSync } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open } from 'node:fs/promises';

const MiB = 2 ** 20;

/** A file of random bytes (incompressible, like model weights or encoded images). */
export async function writeRandomFile(path: string, bytes: number): Promise<void> {
  const handle = await open(path, 'w');
  const chunk = Buffer.alloc(4 * MiB);
  try {
    for (let written = 0; written < bytes; written += chunk.length) {
      randomFillSync(chunk);
      await handle.write(chunk, 0, Math.min(chunk.length, bytes - written));
    }
  } finally {
    await handle.close();
  }
}

/** Reads a whole file in 1 MiB blocks, as a training job does; returns the seconds taken. */
export async function timedRead(path: string): Promise<number> {
  const handle = await open(path, 'r');
  const buffer = Buffer.alloc(MiB);
  const started = process.hrtime.bigint();
  try {
    while ((await handle.read(buffer, 0, buffer.length, null)).bytesRead > 0);
  } finally {
    await handle.close();
  }
  return Number(process.hrtime.bigint() - started) / 1e9;
}

export async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: MiB }))
    hash.update(chunk as Buffer);
  return hash.digest('hex');
}
