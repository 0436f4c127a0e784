/**
 * How nodes filling a dataset together split it: every file has exactly one fetcher, the same on
 * every node; a member leaving moves only its own files; stalled members own nothing; an idle node
 * takes only the far end of a share big enough that its owner will not reach it first; a node joining
 * a fill in progress fetches last what the earlier members may hold; members are fresh by the
 * store's clock alone.
 */
import fc from 'fast-check';
import type { RemoteEntry } from '../../src/engines/rclone-transfer.js';
import {
  claimHolders,
  claimOf,
  freshMembers,
  memberName,
  parseMemberObject,
  type MemberView,
  lookIntervalMs,
} from '../../src/tier/members.js';
import {
  CHUNK_BYTES,
  CHUNK_MIN_BYTES,
  headChunk,
  inOthersHands,
  nextChunk,
  ownerOf,
  shares,
} from '../../src/tier/split.js';

const entry = (relative: string, size = 1000): RemoteEntry => ({ relative, size, mtimeMs: 1 });
const view = (self: string, members: string[], stalled: string[] = []): MemberView => ({
  self,
  members,
  stalled: new Set(stalled),
});
const names = fc.uniqueArray(fc.stringMatching(/^[a-z0-9/._-]{1,40}$/), {
  minLength: 1,
  maxLength: 200,
});
const members = fc.uniqueArray(fc.stringMatching(/^[0-9a-f]{16}$/), {
  minLength: 1,
  maxLength: 8,
});

it('every file goes to exactly one member, whichever node computes it, and a leaver moves only its own', () => {
  let runs = 0;
  fc.assert(
    fc.property(names, members, fc.nat(), (paths, group, pick) => {
      runs += 1;
      const wanted = paths.map((p) => entry(p));
      const split = shares(wanted, view(group[0]!, group));
      const assigned = [...split.values()].flat().map((e) => e.relative);
      expect(assigned.sort()).toEqual([...paths].sort());
      // Another node (another self, another order of members) finds the same owners.
      const again = shares(wanted, view(group.at(-1)!, [...group].reverse()));
      for (const [owner, list] of split) expect(again.get(owner)).toEqual(list);
      // A member leaves: only its files move.
      const leaver = group[pick % group.length]!;
      const rest = group.filter((m) => m !== leaver);
      if (rest.length === 0) return;
      for (const path of paths) {
        const before = ownerOf(path, group);
        if (before !== leaver) expect(ownerOf(path, rest)).toBe(before);
      }
    }),
    { numRuns: 300 },
  );
  expect(runs).toBe(300);
});

it('the split is even: three members each get about a third of 3,000 files', () => {
  const group = ['a1', 'b2', 'c3'].map(memberName);
  const wanted = Array.from({ length: 3000 }, (_, i) => entry(`train/d${i % 30}/f${i}.jpg`));
  const split = shares(wanted, view(group[0]!, group));
  for (const member of group) {
    expect(split.get(member)?.length).toBeGreaterThan(850);
    expect(split.get(member)?.length).toBeLessThan(1150);
  }
});

it("a stalled member's files go to the others; this node never counts itself stalled", () => {
  const group = ['a1', 'b2', 'c3'].map(memberName);
  const wanted = Array.from({ length: 300 }, (_, i) => entry(`f${i}`));
  const split = shares(wanted, view(group[0]!, group, [group[1]!]));
  expect(split.has(group[1]!)).toBe(false);
  expect([...split.values()].flat()).toHaveLength(300);
  const self = shares(wanted, view(group[0]!, group, [group[0]!]));
  expect(self.get(group[0]!)?.length).toBeGreaterThan(0);
});

it('a chunk is at most CHUNK_BYTES, one file at least; own files first, in order', () => {
  const big = [entry('a', CHUNK_BYTES * 3), entry('b', 10)];
  expect(headChunk(big).map((e) => e.relative)).toEqual(['a']);
  const small = Array.from({ length: 100 }, (_, i) =>
    entry(`f${String(i).padStart(3, '0')}`, CHUNK_BYTES / 10),
  );
  expect(headChunk(small)).toHaveLength(10);
  const group = ['a1', 'b2'].map(memberName);
  const wanted = small;
  const own = shares(wanted, view(group[0]!, group)).get(group[0]!)!;
  const { chunk, takenFrom } = nextChunk(wanted, view(group[0]!, group));
  expect(takenFrom).toBeUndefined();
  expect(chunk).toEqual(own.slice(0, chunk.length));
  // Early in a fill (others may still join and cut the share), chunks of 8 MiB at most.
  const early = nextChunk(wanted, view(group[0]!, group), new Set(), true).chunk;
  expect(chunk.length).toBeGreaterThan(1);
  expect(early).toEqual(own.slice(0, 1));
  const mib = own.map((e) => ({ ...e, size: CHUNK_MIN_BYTES / 2 }));
  expect(mib.length).toBeGreaterThanOrEqual(40);
  expect(nextChunk(mib, view(group[0]!, group), new Set(), true).chunk).toEqual(mib.slice(0, 8));
  expect(nextChunk(mib, view(group[0]!, group)).chunk.length).toBeGreaterThan(8);
});

