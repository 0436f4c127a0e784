/**
 * The cluster tier, with two real drivers (two "nodes", each with its own state) sharing one S3
 * server on loopback as the tier, and an HTTP server as the remote: node B's fill of what node A
 * fetched costs the remote nothing; a file changed on the remote and a truncated tier object are
 * never served; with the tier down the remote serves and the volume condition says why; only
 * administrators' StorageClasses can use a tier; its keys never reach a log.
 */
import { lstat, mkdir, readdir, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { status as GrpcStatus } from '@grpc/grpc-js';
import { execa } from 'execa';
import { LoopbackServer } from '../../src/demo/loopback-server.js';
import { S3Server } from '../../src/demo/s3-server.js';
import { MountTable } from '../../src/kernel/mountinfo.js';
import { processIo } from '../../src/kernel/proc.js';
import { parseConfig, type Config } from '../../src/config.js';
import { startDriver } from '../../src/driver.js';
import { createLogger } from '../../src/log.js';
import {
  createVolume,
  mountCapability,
  startTestDriver,
  type TestDriver,
} from '../helpers/driver.js';
import { recordedClients, recordedProcesses } from '../helpers/cleanup.js';
import { treeDigest, writeRandomFile, writeTree } from '../helpers/files.js';
import { Kubelet } from '../helpers/kubelet.js';
import { Scrape } from '../helpers/metrics.js';
import { outlineCost } from '../helpers/outline.js';
import { until } from '../helpers/wait.js';

const MiB = 1 << 20;
const cap = mountCapability('MULTI_NODE_READER_ONLY');
/** The tier's own keys: another key pair of the S3 server's account, never the remote's. */
const TIER_KEYS = { accessKeyId: 'tier-access-5d21', secretAccessKey: 'tier-secret-93e0b7c41f' };

interface Node {
  driver: TestDriver;
  kubelet: Kubelet;
}

let work: string;
let data: string;
let remote: LoopbackServer;
let tier: S3Server;
let a: Node;
let b: Node;

async function startNode(clusterTier: Config['clusterTier']): Promise<Node> {
  const driver = await startTestDriver({ metricsAddress: '127.0.0.1:0', clusterTier });
  return { driver, kubelet: new Kubelet(driver.work, () => driver.client, cap) };
}

beforeAll(async () => {
  work = `/tmp/dcsi-tier-${process.pid}`;
  data = join(work, 'data');
  await writeTree(join(data, 'train'), 6, 30);
  // Big files travel as objects of their own; the small ones in packs.
  await writeRandomFile(join(data, 'train', 'shard.bin'), 3 * MiB);
  await writeRandomFile(join(data, 'train', 'cut.bin'), MiB);
  await writeTree(join(data, 'other'), 2, 10);
  for (let i = 0; i < 12; i += 1) {
    await mkdir(join(data, 'byhand', `d${i % 3}`), { recursive: true });
    await writeRandomFile(join(data, 'byhand', `d${i % 3}`, `f${i}.bin`), 64 * 1024);
  }
  // Files big enough that reading them would cost the remote far more than listing them.
  for (let i = 0; i < 20; i += 1) {
    await mkdir(join(data, 'ondemand', `d${i % 2}`), { recursive: true });
    await writeRandomFile(join(data, 'ondemand', `d${i % 2}`, `f${i}.bin`), 64 * 1024);
  }
  // A directory listing the server cached must not hide a change the test makes.
  remote = await LoopbackServer.start(data, 'http', ['--dir-cache-time', '0s']);
  tier = await S3Server.start(join(work, 's3'), ['tier'], [TIER_KEYS]);
  const credentials = join(work, 'tier-credentials');
  await mkdir(credentials, { mode: 0o700 });
  for (const [name, value] of Object.entries(TIER_KEYS)) {
    await writeFile(join(credentials, name), `${value}\n`, { mode: 0o600 });
  }
  const clusterTier = {
    location: 's3://tier/shared',
    endpoint: tier.endpoint,
    region: 'us-east-1',
    credentialsDir: credentials,
    transfers: 8,
  };
  a = await startNode(clusterTier);
  b = await startNode(clusterTier);
}, 120_000);

afterAll(async () => {
  await a?.driver.dispose();
  await b?.driver.dispose();
  await tier?.stop();
  await remote?.stop();
  await rm(work, { recursive: true, force: true });
});

const scrape = (node: Node): Promise<Scrape> => Scrape.of(node.driver.metricsPort() as number);

/** Bytes the remote's server process has sent (answers to listings and reads): its egress. */
async function remoteSentBytes(): Promise<number> {
  return (await processIo(remote.pid as number))?.writtenBytes ?? NaN;
}

/** The keys of the datasets a node has a client for, from its metrics. */
async function datasetKeys(node: Node): Promise<string[]> {
  const s = await scrape(node);
  return [...s.samples.keys()]
    .map((sample) => /^dataset_cache_client_up\{dataset="([^"]+)"\}$/.exec(sample)?.[1])
    .filter((key): key is string => key !== undefined);
}

/** Stages a tier volume of `/dir` on a node and publishes it to pod `name`. */
async function staged(
  node: Node,
  name: string,
  dir: string,
  parameters: Record<string, string> = {},
): Promise<{ key: string; volumeId: string }> {
  const before = new Set(await datasetKeys(node));
  const vol = await createVolume(
    node.driver.client,
    name,
    { source: `http://127.0.0.1:${remote.port}/${dir}/`, clusterTier: 'true', ...parameters },
    cap,
  );
  await node.kubelet.run(vol, [name], true);
  const key = (await datasetKeys(node)).find((k) => !before.has(k)) as string;
  return { key, volumeId: vol.volume_id };
}

/** Stages a tier volume of `/dir` on a node with prefetch of everything; waits for it to finish. */
async function prefetched(
  node: Node,
  name: string,
  dir: string,
): Promise<{ key: string; volumeId: string }> {
  const { key, volumeId } = await staged(node, name, dir, { prefetch: '**' });
  await until(`${name}: the prefetch to complete`, async () => {
    const s = await scrape(node);
    return (s.dataset('prefetch_completed', key) ?? 0) >= 1 || undefined;
  });
  return { key, volumeId };
}

/** Every file of the pod's view against the source as it is now. */
async function expectSourceContent(node: Node, pod: string, dir: string): Promise<void> {
  const expected = await treeDigest(join(data, dir));
  expect(await treeDigest(node.kubelet.target(pod))).toEqual(expected);
}

const sample = async (node: Node, name: string, key: string): Promise<number> =>
  (await scrape(node)).dataset(name, key) ?? 0;

it('node B takes what node A fetched from the tier: the remote serves only what changed, a truncated tier object is never served', async () => {
  const files = Object.keys(await treeDigest(join(data, 'train')));
  const bytes = (
    await Promise.all(files.map((f) => stat(join(data, 'train', f)).then((s) => s.size)))
  ).reduce((sum, size) => sum + size, 0);

  const onA = await prefetched(a, 'train-a', 'train');
  await expectSourceContent(a, 'train-a', 'train');
  expect(await sample(a, 'tier_read_files_total', onA.key)).toBe(0);
  await until('node A to upload every file it fetched', async () =>
    (await sample(a, 'tier_uploaded_files_total', onA.key)) >= files.length ? true : undefined,
  );
  expect(await sample(a, 'tier_uploaded_bytes_total', onA.key)).toBe(bytes);

  // Small files went into a pack, big ones into objects of their own.
  // (Listed in one go: s3rver shows no folder that holds only folders.)
  const tierFiles = async () =>
    String(
      (
        await execa('rclone', ['lsf', '-R', '--fast-list', '--files-only', 'UP:tier/shared'], {
          env: tier.rcloneEnv(),
          extendEnv: false,
        })
      ).stdout,
    )
      .split('\n')
      .filter((line) => line !== '')
      .sort();
  const [folder] = (await tierFiles())[0]?.split('/') ?? [];
  const inFolder = async (sub: string) =>
    (await tierFiles()).filter((f) => f.startsWith(`${folder}/${sub}/`));
  expect(await inFolder('files')).toEqual([`${folder}/files/cut.bin`, `${folder}/files/shard.bin`]);
  expect(await inFolder('packs')).toEqual([
    expect.stringMatching(/\.data$/),
    expect.stringMatching(/\.json$/),
  ]);
  // After A's upload: one small file changes on the remote (same size, new content and time),
  // and a big file's object is cut short, keeping the time of the remote's file.
  const changed = 'd1/f3.txt';
  const changedPath = join(data, 'train', changed);
  const original = await readFile(changedPath, 'utf8');
  await writeFile(changedPath, original.replace('dir 1', 'DIR 1'));
  const cutCopy = join(work, 'cut.bin');
  await writeFile(cutCopy, (await readFile(join(data, 'train', 'cut.bin'))).subarray(0, 10));
  const { mtime } = await stat(join(data, 'train', 'cut.bin'));
  await utimes(cutCopy, mtime, mtime);
  await execa('rclone', ['copyto', cutCopy, `UP:tier/shared/${folder}/files/cut.bin`], {
    env: tier.rcloneEnv(),
    extendEnv: false,
  });

  const remoteBefore = await remoteSentBytes();
  const onB = await prefetched(b, 'train-b', 'train');
  const remoteCost = (await remoteSentBytes()) - remoteBefore;
  await expectSourceContent(b, 'train-b', 'train');
  expect(await sample(b, 'tier_read_files_total', onB.key)).toBe(files.length - 2);
  expect(await sample(b, 'tier_rejected_total', onB.key)).toBe(2);
  expect(await sample(b, 'tier_errors_total', onB.key)).toBe(0);
  // The two files the tier could not give, the listing, and the stage's outline of the copy: a
  // few percent of the rest.
  const outline = await outlineCost(`http://127.0.0.1:${remote.port}/train/`, remoteSentBytes);
  expect(remoteCost).toBeLessThan(MiB + bytes * 0.1 + outline);
  // B shares what it had to fetch: the tier holds the cut file whole again, and a new pack.
  await until('node B to upload the two files it fetched', async () =>
    (await sample(b, 'tier_uploaded_files_total', onB.key)) >= 2 ? true : undefined,
  );
  const listed = await execa('rclone', ['lsjson', `UP:tier/shared/${folder}/files/cut.bin`], {
    env: tier.rcloneEnv(),
    extendEnv: false,
  });
  expect((JSON.parse(String(listed.stdout)) as { Size: number }[])[0]?.Size).toBe(MiB);
  expect((await inFolder('packs')).length).toBe(4);
}, 180_000);

it('files node A read on demand (no prefetch) reach the tier once promoted: node B, staged without prefetch too, takes them from there before its pod reads them', async () => {
  const files = Object.keys(await treeDigest(join(data, 'ondemand')));
  const onA = await staged(a, 'ondemand-a', 'ondemand');
  // The pod reads every file once, through rclone: promoted into A's copy, then uploaded.
  await expectSourceContent(a, 'ondemand-a', 'ondemand');
  await until('node A to upload the files it read', async () =>
    (await sample(a, 'tier_uploaded_files_total', onA.key)) >= files.length ? true : undefined,
  );
  // What one listing of the dataset (as a fill makes it) costs the remote, for comparison.
  const listingStart = await remoteSentBytes();
  await execa('rclone', [
    'lsjson',
    '-R',
    '--files-only',
    '--config',
    '/dev/null',
    '--http-url',
    `http://127.0.0.1:${remote.port}/ondemand/`,
    ':http:',
  ]);
  const listing = (await remoteSentBytes()) - listingStart;
  const remoteBefore = await remoteSentBytes();
  // No prefetch on B either: its stage takes from the tier all it holds of the dataset.
  const onB = await staged(b, 'ondemand-b', 'ondemand');
  await until('node B to take what the tier holds', async () =>
    (await sample(b, 'prefetch_completed', onB.key)) >= 1 ? true : undefined,
  );
  expect(await sample(b, 'tier_read_files_total', onB.key)).toBe(files.length);
  expect(await b.driver.log()).toMatch(
    new RegExp(`"dataset":"${onB.key}".*"mode":"from the cluster tier".*"prefetch completed"`),
  );
  await expectSourceContent(b, 'ondemand-b', 'ondemand');
  const bytes = (
    await Promise.all(files.map((f) => stat(join(data, 'ondemand', f)).then((s) => s.size)))
  ).reduce((sum, size) => sum + size, 0);
  // B's listing and the stage's own look at the root: none of the files.
  expect((await remoteSentBytes()) - remoteBefore).toBeLessThan(2 * listing + bytes * 0.1);
  expect(await sample(b, 'tier_read_bytes_total', onB.key)).toBe(bytes);
  // Another volume of the dataset looks at the tier again (others may have shared more since),
  // and finds nothing more to take.
  const warmUps = async () =>
    (await b.driver.log())
      .split('\n')
      .filter((line) => line.includes(onB.key) && line.includes('"mode":"from the cluster tier"'))
      .map((line) => JSON.parse(line) as { tierFiles: number; files: number });
  await staged(b, 'ondemand-b2', 'ondemand');
  await until('the second warm-up to end', async () =>
    (await warmUps()).length >= 2 ? true : undefined,
  );
  expect((await warmUps()).map((w) => [w.tierFiles, w.files])).toEqual([
    [files.length, files.length],
    [0, files.length],
  ]);
}, 120_000);

/** `dataset-cache-csi prefetch` by hand on a node, as an operator runs it; its summary line. */
async function prefetchByHand(node: Node, volumeId: string): Promise<Record<string, number>> {
  const result = await execa(
    process.execPath,
    [
      join(process.cwd(), 'dist', 'main.js'),
      'prefetch',
      '--state-dir',
      node.driver.stateDir,
      '--dataset',
      volumeId,
      '**',
    ],
    { reject: false, extendEnv: false, env: { PATH: process.env.PATH ?? '/usr/bin:/bin' } },
  );
  expect(result.exitCode).toBe(0);
  // The tier's keys are not in what the command prints either.
  expect(`${result.stdout}${result.stderr}`).not.toContain(TIER_KEYS.secretAccessKey);
  return JSON.parse(result.stdout.trim().split('\n').pop() as string) as Record<string, number>;
}

it('the prefetch by hand uses the tier too: what it fetched is uploaded before it ends, and the next node takes it from there', async () => {
  const files = Object.keys(await treeDigest(join(data, 'byhand')));
  // No prefetch at stage: the command fills the copies.
  const onA = await staged(a, 'byhand-a', 'byhand');
  const byA = await prefetchByHand(a, onA.volumeId);
  expect(byA).toMatchObject({ files: files.length, tierFiles: 0, errors: 0 });
  expect(byA.tierUploadedFiles).toBe(files.length);
  await expectSourceContent(a, 'byhand-a', 'byhand');

  // A prefetch pattern at stage says what to warm, and nothing else is taken from the tier: a
  // metadata-only one leaves B's copy to the command.
  const onB = await staged(b, 'byhand-b', 'byhand', { prefetch: 'd0/' });
  // B's own warm-up of the metadata ends first: the window below measures the command alone.
  await until("B's metadata prefetch to end", async () =>
    ((await scrape(b)).dataset('prefetch_completed', onB.key) ?? 0) >= 1 ? true : undefined,
  );
  const remoteBefore = await remoteSentBytes();
  const byB = await prefetchByHand(b, onB.volumeId);
  const remoteCost = (await remoteSentBytes()) - remoteBefore;
  expect(byB).toMatchObject({ files: files.length, tierFiles: files.length, errors: 0 });
  expect(byB.tierUploadedFiles).toBe(0);
  await expectSourceContent(b, 'byhand-b', 'byhand');
  // B's listing only (a few KB): the files' 768 KiB came from the tier.
  expect(remoteCost).toBeLessThan(files.length * 64 * 1024 * 0.1);
  expect(await readFile(join(b.driver.stateDir, 'cluster-tier.json'), 'utf8')).not.toContain(
    TIER_KEYS.accessKeyId,
  );
}, 120_000);

it('with the tier down, the remote serves: no error for the pod, the condition and the metrics say why', async () => {
  await tier.stop();
  const { key, volumeId } = await prefetched(b, 'other-b', 'other');
  await expectSourceContent(b, 'other-b', 'other');
  expect(await sample(b, 'prefetch_errors_total', key)).toBe(0);
  expect(await sample(b, 'tier_errors_total', key)).toBeGreaterThanOrEqual(1);
  expect(await sample(b, 'tier_up', key)).toBe(0);
  const stats = await b.driver.client.node.NodeGetVolumeStats({
    volume_id: volumeId,
    volume_path: b.kubelet.target('other-b'),
  });
  expect(stats.volume_condition?.abnormal).toBe(true);
  expect(stats.volume_condition?.message).toMatch(/cluster tier .* unreachable.*from the remote/);
}, 120_000);

it('only administrators name a tier: inline volumes, writable datasets and nodes without a tier refuse it', async () => {
  const context = {
    source: `http://127.0.0.1:${remote.port}/other/`,
    clusterTier: 'true',
    'csi.storage.k8s.io/ephemeral': 'true',
    'csi.storage.k8s.io/pod.namespace': 'team-a',
  };
  await expect(
    a.driver.client.node.NodePublishVolume({
      volume_id: 'inline-tier',
      target_path: join(a.kubelet.root, 'pods', 'inline', 'volumes', 'data'),
      volume_capability: cap,
      volume_context: context,
      readonly: true,
    }),
  ).rejects.toMatchObject({
    code: GrpcStatus.INVALID_ARGUMENT,
    details: expect.stringMatching(/inline volumes cannot set "clusterTier"/),
  });
  await expect(
    createVolume(
      a.driver.client,
      'writable-tier',
      { source: `webdav://127.0.0.1:${remote.port}/`, clusterTier: 'true' },
      mountCapability(),
    ),
  ).rejects.toMatchObject({
    code: GrpcStatus.INVALID_ARGUMENT,
    details: expect.stringMatching(/clusterTier=true needs a local copy/),
  });
  const plain = await startNode(undefined);
  try {
    const vol = await createVolume(
      plain.driver.client,
      'no-tier',
      { source: `http://127.0.0.1:${remote.port}/other/`, clusterTier: 'true' },
      cap,
    );
    await expect(plain.kubelet.stage(vol)).rejects.toMatchObject({
      code: GrpcStatus.FAILED_PRECONDITION,
      details: expect.stringMatching(/--cluster-tier/),
    });
  } finally {
    await plain.driver.dispose();
  }
}, 60_000);

it('a tier whose Secret lacks its keys stops the driver at start, naming them', async () => {
  const empty = join(work, 'empty-credentials');
  await mkdir(empty, { recursive: true });
  const config = parseConfig(
    [
      `--endpoint=unix://${work}/refused.sock`,
      '--node-id=refused',
      `--state-dir=${join(work, 'refused-state')}`,
      `--runtime-dir=${join(work, 'refused-run')}`,
      '--cluster-tier=s3://tier/shared',
      `--cluster-tier-credentials=${empty}`,
    ],
    {},
  );
  await expect(startDriver(config, createLogger('silent'))).rejects.toThrow(
    /cannot read accessKeyId in .*empty-credentials \(ENOENT\); the Secret's keys must be accessKeyId and secretAccessKey/,
  );
});

/**
 * Every regular file under `dir`, with its mode; mounts are not entered (a client's FUSE mount is
 * the dataset, not a file the driver wrote).
 */
async function filesUnder(
  dir: string,
  mounts: ReadonlySet<string>,
): Promise<{ path: string; mode: number }[]> {
  const found: { path: string; mode: number }[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (mounts.has(path)) continue;
    if (entry.isDirectory()) found.push(...(await filesUnder(path, mounts)));
    else if (entry.isFile()) found.push({ path, mode: (await lstat(path)).mode & 0o7777 });
  }
  return found;
}

/** A file of /proc/PID, or undefined for a process that ended meanwhile. */
async function procFile(pid: number | string, name: string): Promise<string | undefined> {
  try {
    return (await readFile(`/proc/${pid}/${name}`)).toString('latin1');
  } catch (err) {
    if (['ENOENT', 'ESRCH'].includes((err as NodeJS.ErrnoException).code ?? '')) return undefined;
    throw err;
  }
}

it("the tier's keys reach no log, no command line, no client's environment, and no file of the driver's but owner-only ones", async () => {
  const keys = Object.values(TIER_KEYS);
  const holding = (text: string) => keys.filter((k) => text.includes(k));
  const mounts = new Set((await MountTable.read()).entries.map((m) => m.mountPoint));
  const processes = await Promise.all(
    (await readdir('/proc'))
      .filter((name) => /^\d+$/.test(name))
      .map(async (pid) => ({
        pid: Number(pid),
        cmdline: (await procFile(pid, 'cmdline'))?.replaceAll('\0', ' '),
      })),
  );
  // Any process on the machine: the driver's, its clients', its rclone transfers'.
  expect(processes.filter((p) => holding(p.cmdline ?? '').length > 0)).toEqual([]);
  for (const node of [a, b]) {
    const log = await node.driver.log();
    expect(log).toContain('uploaded to the cluster tier');
    expect(holding(log)).toEqual([]);
    // The clients serve the remote, never the tier: its keys are not in their environment.
    const clients = await recordedProcesses(node.driver.stateDir);
    expect(clients.length).toBeGreaterThan(0);
    for (const client of clients) {
      expect(processes.map((p) => p.pid)).toContain(client.pid);
      const environ = await procFile(client.pid, 'environ');
      expect([client.pid, environ === undefined ? [] : holding(environ)]).toEqual([client.pid, []]);
    }
    // Every file the driver and its clients wrote: state, runtime (the clients' logs), caches.
    const files = (
      await Promise.all(
        [node.driver.stateDir, node.driver.config.runtimeDir, node.driver.memCacheDir].map((dir) =>
          filesUnder(dir, mounts),
        ),
      )
    ).flat();
    // The scan reached every client's log.
    for (const { key } of await recordedClients(node.driver.stateDir)) {
      expect(files.map((f) => f.path)).toContain(
        join(node.driver.config.runtimeDir, key, 'client.log'),
      );
    }
    const secretFiles = [];
    for (const file of files) {
      const found = holding(await readFile(file.path, 'latin1'));
      if (found.length > 0) secretFiles.push({ ...file, found });
    }
    // A file that holds a key is no log, and only its owner can read it.
    expect(
      secretFiles
        .filter((f) => f.path.endsWith('.log') || (f.mode & 0o077) !== 0)
        .map((f) => ({ ...f, mode: f.mode.toString(8) })),
    ).toEqual([]);
  }
});
