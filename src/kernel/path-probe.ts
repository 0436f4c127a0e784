// Looks at paths on FUSE mounts (their kind, their file system's usage) from a child process with a deadline, so a hung mount never blocks the driver.
import type { ProcessRunner } from './runner.js';

export interface FsUsage {
  totalBytes: number;
  freeBytes: number;
  availableBytes: number;
  totalInodes: number;
  freeInodes: number;
}

export type PathKind = 'directory' | 'other' | 'missing' | 'unanswered';

/**
 * Looks at paths on FUSE mounts from a child process, never from this process: a stat on a hung
 * FUSE server blocks its caller until the server answers, and a blocked libuv thread cannot be
 * taken back (four of them stop every file operation of the driver). A child can be SIGKILLed.
 */
export class PathProbe {
  constructor(
    private readonly runner: ProcessRunner,
    private readonly timeoutMs = 2000,
  ) {}

  async kind(path: string): Promise<PathKind> {
    const result = await this.runner.run('stat', ['--format=%F', '--', path], this.timeoutMs);
    if (result.exitCode === -1) return 'unanswered';
    if (result.exitCode !== 0) {
      return /No such file/.test(result.stderr) ? 'missing' : 'unanswered';
    }
    return result.stdout.trim() === 'directory' ? 'directory' : 'other';
  }

  /** Whether the path answers a stat in time (a dead mount gives ENOTCONN, a hung one nothing). */
  async answers(path: string): Promise<boolean> {
    const kind = await this.kind(path);
    return kind === 'directory' || kind === 'other';
  }

  async usage(path: string): Promise<FsUsage | undefined> {
    // fundamental block size, blocks, free, available, inodes, free inodes
    const result = await this.runner.run(
      'stat',
      ['--file-system', '--format=%S %b %f %a %c %d', '--', path],
      this.timeoutMs,
    );
    if (result.exitCode !== 0) return undefined;
    const [size, blocks, free, available, inodes, freeInodes] = result.stdout
      .trim()
      .split(' ')
      .map(Number);
    if (
      [size, blocks, free, available, inodes, freeInodes].some(
        (n) => n === undefined || !Number.isFinite(n),
      )
    )
      return undefined;
    const block = size as number;
    return {
      totalBytes: (blocks as number) * block,
      freeBytes: (free as number) * block,
      availableBytes: (available as number) * block,
      totalInodes: inodes as number,
      freeInodes: freeInodes as number,
    };
  }
}
