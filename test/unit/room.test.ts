/**
 * The room fills hold in the copy (FillRoom, RoomLedger), with generated sequences of admissions,
 * installs and ends beside a hand-written case, and the copy's own room seen from a promotion.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { LocalCopy } from '../../src/copy/local-copy.js';
import { RoomLedger } from '../../src/copy/room.js';

describe('FillRoom', () => {
  it('holds each admitted file once, until it is installed or the fill ends', () => {
    const ledger = new RoomLedger();
    const room = ledger.open();
    room.measured(100);
    expect(room.take({ relative: 'a', size: 60 })).toBe(true);
    expect(room.take({ relative: 'a', size: 60 })).toBe(true);
    expect(room.take({ relative: 'b', size: 50 })).toBe(false);
    expect(room.take({ relative: 'c', size: 40 })).toBe(true);
    expect(ledger.holding()).toBe(100);
    expect(ledger.heldFor('a')).toBe(60);
    ledger.settle('a');
    expect(ledger.holding()).toBe(40);
    // What was installed stays taken from this fill's room: the copy counts it now.
    expect(room.take({ relative: 'b', size: 1 })).toBe(false);
    room.close();
    expect(ledger.holding()).toBe(0);
  });

  it('the ledger holds what open rooms admitted and no file entered, never more than measured (generated)', () => {
    const step = fc.oneof(
      fc.record({
        kind: fc.constant('take' as const),
        room: fc.nat(2),
        file: fc.nat(9),
        size: fc.nat(50),
      }),
      fc.record({ kind: fc.constant('settle' as const), file: fc.nat(9) }),
      fc.record({ kind: fc.constant('close' as const), room: fc.nat(2) }),
    );
    fc.assert(
      fc.property(
        fc.array(fc.nat(120), { minLength: 3, maxLength: 3 }),
        fc.array(step),
        (lefts, steps) => {
          const ledger = new RoomLedger();
          const rooms = lefts.map((left) => {
            const room = ledger.open();
            room.measured(left);
            return room;
          });
          // The model: per open room, file -> size held; per room, bytes ever taken.
          const held = lefts.map(() => new Map<string, number>());
          const taken = lefts.map(() => new Set<string>());
          const spent = lefts.map(() => 0);
          const open = lefts.map(() => true);
          for (const s of steps) {
            if (s.kind === 'take') {
              const relative = `f${s.file}`;
              const ok = rooms[s.room]!.take({ relative, size: s.size });
              if (!open[s.room]) continue;
              if (held[s.room]!.has(relative)) {
                expect(ok).toBe(true);
              } else if (ok) {
                held[s.room]!.set(relative, s.size);
                taken[s.room]!.add(relative);
                spent[s.room]! += s.size;
              }
            } else if (s.kind === 'settle') {
              ledger.settle(`f${s.file}`);
              for (const h of held) h.delete(`f${s.file}`);
            } else {
              rooms[s.room]!.close();
              open[s.room] = false;
              held[s.room]!.clear();
            }
            const expected = held.reduce(
              (sum, h, i) => sum + (open[i] ? [...h.values()].reduce((a, b) => a + b, 0) : 0),
              0,
            );
            expect(ledger.holding()).toBe(expected);
            spent.forEach((bytes, i) => expect(bytes).toBeLessThanOrEqual(lefts[i]!));
          }
        },
      ),
      { numRuns: 300 },
    );
  });
});

describe('LocalCopy.room', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'room-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('leaves out what fills hold, except for a promotion of the very file held', async () => {
    const copy = new LocalCopy(dir);
    await copy.prepare();
    const engineFile = async (name: string) => {
      const path = join(dir, `engine-${name}`);
      await writeFile(path, 'x'.repeat(16));
      return path;
    };
    const remote = { size: 16, mtimeMs: Number.NaN };
    const before = await copy.room({ linked: true });
    const room = copy.roomForFill();
    room.measured(before);
    // The fill admits `a` (16 bytes) and fills the rest of the room but 8 bytes with `b`.
    expect(room.take({ relative: 'a', size: 16 })).toBe(true);
    expect(room.take({ relative: 'b', size: before - 24 })).toBe(true);
    expect(await copy.room({ linked: true })).toBe(8);
    // A pod read `c` on demand: no room is left for it in the copy.
    expect(await copy.installLinked(await engineFile('c'), 'c', remote, async () => true)).toBe(
      'no-room',
    );
    // A pod read `a`, which the fill admitted: its promotion takes the room held for it.
    expect(
      await copy.installLinked(await engineFile('a'), 'a', remote, async () => true),
    ).toBeUndefined();
    expect(await copy.room({ linked: true })).toBe(8);
    room.close();
    expect(await copy.room({ linked: true })).toBe(before - 16);
    expect(copy.current()).toMatchObject({ files: 1, bytes: 16, refusedForRoom: 1, promoted: 1 });
  });
});
