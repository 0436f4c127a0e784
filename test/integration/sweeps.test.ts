/**
 * Sweeps, against a real driver and a real HTTP server on loopback: pods reading a tree in
 * shuffled order without any prefetch get it filled in bulk into the local copy while they read
 * (the server sends each file about once, every read is the source's bytes); random reads into a
 * big file and a listing of everything start no fill; a copy out of room stops the fill and says
 * so. Sweep fills are on by default; with `autoPrefetch: "false"`, or with a `prefetch` list,
 * reads on demand stay as they were.
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, open, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { fileURLToPath } from 'node:url';
import { LoopbackServer, waitForPort } from '../../src/demo/loopback-server.js';
import { freePort } from '../../src/util/net.js';
import { ENGINE_SHARE } from '../../src/supervisor/cache-volume.js';
import { processIo, terminateChild } from '../../src/kernel/proc.js';
import { ExecaRunner } from '../../src/kernel/runner.js';
import { readXattr } from '../../src/kernel/xattr.js';
import { recordedClients } from '../helpers/cleanup.js';
import {
  createVolume,
  mountCapability,
  startTestDriver,
  type TestDriver,
} from '../helpers/driver.js';
import { treeDigest, writeRandomFile, writeTree } from '../helpers/files.js';
import { Kubelet } from '../helpers/kubelet.js';
import { listingGate } from '../helpers/listing-gate.js';
import { Scrape } from '../helpers/metrics.js';
import { until, untilHolds } from '../helpers/wait.js';

const MiB = 1 << 20;
const DELAY_PROXY = fileURLToPath(new URL('../../dist/bench/delay-proxy.js', import.meta.url));
const DIRS = 8;
const FILES_PER_DIR = 40;
const cap = mountCapability('MULTI_NODE_READER_ONLY');
const OPAQUE = 'trusted.overlay.opaque';
const runner = new ExecaRunner();
let driver: TestDriver;
let kubelet: Kubelet;
let data: string;
let server: LoopbackServer | undefined;
/** The server behind a proxy that delays every byte 50 ms each way: a remote a WAN hop away. */
let delayed: { port: number; stop(): Promise<void> } | undefined;
let digests: Record<string, string>;
const staged: { volumeId: string; pod: string }[] = [];

beforeAll(async () => {
  driver = await startTestDriver({ metricsAddress: '127.0.0.1:0' });
  kubelet = new Kubelet(driver.work, () => driver.client, cap);
  data = join(driver.work, 'data');
  for (const tree of ['off', 'listed', 'walked', 'retried'])
    await writeTree(join(data, tree), DIRS, FILES_PER_DIR);
  // Files big enough that their bytes, not the requests' headers, make what the server sends.
  for (let d = 0; d < DIRS; d += 1) {
    await mkdir(join(data, 'swept', `d${d}`), { recursive: true });
    for (let f = 0; f < FILES_PER_DIR; f += 1) {
      await writeRandomFile(join(data, 'swept', `d${d}`, `f${f}.bin`), 32 * 1024);
    }
  }
  // Bigger than the copy's room in an 8 MiB cache: 8 directories of 20 files of 64 KiB.
  for (let d = 0; d < 8; d += 1) {
    await mkdir(join(data, 'full', `d${d}`), { recursive: true });
    for (let f = 0; f < 20; f += 1) {
      await writeRandomFile(join(data, 'full', `d${d}`, `f${f}.bin`), 64 * 1024);
    }
  }
  await writeRandomFile(join(data, 'walked', 'big.bin'), 64 * MiB);
  digests = await treeDigest(data);
  server = await LoopbackServer.start(data, 'http');
  delayed = await delayProxy(server.port, 50);
}, 120_000);

/** The bench's delaying TCP proxy (a process of its own) in front of `port`. */
async function delayProxy(port: number, delayMs: number) {
  const listen = await freePort();
  const proxy = execa(
    process.execPath,
    [DELAY_PROXY, '127.0.0.1', String(listen), '127.0.0.1', String(port), String(delayMs)],
    { reject: false, stdin: 'ignore' },
  );
  const stop = async () => {
    await terminateChild(proxy);
  };
  try {
    await waitForPort(listen, 10_000);
  } catch (err) {
    await stop();
    throw err;
  }
  return { port: listen, stop };
}

afterAll(async () => {
  for (const { volumeId, pod } of staged) {
    await kubelet.stop(volumeId, [pod]).catch(() => undefined);
  }
  await delayed?.stop();
  await server?.stop();
  await driver?.dispose();
});

const scrape = (): Promise<Scrape> => Scrape.of(driver.metricsPort() as number);
const sentByServer = async (): Promise<number> =>
  (await processIo(server!.pid as number))?.writtenBytes ?? NaN;