it("an idle node takes the far end of another's share only when it is over two chunks", () => {
  const group = ['a1', 'b2'].map(memberName);
  const [self, other] = group as [string, string];
  const files = Array.from({ length: 400 }, (_, i) =>
    entry(`f${String(i).padStart(3, '0')}`, CHUNK_BYTES / 40),
  );
  const theirs = files.filter((e) => ownerOf(e.relative, group) === other);
  const { chunk, takenFrom } = nextChunk(theirs, view(self, group));
  expect(takenFrom).toBe(other);
  expect(chunk.length).toBeGreaterThan(0);
  expect(chunk).toEqual(theirs.slice(theirs.length - chunk.length));
  // Two chunks or less: waited for (its owner is at work on them).
  const few = theirs.slice(0, 60);
  expect(nextChunk(few, view(self, group)).chunk).toEqual([]);
  // One big file of another member is never fetched twice.
  const one = [entry('big', CHUNK_BYTES * 8)];
  const owner = ownerOf('big', group);
  const idle = group.find((m) => m !== owner)!;
  expect(nextChunk(one, view(idle, group)).chunk).toEqual([]);
});

it('idle members taking from the same share take different files', () => {
  const group = ['a1', 'b2', 'c3'].map(memberName);
  const [owner, ...idle] = group as [string, string, string];
  const files = Array.from({ length: 900 }, (_, i) =>
    entry(`f${String(i).padStart(3, '0')}`, CHUNK_BYTES / 40),
  );
  // What is left is the owner's share alone (the others are done with theirs).
  const theirs = files.filter((e) => ownerOf(e.relative, group) === owner);
  const taken = idle.map((self) => nextChunk(theirs, view(self, group)));
  for (const { chunk, takenFrom } of taken) {
    expect(takenFrom).toBe(owner);
    expect(chunk.length).toBeGreaterThan(0);
  }
  const [first, second] = taken.map(({ chunk }) => new Set(chunk.map((e) => e.relative)));
  expect([...first!].filter((name) => second!.has(name))).toEqual([]);
});

it("members are fresh by the store's times: within two refresh intervals of this node's own write", () => {
  const a = memberName('node-a');
  const b = memberName('node-b');
  const c = memberName('node-c');
  const now = 1_000_000;
  const fresh = freshMembers(
    [
      { name: `${a}~3`, size: 2, storedAtMs: now },
      { name: `${b}~1`, size: 2, storedAtMs: now - 9_000 },
      { name: `${b}~2`, size: 2, storedAtMs: now - 1_000 },
      { name: `${c}~7`, size: 2, storedAtMs: now - 10_001 },
      { name: 'stray.txt', size: 2, storedAtMs: now },
    ],
    now,
    5000,
  );
  expect([...fresh.keys()].sort()).toEqual([a, b].sort());
  expect(fresh.get(b)).toEqual({ progress: 2, at: now - 1_000, claims: new Map() });
  expect(parseMemberObject(`${a}~12`)).toEqual({ member: a, progress: 12, claims: [] });
  expect(parseMemberObject('x~1')).toBeUndefined();
});

it("members look for each other's uploads less often as they grow: the tier's listings stay bounded", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 5000 }),
      fc.integer({ min: 200, max: 60_000 }),
      (members, refreshMs) => {
        const interval = lookIntervalMs(members, refreshMs);
        // Never slower than the refresh (a member's own view is no fresher), never faster than a
        // second (or half a short refresh).
        expect(interval).toBeLessThanOrEqual(refreshMs);
        expect(interval).toBeGreaterThanOrEqual(Math.min(1000, refreshMs / 2));
        expect(lookIntervalMs(members + 1, refreshMs)).toBeGreaterThanOrEqual(interval);
        // All members' looks (two listings each) stay within 50 listings a second unless the
        // refresh caps the interval.
        if (interval < refreshMs) expect((members * 2 * 1000) / interval).toBeLessThanOrEqual(50);
      },
    ),
    { numRuns: 300 },
  );
  expect(lookIntervalMs(3, 5000)).toBe(1000);
  expect(lookIntervalMs(100, 5000)).toBe(4000);
});

