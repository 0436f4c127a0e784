// Sweep detection: which directories pods are sweeping, from the files they read whole on demand.
import fc from 'fast-check';
import { SweepDetector } from '../../src/copy/sweeps.js';

const RULE = { minFiles: 16, windowMs: 30_000 };
const tree = (dirs: string[], perDir: number): string[] =>
  dirs.flatMap((dir) =>
    Array.from({ length: perDir }, (_, i) => (dir === '' ? `f${i}` : `${dir}/f${i}`)),
  );

describe('SweepDetector', () => {
  it('sees a shuffled read of the whole dataset as a sweep of the dataset', () => {
    const detector = new SweepDetector(RULE);
    const files = tree(['d0', 'd1', 'd2', 'd3'], 5).sort(() => Math.random() - 0.5);
    expect(detector.observe(files.slice(0, 15), 0)).toEqual([]);
    expect(detector.observe(files.slice(15, 16), 1)).toEqual([
      { directory: '', files: 16, branches: 4, windowMs: RULE.windowMs },
    ]);
    // Once the dataset is swept, nothing under it is reported again.
    expect(detector.observe(files.slice(16), 2)).toEqual([]);
  });

  it('sees a forgotten sweep again, from new evidence only', () => {
    const detector = new SweepDetector(RULE);
    const files = Array.from({ length: 40 }, (_, i) => `d${i % 2}/f${Math.floor(i / 2)}`);
    expect(detector.observe(files.slice(0, 16), 0).map((s) => s.directory)).toEqual(['']);
    expect(detector.observe(files.slice(16, 30), 1)).toEqual([]);
    detector.forget('');
    // What was read while the sweep stood is no evidence for the next one.
    expect(detector.observe(files.slice(30, 40), 2)).toEqual([]);
    expect(detector.observe(files.slice(0, 6), 3).map((s) => s.files)).toEqual([16]);
  });

  it('sees reads confined to train/ as a sweep of train/, not of the dataset', () => {
    const detector = new SweepDetector(RULE);
    const sweeps = detector.observe(tree(['train/a', 'train/b'], 10), 0);
    expect(sweeps.map((s) => s.directory)).toEqual(['train']);
    expect(detector.observe(tree(['val'], 3), 1)).toEqual([]);
  });

  it('sees files right in one directory as a sweep of it', () => {
    const detector = new SweepDetector(RULE);
    expect(detector.observe(tree(['x/shards'], 16), 0).map((s) => s.directory)).toEqual([
      'x/shards',
    ]);
  });

  it('forgets files read longer ago than the window', () => {
    const detector = new SweepDetector(RULE);
    const files = tree(['d0', 'd1'], 10);
    expect(detector.observe(files.slice(0, 10), 0)).toEqual([]);
    expect(detector.observe(files.slice(10, 15), RULE.windowMs + 1)).toEqual([]);
    expect(detector.observe(files.slice(15, 20), RULE.windowMs + 2)).toEqual([]);
    // The first ten are still counted within a window of each other.
    const again = new SweepDetector(RULE);
    expect(again.observe(files.slice(0, 10), 0)).toEqual([]);
    expect(again.observe(files.slice(10, 16), RULE.windowMs - 1)).toHaveLength(1);
  });

  it('does not count the same file twice', () => {
    const detector = new SweepDetector(RULE);
    const files = tree(['d0', 'd1'], 8);
    expect(detector.observe([...files.slice(0, 15), ...files.slice(0, 15)], 0)).toEqual([]);
  });

  it('reports only directories with enough distinct files, never one under one reported before', () => {
    const file = fc
      .array(fc.constantFrom('a', 'b', 'c', 'd'), { minLength: 1, maxLength: 4 })
      .map((parts) => parts.join('/'));
    fc.assert(
      fc.property(
        fc.array(fc.array(file, { maxLength: 40 }), { minLength: 1, maxLength: 5 }),
        (batches) => {
          const detector = new SweepDetector({ minFiles: 5, windowMs: 1_000_000 });
          const read = new Set<string>();
          const reported: string[] = [];
          batches.forEach((batch, i) => {
            batch.forEach((f) => read.add(f));
            for (const sweep of detector.observe(batch, i)) {
              const under = [...read].filter(
                (f) => sweep.directory === '' || f.startsWith(`${sweep.directory}/`),
              );
              expect(under.length).toBeGreaterThanOrEqual(sweep.files);
              expect(sweep.files).toBeGreaterThanOrEqual(5);
              reported.push(sweep.directory);
            }
          });
          reported.forEach((later, j) => {
            for (const earlier of reported.slice(0, j)) {
              expect(earlier === '' || later === earlier || later.startsWith(`${earlier}/`)).toBe(
                false,
              );
            }
          });
        },
      ),
      { numRuns: 300 },
    );
  });
});