/** A read-only volume of one tree, published to one pod; its dataset key. */
async function podOn(tree: string, parameters: Record<string, string> = {}, port = server!.port) {
  const before = new Set((await recordedClients(driver.stateDir)).map((c) => c.key));
  const volume = await createVolume(
    driver.client,
    tree,
    { source: `http://127.0.0.1:${port}/${tree}/`, ...parameters },
    cap,
  );
  const pod = `${tree}-pod`;
  staged.push({ volumeId: volume.volume_id, pod });
  await kubelet.run(volume, [pod], true);
  const client = (await recordedClients(driver.stateDir)).find((c) => !before.has(c.key));
  if (!client) throw new Error(`no client for ${tree}`);
  return { key: client.key, cacheDir: client.cacheDir, root: kubelet.target(pod) };
}

/** The tree's files in a shuffled order, as a training epoch reads them. */
function shuffledFiles(tree: string): string[] {
  const files = Object.keys(digests)
    .filter((path) => path.startsWith(`${tree}/d`))
    .map((path) => path.slice(tree.length + 1));
  for (let i = files.length - 1; i > 0; i -= 1) {
    const j = Math.floor(Math.random() * (i + 1));
    [files[i], files[j]] = [files[j] as string, files[i] as string];
  }
  return files;
}

/**
 * Reads every file with `readers` at once; fails on any byte that is not the source's. Returns the
 * files the copy (under `copyDir`) held when a reader opened them.
 */
async function readEpoch(
  tree: string,
  root: string,
  readers = 4,
  copyDir?: string,
): Promise<string[]> {
  const order = shuffledFiles(tree);
  const wrong: string[] = [];
  const heldAtOpen: string[] = [];
  let next = 0;
  await Promise.all(
    Array.from({ length: readers }, async () => {
      while (next < order.length) {
        const file = order[next++] as string;
        if (copyDir && existsSync(join(copyDir, file))) heldAtOpen.push(file);
        const content = await readFile(join(root, file));
        if (createHash('sha256').update(content).digest('hex') !== digests[`${tree}/${file}`])
          wrong.push(file);
      }
    }),
  );
  expect(wrong).toEqual([]);
  return heldAtOpen;
}

/** Files pods opened through the engine: rclone keeps an item for each (see RcloneCacheIndex). */
async function openedThroughEngine(cacheDir: string): Promise<string[]> {
  const meta = join(cacheDir, 'vfsMeta');
  return (await readdir(meta, { recursive: true, withFileTypes: true }))
    .filter((entry) => entry.isFile())
    .map((entry) => join(entry.parentPath, entry.name).slice(meta.length + 1));
}

it('a shuffled read of a tree without prefetch starts a fill; the server sends each file about once; the whole tree ends in the copy', async () => {
  const sentBefore = await sentByServer();
  // The default: nothing asked for.
  const { key, cacheDir, root } = await podOn('swept', {}, delayed!.port);
  // The copy's directories are made at the stage, before pods look them up: the overlay merges
  // them, so what the fill installs below them is read from the copy while pods keep reading.
  for (let d = 0; d < DIRS; d += 1) expect(existsSync(join(cacheDir, 'copy', `d${d}`))).toBe(true);
  const heldAtOpen = await readEpoch('swept', root, 2, join(cacheDir, 'copy'));
  const throughEngine = await openedThroughEngine(cacheDir);
  const readTwice = heldAtOpen.filter((file) =>
    throughEngine.some((item) => item.endsWith(`/${file}`)),
  );
  expect(heldAtOpen.length).toBeGreaterThan(0);
  expect(readTwice).toEqual([]);
  const metrics = await until('the sweep fill to finish', async () => {
    const now = await scrape();
    return (now.dataset('sweep_fills_total', key) ?? 0) >= 1 &&
      (now.dataset('prefetch_running', key) ?? 1) === 0
      ? now
      : undefined;
  });
  expect(metrics.dataset('sweeps_total', key)).toBe(1);
  const inCopy = (await readdir(join(cacheDir, 'copy'), { recursive: true, withFileTypes: true }))
    .filter((entry) => entry.isFile())
    .map((entry) => join(entry.parentPath, entry.name).slice(join(cacheDir, 'copy').length + 1));
  const expected = shuffledFiles('swept').sort();
  expect(inCopy.filter((f) => f !== 'MANIFEST').sort()).toEqual(expected);
  // Each file once from the server (plus listings and headers): a file read on demand while the
  // fill fetched it costs at most one more copy.
  for (const line of (await driver.log()).split('\n')) {
    if (/sweep|prefetch|fill/.test(line) && line.includes(key)) process.stdout.write(`${line}\n`);
  }
  const bytes = await sourceBytes('swept');
  const sent = (await sentByServer()) - sentBefore;
  process.stdout.write(
    `sweep: ${expected.length} files of ${bytes} bytes; server sent ${sent} bytes (${(sent / bytes).toFixed(2)}x); fill installed ${metrics.dataset('sweep_fill_files_total', key)} files, pods read ${metrics.dataset('copy_promoted_files_total', key)} on demand\n`,
  );
  // Requests' headers alone cost 8 % with 32 KiB files (1.08x for reads on demand only, measured);
  // runs measured 1.19-1.27x with the fill.
  expect(sent).toBeLessThan(bytes * 1.35);
  // The fill did part of the epoch's fetching: pods reading one file at a time each fall behind a
  // bulk transfer once the remote is a round trip away.
  expect(metrics.dataset('sweep_fill_files_total', key) ?? 0).toBeGreaterThan(0);
  expect(
    (metrics.dataset('sweep_fill_files_total', key) ?? 0) +
      (metrics.dataset('copy_promoted_files_total', key) ?? 0),
  ).toBeGreaterThanOrEqual(expected.length);
  // A second epoch reads the copy: the server sends (next to) nothing.
  const again = await sentByServer();
  await readEpoch('swept', root);
  expect((await sentByServer()) - again).toBeLessThan(64 * 1024);
}, 180_000);

