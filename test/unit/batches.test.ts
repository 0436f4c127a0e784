/**
 * The batch pipeline between a fill's listing and its transfers: every listed item is handed over
 * exactly once and in order, no more batches at once than its shape says while the listing goes on
 * (the last one may start beside them), none below the minimum but the last nor above the cap, a
 * group (a directory) split only where it must be, and a failed batch stops the rest and is
 * reported.
 */
import { setImmediate as tick } from 'node:timers/promises';
import fc from 'fast-check';
import { BatchPipeline } from '../../src/copy/batches.js';

it('hands every item over once, in order, within its shape (size, batches in flight), none short but the last', async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.integer({ min: 1, max: 20 }),
      // How much more than the minimum a batch may take (undefined: no cap), batches in flight.
      fc.option(fc.integer({ min: 0, max: 20 }), { nil: undefined }),
      fc.integer({ min: 1, max: 3 }),
      // Per item: ticks the listing waits before it; per batch: ticks the transfer takes.
      fc.array(fc.integer({ min: 0, max: 3 }), { maxLength: 120 }),
      fc.array(fc.integer({ min: 0, max: 6 }), { minLength: 1, maxLength: 10 }),
      async (minBatch, extra, inFlight, gaps, durations) => {
        const maxBatch = extra === undefined ? undefined : minBatch + extra;
        const batches: number[][] = [];
        let running = 0;
        let ended = false;
        /** The most batches running at once while items were still coming, and after. */
        let mostBefore = 0;
        let mostAfter = 0;
        const pipeline = new BatchPipeline<number>(
          { minBatch, maxBatch, inFlight },
          async (batch) => {
            running += 1;
            if (ended) mostAfter = Math.max(mostAfter, running);
            else mostBefore = Math.max(mostBefore, running);
            batches.push(batch);
            for (let t = 0; t < (durations[batches.length % durations.length] ?? 0); t += 1)
              await tick();
            running -= 1;
          },
        );
        for (const [item, gap] of gaps.entries()) {
          for (let t = 0; t < gap; t += 1) await tick();
          pipeline.add(item);
        }
        ended = true;
        await pipeline.finish();
        expect(mostBefore).toBeLessThanOrEqual(inFlight);
        // The last batch never waits for a slot: one more than the shape's at the end.
        expect(mostAfter).toBeLessThanOrEqual(inFlight + 1);
        expect(running).toBe(0);
        expect(batches.flat()).toEqual(gaps.map((_, item) => item));
        for (const batch of batches.slice(0, -1))
          expect(batch.length).toBeGreaterThanOrEqual(minBatch);
        for (const batch of batches) expect(batch.length).toBeLessThanOrEqual(maxBatch ?? Infinity);
        expect(batches.every((batch) => batch.length > 0)).toBe(true);
      },
    ),
    { numRuns: 300 },
  );
});

it('with groups (directories), a batch holds one where it can: groups are split only by a full batch or the last', async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.integer({ min: 1, max: 12 }),
      fc.integer({ min: 0, max: 20 }),
      fc.integer({ min: 1, max: 3 }),
      // The groups, as the listing brings them: one run of items each.
      fc.array(fc.integer({ min: 1, max: 30 }), { maxLength: 12 }),
      fc.array(fc.integer({ min: 0, max: 3 }), { minLength: 1, maxLength: 10 }),
      async (minBatch, extra, inFlight, runs, gaps) => {
        const maxBatch = minBatch + extra;
        const groupOf = runs.flatMap((length, group) => Array<number>(length).fill(group));
        const batches: number[][] = [];
        const pipeline = new BatchPipeline<number>(
          { minBatch, maxBatch, inFlight, groupOf: (item) => String(groupOf[item]) },
          async (batch) => {
            batches.push(batch);
            await tick();
          },
        );
        for (const item of groupOf.keys()) {
          for (let t = 0; t < (gaps[item % gaps.length] ?? 0); t += 1) await tick();
          pipeline.add(item);
        }
        await pipeline.finish();
        expect(batches.flat()).toEqual([...groupOf.keys()]);
        const group = (item: number | undefined) => groupOf[item ?? -1];
        for (const [i, batch] of batches.slice(0, -1).entries()) {
          expect(batch.length).toBeGreaterThanOrEqual(minBatch);
          expect(batch.length).toBeLessThanOrEqual(maxBatch);
          // A group goes on into the next batch only after a full one.
          if (group(batch.at(-1)) === group(batches[i + 1]?.[0]))
            expect(batch.length).toBe(maxBatch);
          // Several groups in a batch: those before its last were smaller than the minimum together.
          const beforeLast = batch.filter((item) => group(item) !== group(batch.at(-1))).length;
          expect(beforeLast).toBeLessThan(minBatch);
        }
      },
    ),
    { numRuns: 300 },
  );
});

it('at the end, what is left starts beside a running batch, and finish waits for both', async () => {
  const started: number[][] = [];
  let release: () => void = () => undefined;
  const firstHeld = new Promise<void>((resolve) => {
    release = resolve;
  });
  const pipeline = new BatchPipeline<number>({ minBatch: 2 }, async (batch) => {
    started.push(batch);
    if (started.length === 1) await firstHeld;
  });
  for (let item = 0; item < 3; item += 1) pipeline.add(item);
  let finished = false;
  const finishing = pipeline.finish().then(() => {
    finished = true;
  });
  await tick();
  expect(started).toEqual([[0, 1], [2]]);
  expect(finished).toBe(false);
  release();
  await finishing;
  expect(finished).toBe(true);
});

it('a failed batch stops the batches after it, and finish reports the failure', async () => {
  const seen: number[][] = [];
  const pipeline = new BatchPipeline<number>({ minBatch: 2 }, async (batch) => {
    seen.push(batch);
    if (seen.length === 1) throw new Error('transfer failed');
  });
  for (let item = 0; item < 6; item += 1) {
    pipeline.add(item);
    await tick();
  }
  await expect(pipeline.finish()).rejects.toThrow('transfer failed');
  expect(seen).toEqual([[0, 1]]);
});

it('an infinite minimum waits for the end, then hands everything over as one batch', async () => {
  const seen: number[][] = [];
  const pipeline = new BatchPipeline<number>(
    { minBatch: Number.POSITIVE_INFINITY },
    async (batch) => {
      seen.push(batch);
    },
  );
  for (let item = 0; item < 5; item += 1) pipeline.add(item);
  await tick();
  expect(seen).toEqual([]);
  await pipeline.finish();
  expect(seen).toEqual([[0, 1, 2, 3, 4]]);
});
