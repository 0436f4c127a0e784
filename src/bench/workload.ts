// The benchmarks' workloads: small-file trees, epochs of shuffled reads from a fixed seed, and the figures taken (first byte, CPU, memory).
import { randomBytes } from 'node:crypto';
import { mkdir, open, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

const KiB = 1024;

/** A deterministic pseudo-random sequence (mulberry32), so every run reads in the same orders. */
export function random(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function shuffled<T>(items: T[], seed: number): T[] {
  const next = random(seed);
  const out = [...items];
  for (let i = out.length - 1; i > 0; i -= 1) {
    const j = Math.floor(next() * (i + 1));
    [out[i], out[j]] = [out[j] as T, out[i] as T];
  }
  return out;
}

/**
 * Random access into part of a big file, as a pod reading records at offsets would: `blocks`
 * reads of 64 KiB at seeded random offsets within the first half, `readers` at once; MB/s.
 */
export async function randomReads(
  path: string,
  size: number,
  seed: number,
  blocks = 256,
  readers = 4,
): Promise<number> {
  const next = random(seed);
  const block = 64 * KiB;
  const offsets = Array.from({ length: blocks }, () => Math.floor(next() * (size / 2 - block)));
  const handle = await open(path, 'r');
  const started = process.hrtime.bigint();
  try {
    let at = 0;
    await Promise.all(
      Array.from({ length: readers }, async () => {
        const buffer = Buffer.alloc(block);
        while (at < offsets.length) {
          const offset = offsets[at] as number;
          at += 1;
          await handle.read(buffer, 0, block, offset);
        }
      }),
    );
  } finally {
    await handle.close();
  }
  return (blocks * block) / 1e6 / (Number(process.hrtime.bigint() - started) / 1e9);
}

/** An insightface-like tree: `files` files of 4-64 KiB spread over `dirs` directories. */
export async function writeSmallFiles(
  root: string,
  files: number,
  dirs: number,
): Promise<{ paths: string[]; bytes: number }> {
  const pool = randomBytes(1 << 20);
  const next = random(42);
  const paths: string[] = [];
  let bytes = 0;
  for (let d = 0; d < dirs; d += 1) await mkdir(join(root, `id${d}`), { recursive: true });
  // s3rver lists a prefix holding only sub-directories as empty: a file at the top keeps it visible.
  await writeFile(join(root, 'MANIFEST'), `${files} files in ${dirs} directories\n`);
  for (let i = 0; i < files; i += 1) {
    const size = Math.floor((4 + next() * 60) * KiB);
    const offset = Math.floor(next() * (pool.length - size));
    const path = `id${i % dirs}/${i}.jpg`;
    await writeFile(join(root, path), pool.subarray(offset, offset + size));
    paths.push(path);
    bytes += size;
  }
  return { paths, bytes };
}

/** One epoch: every file read once, in a shuffled order, by `readers` parallel readers; files/s. */
export async function readEpoch(
  root: string,
  paths: string[],
  seed: number,
  readers = 16,
): Promise<number> {
  const order = shuffled(paths, seed);
  let next = 0;
  const started = process.hrtime.bigint();
  await Promise.all(
    Array.from({ length: readers }, async () => {
      while (next < order.length) {
        const path = order[next] as string;
        next += 1;
        await readFile(join(root, path));
      }
    }),
  );
  return order.length / (Number(process.hrtime.bigint() - started) / 1e9);
}

/** Milliseconds until the first byte of a file can be read. */
export async function firstByteMs(path: string, since: bigint): Promise<number> {
  const handle = await open(path, 'r');
  try {
    await handle.read(Buffer.alloc(1), 0, 1, 0);
  } finally {
    await handle.close();
  }
  return Number(process.hrtime.bigint() - since) / 1e6;
}

/** CPU seconds (user + system) a process has used, from /proc. */
export async function cpuSeconds(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // utime and stime are fields 14 and 15 of stat, in clock ticks (100 per second on Linux).
  return (Number(fields[11] ?? 0) + Number(fields[12] ?? 0)) / 100;
}

export async function rssMiB(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
  const kib = Number(/^VmRSS:\s+(\d+) kB/m.exec(status)?.[1] ?? NaN);
  return kib / 1024;
}

export function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? NaN;
}