it('a sweep fill that failed (the remote refused its listing) is tried again at the next sweep of its directory', async () => {
  const gate = await listingGate(server!.port);
  try {
    const { key, cacheDir, root } = await podOn('retried', {}, gate.port);
    // The pod's engine lists every directory once (rclone keeps listings for minutes): its reads
    // by name go on while the remote refuses listings.
    await readdir(root, { recursive: true });
    gate.refuses = (path) => path.endsWith('/');
    const order = shuffledFiles('retried');
    let next = 0;
    const readSome = async (count: number) => {
      for (let n = 0; n < count && next < order.length; n += 1) {
        const file = order[next++] as string;
        const content = await readFile(join(root, file));
        expect(createHash('sha256').update(content).digest('hex')).toBe(digests[`retried/${file}`]);
      }
    };
    const failed = (log: string) =>
      log.split('\n').find((line) => line.includes('"sweep fill ended"') && line.includes(key));
    const ended = await until('the first sweep fill to fail', async () => {
      await readSome(4);
      return failed(await driver.log());
    });
    expect(JSON.parse(ended)).toMatchObject({ done: false, again: expect.any(String) });
    gate.refuses = () => false;
    // Pods read on: a new sweep of the directory, whose fill completes.
    await until('a second sweep fill to finish', async () => {
      await readSome(4);
      const now = await scrape();
      return (now.dataset('sweeps_total', key) ?? 0) >= 2 &&
        (now.dataset('prefetch_running', key) ?? 1) === 0
        ? true
        : undefined;
    });
    await readSome(order.length);
    // Every file is in the copy: filled, or promoted once read on demand.
    const copyDir = join(cacheDir, 'copy');
    await until('every file in the copy', async () =>
      order.every((file) => existsSync(join(copyDir, file))) ? true : undefined,
    );
    const figures = await scrape();
    expect(figures.dataset('sweep_fill_files_total', key)).toBeGreaterThan(0);
    // The failed fill's job is dropped, its figures are not: it counts among the fills started.
    expect(figures.dataset('sweep_fills_total', key)).toBeGreaterThanOrEqual(2);
  } finally {
    await gate.close();
  }
}, 180_000);

/** Bytes of the tree's files on the source. */
async function sourceBytes(tree: string): Promise<number> {
  let total = 0;
  for (const file of shuffledFiles(tree)) {
    total += (await readFile(join(data, tree, file))).length;
  }
  return total;
}

it('random reads into part of a big file and a listing of everything start no fill', async () => {
  const { key, root } = await podOn('walked');
  const handle = await open(join(root, 'big.bin'), 'r');
  try {
    const buffer = Buffer.alloc(64 * 1024);
    for (let i = 0; i < 200; i += 1) {
      const offset = Math.floor(Math.random() * (60 * MiB));
      const { bytesRead } = await handle.read(buffer, 0, buffer.length, offset);
      expect(bytesRead).toBe(buffer.length);
    }
  } finally {
    await handle.close();
  }
  const listing = await execa('ls', ['-lR', root]);
  expect(listing.stdout).toContain('f39.txt');
  await execa('find', [root, '-type', 'f', '-size', '+0']);
  // Two rounds of the copy keeper see whatever the reads left in the engine's cache.
  const promotedBefore = (await scrape()).dataset('copy_promoted_files_total', key) ?? 0;
  await readFile(join(root, 'MANIFEST'));
  await until('the copy keeper to take the manifest read whole', async () =>
    ((await scrape()).dataset('copy_promoted_files_total', key) ?? 0) > promotedBefore
      ? true
      : undefined,
  );
  const metrics = await scrape();
  expect(metrics.dataset('sweeps_total', key) ?? 0).toBe(0);
  expect(metrics.dataset('sweep_fills_total', key) ?? 0).toBe(0);
  expect(metrics.dataset('prefetch_running', key) ?? 0).toBe(0);
}, 120_000);