it("a claim is its member's from the oldest object that names it; the earliest claim wins, ties to the lower name; stalled members hold none", () => {
  const [a, b, c] = ['node-a', 'node-b', 'node-c'].map(memberName) as [string, string, string];
  const big = claimOf('big/shard-0.bin');
  const other = claimOf('big/shard-1.bin');
  expect(parseMemberObject(`${a}~4~${big}~${other}`)).toEqual({
    member: a,
    progress: 4,
    claims: [big, other],
  });
  expect(parseMemberObject(`${a}~4~${big}~x`)).toBeUndefined();
  const now = 1_000_000;
  const fresh = freshMembers(
    [
      // a claimed it at now - 3000 and rewrote its object since (its progress moved).
      { name: `${a}~1~${big}`, size: 2, storedAtMs: now - 3_000 },
      { name: `${a}~2~${big}`, size: 2, storedAtMs: now - 500 },
      { name: `${b}~7~${big}~${other}`, size: 2, storedAtMs: now - 1_000 },
      { name: `${c}~3~${other}`, size: 2, storedAtMs: now - 1_000 },
    ],
    now,
    5000,
  );
  expect(fresh.get(a)).toEqual({
    progress: 2,
    at: now - 500,
    claims: new Map([[big, now - 3_000]]),
  });
  const holders = claimHolders(fresh, new Set([a, b, c]));
  expect(holders.get(big)).toEqual({ member: a, at: now - 3_000 });
  expect(holders.get(other)).toEqual({ member: b < c ? b : c, at: now - 1_000 });
  // a stalled: its claim is nobody's, b's is next.
  expect(claimHolders(fresh, new Set([b, c])).get(big)).toEqual({ member: b, at: now - 1_000 });
});

it('a file that may make a chunk alone, claimed by another working member, is its share, whoever rendezvous hashing names; files under the least chunk are never claimed', () => {
  fc.assert(
    fc.property(members, fc.nat(), (group, pick) => {
      const self = group[pick % group.length]!;
      const claimer = group[(pick + 1) % group.length]!;
      const big = entry('big/file.bin', CHUNK_BYTES + 1);
      const small = entry('small/file.bin', CHUNK_MIN_BYTES - 1);
      const claims = new Map([
        [claimOf(big.relative), claimer],
        [claimOf(small.relative), claimer],
      ]);
      const split = shares([big, small], { ...view(self, group), claims });
      expect(split.get(claimer)).toContainEqual(big);
      expect(split.get(ownerOf(small.relative, group))).toContainEqual(small);
      if (claimer !== self)
        expect(nextChunk([big], { ...view(self, group), claims }).chunk).toEqual([]);
    }),
  );
});

it('a node joining a fill in progress fetches last the files of its share the earlier members fetched first (their shares without it); nobody earlier, nothing held back', () => {
  fc.assert(
    fc.property(names, members, fc.nat(), (paths, group, pick) => {
      fc.pre(group.length >= 2);
      const wanted = [...paths].sort().map((p) => entry(p, CHUNK_MIN_BYTES / 8));
      const self = group[pick % group.length]!;
      const others = group.filter((m) => m !== self);
      const joiner: MemberView = { ...view(self, group), earlier: new Set(others) };
      const own = shares(wanted, joiner).get(self) ?? [];
      const inHand = inOthersHands(wanted, joiner);
      const ownNames = new Set(own.map((e) => e.relative));
      for (const relative of inHand) expect(ownNames.has(relative)).toBe(true);
      expect(inOthersHands(wanted, view(self, group)).size).toBe(0);
      // What each earlier member fetched first without this node (its first chunk at least).
      const without = shares(wanted, view(others[0]!, others));
      for (const member of others) {
        for (const e of headChunk(without.get(member) ?? [], CHUNK_MIN_BYTES)) {
          if (ownNames.has(e.relative)) expect(inHand.has(e.relative)).toBe(true);
        }
      }
      // The files nobody else can hold come first, in path order.
      const { chunk } = nextChunk(wanted, joiner, inHand);
      const fresh = own.filter((e) => !inHand.has(e.relative));
      const firstHeld = chunk.findIndex((e) => inHand.has(e.relative));
      if (firstHeld >= 0) expect(chunk.slice(0, firstHeld)).toEqual(fresh);
      else expect(chunk).toEqual(fresh.slice(0, chunk.length));
    }),
  );
});
