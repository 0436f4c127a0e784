/**
 * What operators see and steer, against a real HTTP server on loopback: Prometheus metrics (hit
 * ratio, remote and served bytes, restarts, RPCs), volume conditions, prefetch of a small-file
 * tree (in the background and by hand), the bandwidth limit and keepWarm.
 */
import { mkdir, readdir, readFile, writeFile, unlink, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { LoopbackServer } from '../../src/demo/loopback-server.js';
import { S3Server } from '../../src/demo/s3-server.js';
import { MountTable } from '../../src/kernel/mountinfo.js';
import { isSameProcess } from '../../src/kernel/proc.js';
import { recordedClients } from '../helpers/cleanup.js';
import {
  createVolume,
  mountCapability,
  startTestDriver,
  type TestDriver,
} from '../helpers/driver.js';
import { sha256File, treeDigest, writeRandomFile, writeTree } from '../helpers/files.js';
import { until } from '../helpers/wait.js';
import { Kubelet } from '../helpers/kubelet.js';
import { Scrape } from '../helpers/metrics.js';

const MiB = 1 << 20;
const cap = mountCapability('MULTI_NODE_READER_ONLY');
let driver: TestDriver;
let kubelet: Kubelet;
let data: string;
let server: LoopbackServer;

beforeAll(async () => {
  driver = await startTestDriver({ metricsAddress: '127.0.0.1:0' });
  kubelet = new Kubelet(driver.work, () => driver.client, cap);
  data = join(driver.work, 'data');
  await mkdir(data);
  await writeRandomFile(join(data, 'big.bin'), 32 * MiB);
  await writeTree(join(data, 'small'), 50, 100);
  await writeTree(join(data, 'meta'), 10, 50);
  for (const dir of ['qos', 'fast']) {
    await mkdir(join(data, dir));
    await writeRandomFile(join(data, dir, 'q.bin'), 12 * MiB);
  }
  server = await LoopbackServer.start(data, 'http');
}, 120_000);

afterAll(async () => {
  await server?.stop();
  await driver?.dispose();
});

/** Bytes of every file below a directory. */
async function treeBytes(root: string): Promise<number> {
  const entries = await readdir(root, { recursive: true, withFileTypes: true });
  const sizes = await Promise.all(
    entries
      .filter((e) => e.isFile())
      .map(async (e) => (await stat(join(e.parentPath, e.name))).size),
  );
  return sizes.reduce((sum, size) => sum + size, 0);
}

/** The first NodeGetVolumeStats answer with an abnormal condition (a remote check failing). */
const untilAbnormal = <T extends { volume_condition?: { abnormal?: boolean } | null }>(
  stats: () => Promise<T>,
): Promise<T> =>
  until(
    'the remote check to fail',
    async () => {
      const answer = await stats();
      return answer.volume_condition?.abnormal ? answer : undefined;
    },
    30_000,
  );

/** Bytes every dataset of the driver moved from its remote. */
const remoteTotal = (s: Scrape): number =>
  [...s.samples]
    .filter(([sample]) => sample.startsWith('dataset_cache_remote_bytes_total{'))
    .reduce((sum, [, value]) => sum + value, 0);

const scrape = (): Promise<Scrape> => Scrape.of(driver.metricsPort() as number);

const volume = (name: string, parameters: Record<string, string>) =>
  createVolume(driver.client, name, parameters, cap);

async function clientOf(predicate: (mountPoint: string) => boolean = () => true) {
  const clients = await recordedClients(driver.stateDir);
  const client = clients.find((c) => predicate(c.mountPoint));
  if (!client) throw new Error('no client recorded');
  return client;
}

it('metrics: a cold then a warm read move the hit ratio up, remote bytes stay flat', async () => {
  // The FUSE path: these figures count what the cache client serves (the copy layer has its own).
  const vol = await volume('metrics', {
    source: `http://127.0.0.1:${server.port}/`,
    localCopy: 'false',
  });
  await kubelet.run(vol, ['cold', 'warm']);
  try {
    const { key } = await clientOf();
    const expected = await sha256File(join(data, 'big.bin'));
    expect(await sha256File(join(kubelet.target('cold'), 'big.bin'))).toBe(expected);
    const afterCold = await scrape();
    // The kernel drops the layer's pages of the file: the warm read must come from the cache client.
    await execa('dd', [
      `if=${join(kubelet.target('warm'), 'big.bin')}`,
      'iflag=nocache',
      'count=0',
    ]);
    expect(await sha256File(join(kubelet.target('warm'), 'big.bin'))).toBe(expected);
    const afterWarm = await scrape();

    const remote = (s: Scrape) => s.dataset('remote_bytes_total', key) ?? NaN;
    const served = (s: Scrape) => s.dataset('served_bytes_total', key) ?? NaN;
    const ratio = (s: Scrape) => s.dataset('hit_ratio', key) ?? NaN;
    process.stdout.write(
      `metrics: cold: remote ${(remote(afterCold) / MiB).toFixed(1)} MiB, served ${(served(afterCold) / MiB).toFixed(1)} MiB, hit ratio ${ratio(afterCold).toFixed(3)}; ` +
        `warm: remote ${(remote(afterWarm) / MiB).toFixed(1)} MiB, served ${(served(afterWarm) / MiB).toFixed(1)} MiB, hit ratio ${ratio(afterWarm).toFixed(3)}\n`,
    );
    expect(remote(afterCold)).toBeGreaterThanOrEqual(32 * MiB);
    expect(served(afterCold)).toBeGreaterThanOrEqual(32 * MiB);
    expect(remote(afterWarm)).toBe(remote(afterCold));
    expect(served(afterWarm)).toBeGreaterThanOrEqual(served(afterCold) + 32 * MiB);
    expect(ratio(afterCold)).toBeLessThan(0.1);
    expect(ratio(afterWarm)).toBeGreaterThan(0.45);
    expect(afterWarm.dataset('client_up', key)).toBe(1);
    expect(afterWarm.dataset('volumes', key)).toBe(1);
    expect(afterWarm.dataset('quota_bytes', key)).toBe(2 * 2 ** 30);
    expect(afterWarm.dataset('used_bytes', key)).toBeGreaterThanOrEqual(32 * MiB);
    expect(afterWarm.dataset('files', key)).toBe(1);
    // The driver's identity, for per-node views: one constant series.
    expect(
      [...afterWarm.samples].filter(([name]) => name.startsWith('dataset_cache_csi_info{')),
    ).toEqual([
      [
        expect.stringMatching(
          /^dataset_cache_csi_info\{node="test-node",version="[\d.]+",mode="all"\}$/,
        ),
        1,
      ],
    ]);
    expect(
      afterWarm.get('dataset_cache_csi_rpc_total{method="Node/NodeStageVolume",code="OK"}'),
    ).toBe(1);
    expect(
      afterWarm.get(
        'dataset_cache_csi_rpc_duration_seconds_count{method="Node/NodePublishVolume",code="OK"}',
      ),
    ).toBe(2);
    process.stdout.write(
      `metrics sample:\n${[...afterWarm.samples]
        .filter(([name]) => name.includes(key) || name.includes('NodeStageVolume'))
        .map(([name, value]) => `  ${name} ${value}`)
        .join('\n')}\n`,
    );

    // Volume condition, healthy and with the client killed; the restart shows in the metrics.
    const stats = () =>
      driver.client.node.NodeGetVolumeStats({
        volume_id: vol.volume_id,
        volume_path: kubelet.target('cold'),
      });
    const healthy = await stats();
    // rclone's http backend cannot count files: no made-up inode figures are passed on.
    expect(healthy.usage.map((u) => u.unit)).toEqual(['BYTES']);
    expect(healthy.volume_condition).toEqual({
      abnormal: false,
      message: 'cache client running, mount live, remote reachable',
    });
    const { pid } = await clientOf();
    process.kill(pid, 'SIGKILL');
    const dead = await until('an abnormal condition', async () => {
      const answer = await stats();
      return answer.volume_condition?.abnormal ? answer : undefined;
    });
    expect(dead.volume_condition?.message).toMatch(
      /cache client of dataset ds-\w+ (is not running|lost its mount); the node is restarting it/,
    );
    process.stdout.write(
      `NodeGetVolumeStats healthy: ${JSON.stringify(healthy)}\nNodeGetVolumeStats dead client: ${JSON.stringify(dead)}\n`,
    );
    await until('the restarted client', async () =>
      (await stats()).volume_condition?.abnormal === false ? true : undefined,
    );
    expect((await scrape()).dataset('client_restarts_total', key)).toBe(1);
  } finally {
    await kubelet.stop(vol.volume_id, ['cold', 'warm']);
  }
});

it('prefetch: a 5,000-file tree is warmed once in the background; reading it fetches nothing more', async () => {
  // Through the engine's mount (localCopy off); prefetch into the copy is tested in local-copy.
  const parameters = {
    source: `http://127.0.0.1:${server.port}/`,
    prefetch: 'small/**,meta/',
    localCopy: 'false',
  };
  const volumes = await Promise.all(
    ['pf-a', 'pf-b', 'pf-c'].map((name) => volume(name, parameters)),
  );
  // The dataset may have been read by earlier tests (its counters live as long as the driver).
  const remoteBefore = remoteTotal(await scrape());
  const started = Date.now();
  // Three volumes of the dataset staged at once: one prefetch.
  await Promise.all(volumes.map((v) => kubelet.stage(v)));
  await kubelet.publish(volumes[0]?.volume_id as string, 'trainer');
  try {
    const { key } = await clientOf();
    const done = await until(
      'prefetch completion',
      async () => {
        const s = await scrape();
        return s.dataset('prefetch_completed', key) === 1 ? s : undefined;
      },
      120_000,
    );
    const seconds = (Date.now() - started) / 1000;
    const smallFiles = 50 * 100 + 1;
    const metaFiles = 10 * 50 + 1;
    expect(done.dataset('prefetch_running', key)).toBe(0);
    // When it finished: after the stages began, by the time it was seen done.
    const ended = 1000 * (done.dataset('prefetch_last_completed_timestamp_seconds', key) ?? NaN);
    expect(ended).toBeGreaterThanOrEqual(started);
    expect(ended).toBeLessThanOrEqual(Date.now());
    expect(done.dataset('prefetch_matched_files', key)).toBe(smallFiles + metaFiles);
    expect(done.dataset('prefetch_files_total', key)).toBe(smallFiles + metaFiles);
    const log = await driver.log();
    expect(log.match(new RegExp(`"dataset":"${key}".*"msg":"prefetch started"`, 'g'))).toHaveLength(
      1,
    );
    const remoteAfterPrefetch = done.dataset('remote_bytes_total', key) as number;
    const prefetched = done.dataset('prefetch_bytes_total', key) as number;
    process.stdout.write(
      `prefetch: ${smallFiles} small files (${(prefetched / MiB).toFixed(1)} MiB) + ${metaFiles} metadata-only in ${seconds.toFixed(1)} s (${(smallFiles / seconds).toFixed(0)} files/s)\n`,
    );
    // Metadata-only: the remote gave the small tree's bytes and none of the meta tree's.
    const smallBytes = await treeBytes(join(data, 'small'));
    const metaBytes = await treeBytes(join(data, 'meta'));
    expect(metaBytes).toBeGreaterThan(200_000);
    const fetched = remoteTotal(done) - remoteBefore;
    expect(fetched).toBeGreaterThanOrEqual(smallBytes);
    expect(fetched).toBeLessThan(smallBytes + metaBytes / 10);
    expect(await treeDigest(join(kubelet.target('trainer'), 'small'))).toEqual(
      await treeDigest(join(data, 'small')),
    );
    const afterRead = await scrape();
    expect(afterRead.dataset('remote_bytes_total', key)).toBe(remoteAfterPrefetch);

    // By hand, through the CLI: warm big.bin, then reading it fetches nothing.
    const cli = await execa('node', [
      'dist/main.js',
      'prefetch',
      '--state-dir',
      driver.stateDir,
      '--dataset',
      volumes[0]?.volume_id as string,
      'big.bin',
    ]);
    const result = JSON.parse(cli.stdout) as { dataset: string; files: number; bytes: number };
    expect(result).toMatchObject({
      dataset: key,
      files: 1,
      bytes: 32 * MiB,
      errors: 0,
      done: true,
    });
    const afterCli = (await scrape()).dataset('remote_bytes_total', key) as number;
    expect(afterCli).toBeGreaterThanOrEqual(remoteAfterPrefetch + 32 * MiB);
    expect(await sha256File(join(kubelet.target('trainer'), 'big.bin'))).toBe(
      await sha256File(join(data, 'big.bin')),
    );
    expect((await scrape()).dataset('remote_bytes_total', key)).toBe(afterCli);
  } finally {
    await kubelet.stop(volumes[0]?.volume_id as string, ['trainer']);
    for (const v of volumes.slice(1)) await kubelet.stop(v.volume_id, []);
  }
});

it('bandwidthLimit caps the remote read rate of a dataset', async () => {
  const limit = 4_000_000;
  const rates: Record<string, number> = {};
  for (const [dir, extra] of [
    ['qos', { bandwidthLimit: String(limit) }],
    ['fast', {}],
  ] as const) {
    const vol = await volume(`bw-${dir}`, {
      source: `http://127.0.0.1:${server.port}/${dir}/`,
      ...extra,
    });
    await kubelet.run(vol, [`bw-${dir}`]);
    try {
      const started = process.hrtime.bigint();
      expect(await sha256File(join(kubelet.target(`bw-${dir}`), 'q.bin'))).toBe(
        await sha256File(join(data, dir, 'q.bin')),
      );
      rates[dir] = (12 * MiB) / (Number(process.hrtime.bigint() - started) / 1e9);
    } finally {
      await kubelet.stop(vol.volume_id, [`bw-${dir}`]);
    }
  }
  process.stdout.write(
    `qos: limit ${limit / 1e6} MB/s -> ${((rates.qos ?? 0) / 1e6).toFixed(2)} MB/s; unlimited ${((rates.fast ?? 0) / 1e6).toFixed(0)} MB/s\n`,
  );
  expect(rates.qos).toBeLessThanOrEqual(limit * 1.15);
  expect(rates.qos).toBeGreaterThanOrEqual(limit * 0.6);
  expect(rates.fast).toBeGreaterThan(limit * 5);
});

it('keepWarm: the client outlives the last unstage, is reused within the window, then stops', async () => {
  const vol = await volume('warm', {
    source: `http://127.0.0.1:${server.port}/fast/`,
    keepWarm: '3s',
  });
  await kubelet.run(vol, ['first']);
  const client = await clientOf();
  expect(await sha256File(join(kubelet.target('first'), 'q.bin'))).toBe(
    await sha256File(join(data, 'fast', 'q.bin')),
  );
  await kubelet.stop(vol.volume_id, ['first']);
  expect(await isSameProcess(client.pid, client.startTime)).toBe(true);
  const kept = await scrape();
  expect(kept.dataset('client_warm', client.key)).toBe(1);
  expect(kept.dataset('volumes', client.key)).toBe(0);
  const remoteBefore = kept.dataset('remote_bytes_total', client.key);

  // A pod rescheduled within the window finds the same client and its cache.
  await kubelet.run(vol, ['second']);
  expect((await clientOf()).pid).toBe(client.pid);
  expect(await sha256File(join(kubelet.target('second'), 'q.bin'))).toBe(
    await sha256File(join(data, 'fast', 'q.bin')),
  );
  expect((await scrape()).dataset('remote_bytes_total', client.key)).toBe(remoteBefore);
  await kubelet.stop(vol.volume_id, ['second']);
  const unstaged = Date.now();
  // Stopped means gone from the journal: the process ends first, then its cache is released.
  await until('the warm client to stop', async () =>
    (await recordedClients(driver.stateDir)).length === 0 ? true : undefined,
  );
  const keptMs = Date.now() - unstaged;
  process.stdout.write(`keepWarm 3s: client stopped ${keptMs} ms after the last unstage\n`);
  expect(keptMs).toBeGreaterThanOrEqual(2_500);
  expect(await isSameProcess(client.pid, client.startTime)).toBe(false);
  expect((await MountTable.read()).under(driver.work)).toEqual([]);
  expect((await MountTable.read()).under(driver.memCacheDir)).toEqual([]);
});

it('volume condition: a full cache and an unreachable remote are reported abnormal', async () => {
  const root = join(driver.work, 'gone');
  await mkdir(root);
  await writeFile(join(root, 'a.txt'), 'a\n');
  const own = await LoopbackServer.start(root, 'http');
  let volumeId: string | undefined;
  try {
    const vol = await volume('conditions', {
      source: `http://127.0.0.1:${own.port}/`,
      cacheQuota: '16Mi',
    });
    volumeId = vol.volume_id;
    await kubelet.run(vol, ['watcher']);
    const stats = () =>
      driver.client.node.NodeGetVolumeStats({
        volume_id: vol.volume_id,
        volume_path: kubelet.target('watcher'),
      });
    expect((await stats()).volume_condition?.abnormal).toBe(false);
    const { cacheDir } = await clientOf();
    // Fill the cache's own file system to its edge, as a working set larger than the quota does.
    const filler = join(cacheDir, 'filler');
    await execa('dd', ['if=/dev/zero', `of=${filler}`, 'bs=1M', 'count=64'], { reject: false });
    expect((await stat(filler)).size).toBeGreaterThan(15 * MiB);
    const full = await stats();
    expect(full.volume_condition).toEqual({
      abnormal: true,
      message: expect.stringMatching(
        /cache of dataset ds-\w+ is full \(16 of 16 MiB\).*raise cacheQuota/,
      ),
    });
    await unlink(filler);
    expect((await stats()).volume_condition?.abnormal).toBe(false);
    process.stdout.write(
      `NodeGetVolumeStats full cache: ${JSON.stringify(full.volume_condition)}\n`,
    );

    expect(await readFile(join(kubelet.target('watcher'), 'a.txt'), 'utf8')).toBe('a\n');
    await own.stop();
    const unreachable = await untilAbnormal(stats);
    expect(unreachable.volume_condition?.message).toMatch(
      /remote of dataset ds-\w+ is unreachable \(.+\); files already cached are still served/,
    );
    expect(await readFile(join(kubelet.target('watcher'), 'a.txt'), 'utf8')).toBe('a\n');
    process.stdout.write(
      `NodeGetVolumeStats unreachable remote: ${JSON.stringify(unreachable.volume_condition)}\n`,
    );
  } finally {
    await own.stop().catch(() => undefined);
    if (volumeId) await kubelet.stop(volumeId, ['watcher']);
  }
});

it('volume condition: the s3fs engine has no control API, and its remote is checked all the same', async () => {
  const store = join(driver.work, 's3-gone');
  await mkdir(store);
  const s3 = await S3Server.start(store, ['bucket']);
  let volumeId: string | undefined;
  try {
    const data = join(driver.work, 's3-data');
    await mkdir(data);
    await writeFile(join(data, 'a.txt'), 'a\n');
    await s3.upload(data, 'bucket/set');
    const vol = await volume('s3fs-conditions', { source: 's3://bucket/set', engine: 's3fs' });
    volumeId = vol.volume_id;
    await kubelet.stage(vol, s3.secrets());
    await kubelet.publish(vol.volume_id, 's3fs-watcher');
    const stats = () =>
      driver.client.node.NodeGetVolumeStats({
        volume_id: vol.volume_id,
        volume_path: kubelet.target('s3fs-watcher'),
      });
    expect((await stats()).volume_condition).toEqual({
      abnormal: false,
      message: 'cache client running, mount live, remote reachable',
    });
    expect(await readFile(join(kubelet.target('s3fs-watcher'), 'a.txt'), 'utf8')).toBe('a\n');
    await s3.stop();
    const unreachable = await untilAbnormal(stats);
    expect(unreachable.volume_condition?.message).toMatch(
      /remote of dataset ds-\w+ is unreachable \(.*connection refused.*\); engine s3fs cannot open files until it is back, cached or not/,
    );
    process.stdout.write(
      `NodeGetVolumeStats s3fs, S3 server stopped: ${JSON.stringify(unreachable.volume_condition)}\n`,
    );
  } finally {
    await s3.stop().catch(() => undefined);
    if (volumeId) await kubelet.stop(volumeId, ['s3fs-watcher']);
  }
});
