/**
 * Node cache collection with real SSD cache images: caches outlive their client within a disk
 * budget; a stage that needs room evicts the least recently used kept cache, never one holding
 * writes the remote lacks; a stage nothing can make room for is refused with the numbers; kept
 * caches past their retention are removed; metrics and log lines say what was kept and evicted.
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { LoopbackServer } from '../../src/demo/loopback-server.js';
import { MountTable } from '../../src/kernel/mountinfo.js';
import {
  createVolume,
  mountCapability,
  startTestDriver,
  type TestDriver,
} from '../helpers/driver.js';
import { Kubelet } from '../helpers/kubelet.js';
import { Scrape } from '../helpers/metrics.js';
import { until } from '../helpers/wait.js';
import { pathExists } from '../helpers/files.js';

const MiB = 2 ** 20;
const rw = mountCapability('MULTI_NODE_MULTI_WRITER');
let driver: TestDriver;
let kubelet: Kubelet;

beforeAll(async () => {
  driver = await startTestDriver({
    metricsAddress: '127.0.0.1:0',
    diskCacheLimitBytes: 192 * MiB,
    cacheRetentionMs: 3_600_000,
    flushTimeoutMs: 1_000,
  });
  kubelet = new Kubelet(driver.work, () => driver.client, rw);
});

/** WebDAV servers a test started: stopped after it even when it failed half-way. */
const servers: LoopbackServer[] = [];
async function serveWebdav(root: string, port?: number): Promise<LoopbackServer> {
  const server = await LoopbackServer.start(root, 'webdav', [], port);
  servers.push(server);
  return server;
}

afterEach(async () => {
  for (const server of servers.splice(0)) await server.stop();
});

afterAll(async () => {
  await driver?.dispose();
});

interface JournalCaches {
  caches?: Record<string, { pendingWrites: boolean; cacheDir: string; keptAt: string }>;
  volumes: Record<string, { datasetKey: string }>;
}
const journal = async () =>
  JSON.parse(await readFile(join(driver.stateDir, 'journal.json'), 'utf8')) as JournalCaches;
const kept = async () => (await journal()).caches ?? {};
const metric = async (sample: string) =>
  (await Scrape.of(driver.metricsPort() as number)).get(sample);

/** A local directory dataset with a 64 MiB SSD cache: staged, read, unstaged; its key. */
async function useOnce(name: string, quota = '64Mi'): Promise<string> {
  const source = join(driver.work, 'sources', name);
  await mkdir(source, { recursive: true });
  await writeFile(join(source, 'data.txt'), `${name}\n`);
  const vol = await createVolume(
    driver.client,
    name,
    { source: `local://${source}`, cacheMedium: 'SSD', cacheQuota: quota },
    rw,
  );
  await kubelet.run(vol, [name]);
  expect(await readFile(join(kubelet.target(name), 'data.txt'), 'utf8')).toBe(`${name}\n`);
  const key = (await journal()).volumes[vol.volume_id]?.datasetKey as string;
  await kubelet.stop(vol.volume_id, [name]);
  return key;
}

