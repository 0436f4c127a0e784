// Sweeps: pods reading many distinct files of a directory whole, in any order, seen from the files the engine fetched on demand; the directory is then worth a fill.

/** A directory pods are sweeping, and the evidence. */
export interface Sweep {
  /** Relative to the dataset root; '' for the whole dataset. */
  directory: string;
  /** Distinct files of it read whole on demand within the window. */
  files: number;
  /** Distinct sub-directories (and the directory itself, for files right in it) they came from. */
  branches: number;
  windowMs: number;
}

export interface SweepRule {
  /** Distinct files read whole within the window that make a sweep. */
  minFiles: number;
  windowMs: number;
}

/**
 * Measured on the bench's trees: 16 files are read within the first second of a shuffled epoch
 * (16 readers), while a job reading a handful of files (configs, a shard index) stays below.
 */
export const DEFAULT_SWEEP_RULE: SweepRule = { minFiles: 16, windowMs: 30_000 };

const DIRECT = '';

/**
 * Counts, per directory and each of its ancestors, the distinct files read whole lately. A
 * directory is swept when enough of its files were read and they came from more than one of its
 * branches (or lie right in it): a pod reading only train/ sweeps train/, not the dataset. Only
 * whole files count, so random reads into part of a big file never make a sweep, and listings
 * (`ls -R`, `find`) open no file at all. The shallowest swept directory wins, once.
 */
export class SweepDetector {
  /** Per directory: file -> [when it was read, the branch it came through]. */
  private readonly seen = new Map<string, Map<string, { at: number; branch: string }>>();
  private readonly swept: string[] = [];

  constructor(private readonly rule: SweepRule = DEFAULT_SWEEP_RULE) {}

  /** Files read whole on demand since the last call; returns the sweeps they complete. */
  observe(files: string[], now = Date.now()): Sweep[] {
    for (const file of files) {
      const parts = file.split('/');
      // A file of a swept directory is being filled: it is evidence for nothing else.
      if (this.covered(parts.slice(0, -1).join('/'))) continue;
      for (let depth = 0; depth < parts.length; depth += 1) {
        const directory = parts.slice(0, depth).join('/');
        const branch = depth === parts.length - 1 ? DIRECT : (parts[depth] as string);
        const entries = this.seen.get(directory) ?? new Map();
        this.seen.set(directory, entries);
        entries.set(file, { at: now, branch });
      }
    }
    const found: Sweep[] = [];
    const byDepth = [...this.seen.keys()].sort(
      (a, b) => (a === '' ? 0 : a.split('/').length) - (b === '' ? 0 : b.split('/').length),
    );
    for (const directory of byDepth) {
      const entries = this.seen.get(directory) as Map<string, { at: number; branch: string }>;
      for (const [file, { at }] of entries) {
        if (now - at > this.rule.windowMs) entries.delete(file);
      }
      if (entries.size === 0 || this.covered(directory)) {
        this.seen.delete(directory);
        continue;
      }
      const branches = new Set([...entries.values()].map((e) => e.branch));
      if (entries.size < this.rule.minFiles) continue;
      if (branches.size < 2 && !branches.has(DIRECT)) continue;
      found.push({
        directory,
        files: entries.size,
        branches: branches.size,
        windowMs: this.rule.windowMs,
      });
      this.swept.push(directory);
      this.seen.delete(directory);
      for (const above of this.seen.values()) {
        for (const file of above.keys()) {
          if (directory === '' || file.startsWith(`${directory}/`)) above.delete(file);
        }
      }
    }
    return found;
  }

  /** The directory's sweep was not filled: new evidence makes a new sweep of it. */
  forget(directory: string): void {
    const at = this.swept.indexOf(directory);
    if (at >= 0) this.swept.splice(at, 1);
  }

  /** Whether a sweep of this directory or of one above it was already seen. */
  private covered(directory: string): boolean {
    return this.swept.some(
      (done) => done === '' || done === directory || directory.startsWith(`${done}/`),
    );
  }
}
