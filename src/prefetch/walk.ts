import { open, opendir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import picomatch from 'picomatch';
import { globBase, type PrefetchPattern } from '../dataset/patterns.js';

export interface PrefetchProgress {
  /** Files matched so far (the walk may still be finding more). */
  matched: number;
  /** Files whose content was read, or whose attributes were fetched for metadata-only patterns. */
  files: number;
  bytes: number;
  errors: number;
  done: boolean;
}

const CHUNK = 1 << 20;

/** Runs at most `limit` tasks at once; `idle()` resolves when all that were added have finished. */
class Pool {
  private running = 0;
  private readonly waiting: (() => void)[] = [];
  private readonly settled: (() => void)[] = [];

  constructor(private readonly limit: number) {}

  async add(task: () => Promise<void>): Promise<void> {
    if (this.running >= this.limit)
      await new Promise<void>((resolve) => this.waiting.push(resolve));
    this.running += 1;
    void task().finally(() => {
      this.running -= 1;
      this.waiting.shift()?.();
      if (this.running === 0 && this.waiting.length === 0) {
        for (const resolve of this.settled.splice(0)) resolve();
      }
    });
  }

  idle(): Promise<void> {
    if (this.running === 0) return Promise.resolve();
    return new Promise((resolve) => this.settled.push(resolve));
  }
}

/**
 * Reads every file under root that matches a content pattern and stats every entry under a
 * metadata-only pattern, `concurrency` files at a time. Meant to run in its own process: it
 * touches a FUSE mount, which may hang.
 */
export async function prefetch(
  root: string,
  patterns: PrefetchPattern[],
  concurrency: number,
  onProgress: (progress: PrefetchProgress) => void,
): Promise<PrefetchProgress> {
  const content = patterns.filter((p) => !p.metadataOnly).map((p) => p.glob);
  const metadata = patterns.filter((p) => p.metadataOnly).map((p) => p.glob);
  const readsContent = content.length > 0 ? picomatch(content, { dot: true }) : () => false;
  const onlyMetadata = metadata.length > 0 ? picomatch(metadata, { dot: true }) : () => false;
  const progress: PrefetchProgress = { matched: 0, files: 0, bytes: 0, errors: 0, done: false };
  const pool = new Pool(concurrency);
  const buffers: Buffer[] = [];

  const readFile = async (path: string): Promise<void> => {
    const buffer = buffers.pop() ?? Buffer.allocUnsafe(CHUNK);
    try {
      const handle = await open(path, 'r');
      try {
        for (;;) {
          const { bytesRead } = await handle.read(buffer, 0, CHUNK, null);
          if (bytesRead === 0) break;
          progress.bytes += bytesRead;
        }
      } finally {
        await handle.close();
      }
      progress.files += 1;
    } catch {
      progress.errors += 1;
    } finally {
      buffers.push(buffer);
    }
  };
  const statFile = async (path: string): Promise<void> => {
    try {
      await stat(path);
      progress.files += 1;
    } catch {
      progress.errors += 1;
    }
  };

  const visited = new Set<string>();
  const walk = async (relative: string): Promise<void> => {
    if (visited.has(relative)) return;
    visited.add(relative);
    let dir;
    try {
      dir = await opendir(join(root, relative));
    } catch {
      progress.errors += 1;
      return;
    }
    const subdirectories: string[] = [];
    for await (const entry of dir) {
      const path = relative === '' ? entry.name : `${relative}/${entry.name}`;
      if (entry.isDirectory()) {
        subdirectories.push(path);
        continue;
      }
      if (readsContent(path)) {
        progress.matched += 1;
        await pool.add(() => readFile(join(root, path)));
      } else if (onlyMetadata(path)) {
        progress.matched += 1;
        await pool.add(() => statFile(join(root, path)));
      }
    }
    for (const sub of subdirectories) await walk(sub);
  };

  const timer = setInterval(() => onProgress({ ...progress }), 500);
  try {
    const bases = [...new Set(patterns.map((p) => globBase(p.glob)))].sort();
    // A base inside another base is walked with it.
    for (const base of bases) {
      if (bases.some((other) => other !== base && (other === '' || base.startsWith(`${other}/`))))
        continue;
      await walk(base);
    }
    await pool.idle();
  } finally {
    clearInterval(timer);
  }
  progress.done = true;
  onProgress({ ...progress });
  return progress;
}