it('keeps caches within the disk budget, evicts the oldest, never one with unsent writes', async () => {
  // A: used and kept.
  const a = await useOnce('a');
  expect(Object.keys(await kept())).toEqual([a]);
  const imageOf = async (key: string) => `${(await kept())[key]?.cacheDir}.img`;
  const imageA = await imageOf(a);
  expect(await pathExists(imageA)).toBe(true);

  // P: a writable WebDAV dataset whose server is gone when its volume is unstaged: the write is
  // still in the cache, which is kept with its pending writes.
  const davRoot = join(driver.work, 'dav');
  await mkdir(davRoot);
  let dav = await serveWebdav(davRoot);
  const port = dav.port;
  const pending = await createVolume(
    driver.client,
    'pending',
    { source: dav.url(), cacheMedium: 'SSD', cacheQuota: '64Mi' },
    rw,
  );
  await kubelet.run(pending, ['writer']);
  await dav.stop();
  await writeFile(join(kubelet.target('writer'), 'unsent.txt'), 'not on the remote yet\n');
  await kubelet.stop(pending.volume_id, ['writer']);
  const p = Object.keys(await kept()).find((key) => key !== a) as string;
  expect((await kept())[p]?.pendingWrites).toBe(true);

  // B: the budget (192 MiB) is now full of kept caches: A, P and B.
  const b = await useOnce('b');
  expect(Object.keys(await kept()).sort()).toEqual([a, b, p].sort());
  expect(await metric('dataset_cache_node_used_bytes{medium="disk"}')).toBe(192 * MiB);
  expect(await metric('dataset_cache_node_kept_caches{medium="disk",pending_writes="true"}')).toBe(
    1,
  );

  // C needs room: A, the least recently used without unsent writes, goes.
  const c = await useOnce('c');
  expect(Object.keys(await kept()).sort()).toEqual([b, c, p].sort());
  expect(await pathExists(imageA)).toBe(false);
  expect(await metric('dataset_cache_node_evictions_total{reason="budget"}')).toBe(1);
  expect(await driver.log()).toMatch(
    new RegExp(`"dataset":"${a}".*"reason":"budget".*"msg":"kept cache evicted"`),
  );

  // D (192 MiB) cannot fit even with B and C gone, as P is never removed: refused with the
  // numbers, and nothing was evicted for it.
  const dSource = join(driver.work, 'sources', 'd');
  await mkdir(dSource, { recursive: true });
  const d = await createVolume(
    driver.client,
    'd',
    { source: `local://${dSource}`, cacheMedium: 'SSD', cacheQuota: '192Mi' },
    rw,
  );
  await expect(kubelet.stage(d)).rejects.toMatchObject({
    code: grpc.status.RESOURCE_EXHAUSTED,
    details: expect.stringMatching(
      /SSD\/HDD cache of 192Mi for dataset ds-\w+ does not fit: this node allows 192Mi \(--disk-cache-limit\) and 192Mi is in use by running clients and kept caches; 1 kept caches \(64Mi\) hold writes not yet on the remote and are never removed/,
    ),
  });
  expect(Object.keys(await kept()).sort()).toEqual([b, c, p].sort());

  // P's server is back: staging P again takes its kept cache over and the write reaches it.
  dav = await serveWebdav(davRoot, port);
  try {
    await kubelet.run(pending, ['writer-again']);
    expect(
      await until('the kept write to reach the remote', () =>
        readFile(join(davRoot, 'unsent.txt'), 'utf8').catch(() => undefined),
      ),
    ).toBe('not on the remote yet\n');
    await kubelet.stop(pending.volume_id, ['writer-again']);
  } finally {
    await dav.stop();
  }
  expect((await kept())[p]?.pendingWrites).toBe(false);

  // Past the retention, every kept cache goes (the health loop sweeps).
  const images = await Promise.all([b, c, p].map(imageOf));
  driver.config.cacheRetentionMs = 0;
  await driver.restartDriver();
  await until('the retention sweep', async () =>
    Object.keys(await kept()).length === 0 ? true : undefined,
  );
  for (const image of images) expect(await pathExists(image)).toBe(false);
  expect(await metric('dataset_cache_node_evictions_total{reason="retention"}')).toBe(3);
  expect(await metric('dataset_cache_node_used_bytes{medium="disk"}')).toBe(0);
  expect((await MountTable.read()).under(driver.work)).toEqual([]);
});

it('a MEM cache holding unsent writes stays mounted past any retention until they are sent', async () => {
  // The retention is 0 now (set above): anything removable goes at the next sweep.
  expect(driver.config.cacheRetentionMs).toBe(0);
  const davRoot = join(driver.work, 'dav-mem');
  await mkdir(davRoot);
  let dav = await serveWebdav(davRoot);
  const port = dav.port;
  const vol = await createVolume(
    driver.client,
    'mem-pending',
    { source: dav.url(), cacheQuota: '32Mi' },
    rw,
  );
  await kubelet.run(vol, ['mem-writer']);
  await dav.stop();
  await writeFile(join(kubelet.target('mem-writer'), 'unsent.txt'), 'in RAM only\n');
  await kubelet.stop(vol.volume_id, ['mem-writer']);
  const [key] = Object.keys(await kept());
  const cacheDir = (await kept())[key as string]?.cacheDir as string;
  expect((await MountTable.read()).at(cacheDir)?.fsType).toBe('tmpfs');
  // A sweep that ran since: it removed a cache kept warm after this one (retention 0), and left
  // this one, counted as kept with pending writes.
  const retained = async () =>
    (await metric('dataset_cache_node_evictions_total{reason="retention"}')) ?? 0;
  const evictedBefore = await retained();
  const witness = await useOnce('sweep-witness');
  await until('a sweep to remove the cache kept warm after it', async () =>
    (await retained()) > evictedBefore && (await kept())[witness] === undefined ? true : undefined,
  );
  expect(await retained()).toBe(evictedBefore + 1);
  expect(Object.keys(await kept())).toEqual([key]);
  expect(await metric('dataset_cache_node_kept_caches{medium="mem",pending_writes="true"}')).toBe(
    1,
  );
  expect(await metric('dataset_cache_node_used_bytes{medium="mem"}')).toBe(32 * MiB);

  dav = await serveWebdav(davRoot, port);
  try {
    await kubelet.run(vol, ['mem-writer-again']);
    expect(
      await until('the kept write to reach the remote', () =>
        readFile(join(davRoot, 'unsent.txt'), 'utf8').catch(() => undefined),
      ),
    ).toBe('in RAM only\n');
    await kubelet.stop(vol.volume_id, ['mem-writer-again']);
  } finally {
    await dav.stop();
  }
  // Flushed: a MEM cache is not kept.
  expect(await kept()).toEqual({});
  expect((await MountTable.read()).at(cacheDir)).toBeUndefined();
});
