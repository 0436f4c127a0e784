/**
 * Claims on files bigger than a chunk, between two members of one fill (FillGroup, real rclone
 * against s3rver on loopback): a claim seen first is its holder's; of two made at once at most one
 * holds, also when the store shows one of them with a time before the moment it became visible,
 * and a file neither holds can be claimed again; a released claim is gone at its holder's next refresh, and the file can be claimed again;
 * a holder whose progress stopped (stalled) holds nothing. Members that join together are none of
 * them earlier than the others; one that had filled a while before another joined is earlier for it.
 */
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseSource } from '../../src/dataset/source.js';
import { S3Server } from '../../src/demo/s3-server.js';
import { RcloneTransfers, type StoreObject } from '../../src/engines/rclone-transfer.js';
import type { TransferSource } from '../../src/engines/transfer-source.js';
import { claimOf, FillGroup } from '../../src/tier/members.js';
import { until } from '../helpers/wait.js';

const REFRESH_MS = 600;
let work: string;
let store: S3Server;
let folder: TransferSource;
const groups: FillGroup[] = [];

beforeAll(async () => {
  work = await mkdtemp('/tmp/dcsi-claims-');
  await mkdir(join(work, 'home'));
  store = await S3Server.start(join(work, 's3'), ['tier']);
  folder = {
    source: parseSource('s3://tier/members/fill'),
    secrets: store.secrets(),
    runtimeDir: join(work, 'home'),
  };
}, 60_000);

afterAll(async () => {
  await Promise.all(groups.map((group) => group.leave()));
  await store?.stop();
  await rm(work, { recursive: true, force: true });
});

async function joined(
  node: string,
  where = folder,
  transfers = new RcloneTransfers(),
): Promise<FillGroup> {
  const group = new FillGroup(transfers, where, node, REFRESH_MS);
  groups.push(group);
  await group.join();
  return group;
}

it('a claim seen first is its holder’s; two at once leave at most one holder; a released claim can be made again; a stalled holder’s claim counts for nothing', async () => {
  const a = await joined('node-a');
  const b = await joined('node-b');
  const working = await atWork(a, b);
  try {
    expect(await a.claim('big/first.bin')).toBe(true);
    expect(await b.claim('big/first.bin')).toBe(false);
    expect(b.members.claims?.get(claimOf('big/first.bin'))).toBe(a.members.self);

    // Made at once, again and again: never two holders; a file neither holds is claimed again.
    for (let round = 0; round < 4; round += 1) {
      const file = `big/together-${round}.bin`;
      const both = await Promise.all([a.claim(file), b.claim(file)]);
      expect(both.filter((held) => held).length).toBeLessThanOrEqual(1);
      if (!both.some((held) => held)) expect(await b.claim(file)).toBe(true);
    }

    a.release('big/first.bin');
    // Gone at a's next refresh; b sees it at its own.
    await until('the released claim to be gone for b', async () =>
      (await b.claim('big/first.bin')) ? true : undefined,
    );
    expect(await a.claim('big/first.bin')).toBe(false);

    // b holds it but its progress stops: once a sees b stalled, the claim is nobody's.
    clearInterval(working[1]);
    await until('a to see b stalled', async () =>
      a.members.stalled.has(b.members.self) ? true : undefined,
    );
    expect(await a.claim('big/first.bin')).toBe(true);
  } finally {
    working.forEach(clearInterval);
  }
}, 60_000);

/**
 * Keeps the members at work, as fetchers are (a member whose progress stops is stalled), until
 * each sees the others; returns their timers, to stop.
 */
async function atWork(...members: FillGroup[]): Promise<NodeJS.Timeout[]> {
  const timers = members.map((member) => setInterval(() => member.noteWork(), 100));
  try {
    await until('the members to see each other', async () =>
      members.every((m) => m.members.members.length === members.length) ? true : undefined,
    );
  } catch (err) {
    timers.forEach(clearInterval);
    throw err;
  }
  return timers;
}

/**
 * The store's transfers as one node sees them, with two faults a store may show: its listings
 * leave out the objects `hidden` names (written, not yet visible to it), and an upload whose name
 * `holdAfter` names waits, once written, until `release` (so another node acts in between).
 */
class StoreSeenLate extends RcloneTransfers {
  hidden: (name: string) => boolean = () => false;
  holdAfter: (name: string) => boolean = () => false;
  written = false;
  private released!: () => void;
  private readonly gate = new Promise<void>((resolve) => (this.released = resolve));

  release(): void {
    this.released();
  }

  override async listObjects(target: TransferSource, signal?: AbortSignal): Promise<StoreObject[]> {
    return (await super.listObjects(target, signal)).filter((o) => !this.hidden(o.name));
  }

  override async upload(...args: Parameters<RcloneTransfers['upload']>): Promise<void> {
    await super.upload(...args);
    if (this.holdAfter(args[1])) {
      this.written = true;
      await this.gate;
    }
  }
}

it('a claim the store shows with an earlier time than the moment another node could see it is not held twice', async () => {
  const where = { ...folder, source: parseSource('s3://tier/members/late-visible') };
  const claim = claimOf('big/late.bin');
  const aStore = new StoreSeenLate();
  const bStore = new StoreSeenLate();
  const a = await joined('node-a', where, aStore);
  const b = await joined('node-b', where, bStore);
  const working = await atWork(a, b);
  try {
    // b writes its claim first (the store's earlier time) and lists only after a has decided;
    // a's listings do not show b's claim yet.
    bStore.holdAfter = (name) => name.includes(claim);
    aStore.hidden = (name) => name.startsWith(b.members.self) && name.includes(claim);
    const bClaim = b.claim('big/late.bin');
    await until('b to have written its claim', async () => (bStore.written ? true : undefined));
    // s3rver's times are whole seconds: a's claim is then stored a second later than b's, which
    // the first form of claims took for "b's claim came first" and let b hold it too.
    await sleep(1100);
    const aHolds = await a.claim('big/late.bin');
    bStore.release();
    const bHolds = await bClaim;
    expect(aHolds).toBe(true);
    expect(bHolds).toBe(false);
  } finally {
    working.forEach(clearInterval);
    bStore.release();
  }
}, 90_000);

it('members joining together are not earlier than each other; members filling for a while before a node joins are earlier for it', async () => {
  const late = { ...folder, source: parseSource('s3://tier/members/late') };
  const [c, d] = await Promise.all([joined('node-c', late), joined('node-d', late)]);
  const working = setInterval(() => {
    c.noteWork();
    d.noteWork();
  }, 100);
  try {
    expect([...(c.members.earlier ?? [])]).toEqual([]);
    expect([...(d.members.earlier ?? [])]).toEqual([]);
    // Both at work now: a node joining once their progress moved twice finds them earlier.
    const e = await until('a node joining now to find both earlier', async () => {
      const joiner = await joined('node-e', late);
      if (joiner.members.earlier?.size === 2) return joiner;
      await joiner.leave();
      return undefined;
    });
    expect([...e.members.earlier!].sort()).toEqual([c.members.self, d.members.self].sort());
    expect(e.members.members).toHaveLength(3);
    // Decided at the join: the members that came first never count the joiner as earlier.
    await until('c and d to see e', async () =>
      c.members.members.length === 3 && d.members.members.length === 3 ? true : undefined,
    );
    expect([...(c.members.earlier ?? [])]).toEqual([]);
    expect([...(d.members.earlier ?? [])]).toEqual([]);
  } finally {
    clearInterval(working);
  }
}, 60_000);