it('a copy out of room stops the fill and says so; every read stays correct', async () => {
  // Room for the copy of about a third of the tree (the engine keeps a fifth of the quota).
  const { key, root } = await podOn('full', { cacheQuota: '8Mi' });
  expect(await sourceBytes('full')).toBe(10 * MiB);
  await readEpoch('full', root);
  const figures = async () => {
    const now = await scrape();
    const of = (name: string) => now.dataset(name, key);
    return {
      sweeps: of('sweeps_total'),
      fills: of('sweep_fills_total'),
      running: of('prefetch_running'),
      promoted: of('copy_promoted_files_total'),
      noRoom: of('copy_no_room_total'),
      copied: of('copy_files'),
      copyBytes: of('copy_bytes'),
      errors: of('prefetch_errors_total'),
    };
  };
  // Every file of the tree ends in the copy, or counted as left out for want of room (by the room,
  // by a transfer that met the file system full while rclone had not evicted yet, or by the copy
  // keeper when promoting a file pods read), or as an error of the fill. Files the fill left to
  // the pods may still be promoted by the keeper after the fill ended: that is waited for too.
  const accounted = (f: Awaited<ReturnType<typeof figures>>) =>
    (f.copied ?? 0) + (f.noRoom ?? 0) + (f.errors ?? 0);
  const metrics = await untilHolds(
    'the sweep fill to stop, every file of the tree accounted for',
    figures,
    (f) => (f.fills ?? 0) >= 1 && f.running === 0 && accounted(f) >= 8 * 20,
  );
  expect(metrics.noRoom ?? 0).toBeGreaterThan(0);
  // Files the fill admitted, those promoted meanwhile and those it fetched again once rclone let
  // them go all stay within the copy's share of the quota (beyond it rclone cannot free room).
  expect(metrics.copyBytes).toBeLessThanOrEqual(8 * MiB * (1 - ENGINE_SHARE));
  const stats = await driver.client.node.NodeGetVolumeStats({
    volume_id: staged.at(-1)!.volumeId,
    volume_path: root,
  });
  expect(stats.volume_condition).toEqual({
    abnormal: true,
    message: expect.stringMatching(
      /^local copy of dataset ds-\w+ is incomplete: .* left out for want of room in cacheQuota; .*raise cacheQuota$/,
    ),
  });
  await readEpoch('full', root);
}, 180_000);

it('with autoPrefetch "false", or with a prefetch list, reads on demand stay as they were', async () => {
  const off = await podOn('off', { autoPrefetch: 'false' });
  const listed = await podOn('listed', { prefetch: 'd0/**' });
  await until('the listed prefetch to finish', async () =>
    ((await scrape()).dataset('prefetch_completed', listed.key) ?? 0) >= 1 ? true : undefined,
  );
  await readEpoch('off', off.root);
  await readEpoch('listed', listed.root);
  // Every file read on demand is promoted by the keeper's rounds: wait until all are seen.
  await until('the copy keeper to promote what pods read', async () => {
    const now = await scrape();
    return (now.dataset('copy_promoted_files_total', off.key) ?? 0) >= DIRS * FILES_PER_DIR &&
      (now.dataset('copy_promoted_files_total', listed.key) ?? 0) >= (DIRS - 1) * FILES_PER_DIR
      ? true
      : undefined;
  });
  const metrics = await scrape();
  for (const key of [off.key, listed.key]) {
    expect(metrics.dataset('sweep_fills_total', key) ?? 0).toBe(0);
  }
  // The list did exactly its files: d0's, nothing of the rest.
  expect(metrics.dataset('prefetch_matched_files', listed.key)).toBe(FILES_PER_DIR);
  // No fill listed the directories pods read whole: each is found complete from the engine's view
  // of it once its files are promoted, and marked so (the overlay asks the engine no more below).
  for (const { cacheDir } of [off, listed]) {
    await until('the directories read whole to be marked complete', async () => {
      for (let d = 0; d < DIRS; d += 1) {
        const mark = await readXattr(runner, join(cacheDir, 'copy', `d${d}`), OPAQUE);
        if (mark !== 'y') return undefined;
      }
      return true;
    });
  }
  await readEpoch('off', off.root);
  await readEpoch('listed', listed.root);
}, 180_000);
