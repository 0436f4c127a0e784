/**
 * A dataset's prefetch figures (statusOf, addFailed): what jobs, failed sweep fills and sweeps
 * seen add up to, with generated sets of jobs beside hand-written cases.
 */
import fc from 'fast-check';
import { addFailed, REFRESH, statusOf, SWEEP, type Job } from '../../src/prefetch/jobs.js';

const job = (progress: Partial<Job['progress']>, running = false, endedAt?: number): Job => ({
  progress: { matched: 0, files: 0, bytes: 0, errors: 0, done: false, ...progress },
  running,
  ...(endedAt !== undefined && { endedAt }),
  stop: () => undefined,
});

describe('statusOf', () => {
  it('sums prefetches and sweep fills, leaves the copy check out, and counts sweeps apart', () => {
    const jobs = new Map<string, Job>([
      [REFRESH, job({ matched: 1000, files: 1000, bytes: 1e9, errors: 3, done: true }, false, 9)],
      ['["train/**"]', job({ matched: 10, files: 8, bytes: 800, noRoom: 2, done: true }, false, 5)],
      [`${SWEEP}val/**`, job({ matched: 6, files: 6, bytes: 60, alreadyHeld: 2 }, true)],
    ]);
    expect(statusOf(jobs, undefined, 3)).toEqual({
      matched: 16,
      files: 14,
      bytes: 860,
      errors: 0,
      noRoom: 2,
      running: 1,
      completed: 1,
      lastCompletedAt: 5,
      sweeps: { seen: 3, filled: 1, files: 4, bytes: 60 },
    });
  });

  it('keeps what failed sweep fills did once their jobs are dropped, however many failed', () => {
    const failedJob = job({
      matched: 5,
      files: 3,
      bytes: 30,
      errors: 1,
      alreadyHeld: 1,
      noRoom: 1,
    });
    let failed = addFailed(undefined, failedJob);
    for (let i = 0; i < 999; i += 1) failed = addFailed(failed, failedJob);
    const status = statusOf(new Map(), failed, 1000);
    expect(status).toMatchObject({ matched: 5000, files: 3000, bytes: 30_000, errors: 1000 });
    expect(status).toMatchObject({ noRoom: 1000, running: 0, completed: 0 });
    expect(status.sweeps).toEqual({ seen: 1000, filled: 1000, files: 2000, bytes: 30_000 });
  });

  it('gives the same figures whether a failed sweep fill is kept as a job or folded in', () => {
    const progress = fc.record({
      matched: fc.nat(1000),
      files: fc.nat(1000),
      bytes: fc.nat(1e9),
      errors: fc.nat(10),
      noRoom: fc.nat(10),
      alreadyHeld: fc.nat(1000),
      done: fc.constant(false),
    });
    fc.assert(
      fc.property(fc.array(progress, { maxLength: 20 }), fc.nat(50), (failures, seen) => {
        const kept = new Map(failures.map((p, i) => [`${SWEEP}d/**#${i}`, job(p)]));
        const folded = failures.reduce(
          (sum: ReturnType<typeof addFailed> | undefined, p) => addFailed(sum, job(p)),
          undefined,
        );
        expect(statusOf(new Map(), folded, seen)).toEqual(statusOf(kept, undefined, seen));
      }),
    );
  });
});
