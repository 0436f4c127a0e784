import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { execa, type ResultPromise } from 'execa';
import type { Logger } from 'pino';
import type { PrefetchPattern } from '../dataset/params.js';
import type { PrefetchProgress } from './walk.js';

/** dist/ and src/ are siblings, so this resolves to the built worker from either. */
const WORKER = fileURLToPath(new URL('../../dist/prefetch/worker.js', import.meta.url));

export interface PrefetchStatus {
  matched: number;
  files: number;
  bytes: number;
  errors: number;
  /** Prefetch jobs of the dataset still running. */
  running: number;
  /** Prefetch jobs of the dataset that finished. */
  completed: number;
}

interface Job {
  progress: PrefetchProgress;
  child?: ResultPromise;
  running: boolean;
}

const signatureOf = (patterns: PrefetchPattern[]): string =>
  JSON.stringify(patterns.map((p) => `${p.metadataOnly ? 'meta:' : ''}${p.glob}`).sort());

/**
 * Warms datasets' caches in the background: each distinct pattern set once per dataset on this
 * node, however many volumes stage it at once, in a worker process per job.
 */
export class Prefetcher {
  private readonly datasets = new Map<string, Map<string, Job>>();

  constructor(
    private readonly log: Logger,
    private readonly concurrency: number,
    private readonly worker = WORKER,
  ) {}

  request(key: string, root: string, patterns: PrefetchPattern[]): void {
    if (patterns.length === 0) return;
    const jobs = this.datasets.get(key) ?? new Map<string, Job>();
    this.datasets.set(key, jobs);
    const signature = signatureOf(patterns);
    if (jobs.has(signature)) return;
    const job: Job = {
      progress: { matched: 0, files: 0, bytes: 0, errors: 0, done: false },
      running: true,
    };
    jobs.set(signature, job);
    const started = Date.now();
    const child = execa(
      process.execPath,
      [this.worker, root, String(this.concurrency), JSON.stringify(patterns)],
      {
        stdin: 'ignore',
        stderr: 'ignore',
        buffer: false,
        reject: false,
        extendEnv: false,
        env: { PATH: process.env.PATH ?? '/usr/bin:/bin' },
      },
    );
    job.child = child;
    this.log.info(
      { dataset: key, patterns: patterns.map((p) => p.glob), pid: child.pid },
      'prefetch started',
    );
    if (child.stdout) {
      createInterface({ input: child.stdout }).on('line', (line) => {
        try {
          job.progress = JSON.parse(line) as PrefetchProgress;
        } catch {
          // a partial line of a killed worker
        }
      });
    }
    void child.then((result) => {
      job.running = false;
      job.child = undefined;
      const { matched, files, bytes, errors, done } = job.progress;
      const fields = {
        dataset: key,
        matched,
        files,
        bytes,
        errors,
        durationMs: Date.now() - started,
      };
      if (done) this.log.info(fields, 'prefetch completed');
      else
        this.log.warn(
          { ...fields, exitCode: result.exitCode, signal: result.signal },
          'prefetch stopped early',
        );
    });
  }

  status(key: string): PrefetchStatus | undefined {
    const jobs = this.datasets.get(key);
    if (!jobs) return undefined;
    const status: PrefetchStatus = {
      matched: 0,
      files: 0,
      bytes: 0,
      errors: 0,
      running: 0,
      completed: 0,
    };
    for (const job of jobs.values()) {
      status.matched += job.progress.matched;
      status.files += job.progress.files;
      status.bytes += job.progress.bytes;
      status.errors += job.progress.errors;
      if (job.running) status.running += 1;
      else if (job.progress.done) status.completed += 1;
    }
    return status;
  }

  /** The dataset's client is gone: stop its jobs; a later stage prefetches again. */
  forget(key: string): void {
    for (const job of this.datasets.get(key)?.values() ?? []) job.child?.kill('SIGKILL');
    this.datasets.delete(key);
  }

  close(): void {
    for (const key of [...this.datasets.keys()]) this.forget(key);
  }
}
