/**
 * The local-copy layer of read-only datasets, against a real HTTP server on loopback: prefetch
 * fills the copy in bulk while readers hammer the files, promotion makes a second epoch local
 * without any prefetch, the quota stops the copy and says so, unsafe names and escaping globs are
 * refused, and a refresh replaces files that changed on the remote.
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, open, readFile, readdir, rm, stat, writeFile, utimes } from 'node:fs/promises';
import { createConnection, createServer, type AddressInfo, type Socket } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { status as GrpcStatus } from '@grpc/grpc-js';
import { execa } from 'execa';
import { LoopbackServer } from '../../src/demo/loopback-server.js';
import { S3Server } from '../../src/demo/s3-server.js';
import { MountTable } from '../../src/kernel/mountinfo.js';
import { processIo } from '../../src/kernel/proc.js';
import {
  createVolume,
  mountCapability,
  startTestDriver,
  type TestDriver,
} from '../helpers/driver.js';
import { treeDigest, writeRandomFile, writeTree } from '../helpers/files.js';
import { outlineCost } from '../helpers/outline.js';
import { until, untilHolds } from '../helpers/wait.js';
import { Kubelet } from '../helpers/kubelet.js';
import { listingGate } from '../helpers/listing-gate.js';
import { Scrape } from '../helpers/metrics.js';

const MiB = 1 << 20;
const cap = mountCapability('MULTI_NODE_READER_ONLY');
let driver: TestDriver;
let kubelet: Kubelet;
let data: string;
let server: LoopbackServer;
let digests: Record<string, string>;

beforeAll(async () => {
  driver = await startTestDriver({ metricsAddress: '127.0.0.1:0' });
  kubelet = new Kubelet(driver.work, () => driver.client, cap);
  data = join(driver.work, 'data');
  for (const tree of ['train', 'epoch', 'quota', 'hammer'])
    await writeTree(join(data, tree), 10, 40);
  // Files two levels down, as in most datasets (a split, then classes): below a stage's outline.
  await writeTree(join(data, 'lean', 'train'), 10, 40);
  // A dataset whose first listing comes late (see the test of late top levels).
  await writeTree(join(data, 'late', 'train'), 6, 20);
  // Directories three levels down, below what a stage outlines itself.
  for (let g = 0; g < 4; g += 1) await writeTree(join(data, 'gaps', 'split', `g${g}`), 2, 3);
  await writeTree(join(data, 'refused'), 2, 5);
  await writeRandomFile(join(data, 'hammer', 'big.bin'), 24 * MiB);
  // More than the copy's share of an 8 MiB cache once the small files are in, less than the cache.
  await writeRandomFile(join(data, 'quota', 'big.bin'), 7 * MiB);
  digests = await treeDigest(data);
  server = await LoopbackServer.start(data, 'http');
}, 120_000);

afterAll(async () => {
  await server?.stop();
  await driver.dispose();
});

const scrape = (): Promise<Scrape> => Scrape.of(driver.metricsPort() as number);

/** Bytes the server process has read (its files and requests): what a read costs the remote. */
async function serverReadBytes(): Promise<number> {
  return (await processIo(server.pid as number))?.readBytes ?? NaN;
}

/** Bytes the server process has sent (answers to listings and reads): its egress. */
async function serverSentBytes(): Promise<number> {
  return (await processIo(server.pid as number))?.writtenBytes ?? NaN;
}

/**
 * A TCP relay on loopback in front of `port` that records the request line ("GET /bucket/key?query")
 * of every HTTP request passing through it: what a client asked the server, request by request.
 */
async function requestRecorder(
  port: number,
): Promise<{ url: string; requests: string[]; close(): Promise<void> }> {
  const requests: string[] = [];
  const sockets = new Set<Socket>();
  const relay = createServer((inbound) => {
    const outbound = createConnection({ host: '127.0.0.1', port });
    const drop = () => {
      for (const socket of [inbound, outbound]) {
        socket.destroy();
        sockets.delete(socket);
      }
    };
    for (const socket of [inbound, outbound]) {
      sockets.add(socket);
      socket.on('error', drop).on('close', drop);
    }
    // The requests carry no body (listings, HEADs and GETs): every CRLF-ended line is a request
    // line or a header, and only request lines look like "METHOD target HTTP/1.x".
    let pending = '';
    inbound.on('data', (chunk: Buffer) => {
      const lines = (pending + chunk.toString('latin1')).split('\r\n');
      pending = lines.pop() ?? '';
      for (const line of lines) {
        const request = /^([A-Z]+ \S+) HTTP\/1\.[01]$/.exec(line)?.[1];
        if (request) requests.push(request);
      }
    });
    inbound.pipe(outbound).pipe(inbound);
  });
  await new Promise<void>((resolve) => relay.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(relay.address() as AddressInfo).port}`,
    requests,
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => relay.close(() => resolve()));
    },
  };
}

const volume = (name: string, parameters: Record<string, string>) =>
  createVolume(driver.client, name, parameters, cap);

const sha256 = async (path: string) =>
  createHash('sha256')
    .update(await readFile(path))
    .digest('hex');

/** Relative paths of the files below `prefix` of the dataset. */
const filesUnder = (prefix: string) =>
  Object.keys(digests).filter((p) => p.startsWith(`${prefix}/`));

interface DatasetRecord {
  key: string;
  cacheDir: string;
  spec: { source: { path: string } };
  copy?: { root: string };
}

/** The journal's record of the dataset whose source path is `path` (http: '/prefix'). */
async function datasetAt(path: string): Promise<DatasetRecord & { copy: { root: string } }> {
  const journal = JSON.parse(await readFile(join(driver.stateDir, 'journal.json'), 'utf8')) as {
    datasets: Record<string, DatasetRecord>;
  };
  const record = Object.values(journal.datasets).find((d) => d.spec.source.path === path);
  if (!record?.copy) throw new Error(`no dataset with a local copy at ${path}`);
  return record as DatasetRecord & { copy: { root: string } };
}

/** Files in the copy, relative to it. */
async function copied(root: string): Promise<string[]> {
  const found: string[] = [];
  const walk = async (dir: string, rel: string) => {
    for (const entry of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
      const path = rel === '' ? entry.name : `${rel}/${entry.name}`;
      if (entry.isDirectory()) await walk(join(dir, entry.name), path);
      else found.push(path);
    }
  };
  await walk(root, '');
  return found.sort();
}

/**
 * The names of `files` that the overlay at `target` does not show from the copy at `root` yet. A
 * file the overlay takes from the copy reports the copy's inode; one it still takes from the engine
 * (a name it looked up before the copy had it, kept until the copy keeper's next round remounts
 * it) reports the FUSE layer's.
 */
async function notShownFromCopy(target: string, root: string, files: string[]): Promise<string[]> {
  const missing: string[] = [];
  for (const name of files) {
    const [seen, inCopy] = await Promise.all([
      stat(join(target, name)).catch(() => undefined),
      stat(join(root, name)).catch(() => undefined),
    ]);
    if (!seen || !inCopy || seen.ino !== inCopy.ino || seen.size !== inCopy.size)
      missing.push(name);
  }
  return missing;
}

/** Waits until the overlay shows every one of `files` from the copy; a timeout names the others. */
const shownFromCopy = (target: string, root: string, files: string[]) =>
  untilHolds(
    'the overlay to show the files from the copy (the copy keeper round after they entered it)',
    () => notShownFromCopy(target, root, files),
    (missing) => missing.length === 0,
    15_000,
    200,
  );

it('prefetch fills the copy in bulk while readers hammer it: never a partial file, then reads cost the remote nothing', async () => {
  const vol = await volume('hammer', {
    source: `http://127.0.0.1:${server.port}/hammer/`,
    prefetch: 'd*/**,big.bin',
  });
  await kubelet.run(vol, ['reader'], true);
  const target = kubelet.target('reader');
  const files = filesUnder('hammer').map((p) => p.slice('hammer/'.length));
  const { key, copy } = await datasetAt('/hammer');
  const mounts = await MountTable.read();
  expect(mounts.at(kubelet.staging(vol.volume_id))?.fsType).toBe('overlay');

  // Readers go round the dataset until the prefetch is done; every read must be the source's.
  let done = false;
  let reads = 0;
  const wrong: string[] = [];
  const readers = Array.from({ length: 4 }, async (_, r) => {
    for (let i = r; !done; i = (i + 7) % files.length) {
      const name = files[i] as string;
      const got = await sha256(join(target, name));
      reads += 1;
      if (got !== digests[`hammer/${name}`]) wrong.push(name);
    }
  });
  const progress = await until('the prefetch to complete', async () => {
    const s = await scrape();
    return (s.dataset('prefetch_completed', key) ?? 0) >= 1 ? s : undefined;
  });
  done = true;
  await Promise.all(readers);
  expect(wrong).toEqual([]);
  expect(reads).toBeGreaterThan(50);
  // 400 small files and the big file are matched, the manifest is not (but the readers read it
  // through the engine, which promotes it).
  expect(progress.dataset('prefetch_matched_files', key)).toBe(files.length - 1);
  const inCopy = await copied(copy.root);
  expect(inCopy).toEqual(expect.arrayContaining(files.filter((f) => f !== 'MANIFEST')));
  expect(progress.dataset('copy_files', key)).toBe(inCopy.length);
  expect(progress.dataset('copy_complete', key)).toBe(1);

  // Everything prefetched is then read from the copy: the server reads nothing for it. The overlay
  // shows the copy's last files from the copies' next round (each second, after that round's
  // promotions): a pass over the files may still meet a name the overlay had looked up below.
  // Its rchar also counts socket reads (a closing idle connection costs a byte): far below 24 MiB.
  // A timeout fails with the last pass's cost.
  await untilHolds(
    'a pass over the prefetched files that costs the remote under 1 KiB',
    async () => {
      const before = await serverReadBytes();
      for (const name of files.filter((f) => f !== 'MANIFEST')) {
        expect(await sha256(join(target, name))).toBe(digests[`hammer/${name}`]);
      }
      return (await serverReadBytes()) - before;
    },
    (cost) => cost < 1024,
    15_000,
    500,
  );
  // Same size and time as the source, read-only like the dataset.
  const [bigInCopy, atSource] = await Promise.all([
    stat(join(target, 'big.bin')),
    stat(join(data, 'hammer', 'big.bin')),
  ]);
  expect(bigInCopy.size).toBe(atSource.size);
  expect(Math.abs(bigInCopy.mtimeMs - atSource.mtimeMs)).toBeLessThan(1000);
  await expect(writeFile(join(target, 'new.txt'), 'x')).rejects.toMatchObject({ code: 'EROFS' });
  await kubelet.stop(vol.volume_id, ['reader']);
});

it('a prefetch over HTTP costs the server no more than one rclone copy of the files: each is asked for once besides its bytes', async () => {
  const url = `http://127.0.0.1:${server.port}/lean/`;
  // The yardstick: a plain rclone copy of the tree (a HEAD and a GET a file) to a scratch folder.
  const scratch = join(driver.work, 'lean-by-rclone');
  const before = await serverSentBytes();
  await execa('rclone', ['copy', 'U:', scratch, '--config', '/dev/null'], {
    env: { RCLONE_CONFIG_U_TYPE: 'http', RCLONE_CONFIG_U_URL: url },
  });
  const oneCopy = (await serverSentBytes()) - before;
  expect((await copied(scratch)).length).toBe(filesUnder('lean').length);

  const vol = await volume('lean', { source: url, prefetch: '**' });
  const atStage = await serverSentBytes();
  await kubelet.run(vol, ['reader'], true);
  const { key, copy } = await datasetAt('/lean');
  await until('the prefetch to complete', async () =>
    ((await scrape()).dataset('prefetch_completed', key) ?? 0) >= 1 ? true : undefined,
  );
  const fill = (await serverSentBytes()) - atStage;
  // Its own listing asked for each file's size and time; the transfer asked only for the bytes
  // (when rclone fetched every index page again and sent a HEAD a file, this was 1.5 times). The
  // stage outlined the copy's top two levels; the fill's listing made the directories below (when
  // the outline read them too, their index pages cost the server a third of these tiny files).
  const topLevels = await outlineCost(url, serverSentBytes, {}, 2);
  expect(fill).toBeLessThan(oneCopy * 1.1 + topLevels);
  const outlined = (await driver.log())
    .split('\n')
    .filter((line) => line.includes('"local copy outlined"') && line.includes(key));
  expect(
    outlined.map((line) => (JSON.parse(line) as { leftToFills: string[] }).leftToFills),
  ).toEqual([['']]);
  const files = filesUnder('lean').map((p) => p.slice('lean/'.length));
  expect(await copied(copy.root)).toEqual([...files].sort());
  // The times are the remote's (the listing's, as the download had none), and so is every byte.
  for (const name of files) {
    const [inCopy, atSource] = await Promise.all([
      stat(join(copy.root, name)),
      stat(join(data, 'lean', name)),
    ]);
    expect(inCopy.size).toBe(atSource.size);
    expect(Math.abs(inCopy.mtimeMs - atSource.mtimeMs)).toBeLessThan(1000);
    expect(await sha256(join(copy.root, name))).toBe(digests[`lean/${name}`]);
  }
  await kubelet.stop(vol.volume_id, ['reader']);
});

it('directories a failed fill left unmade are outlined after all, ahead of the pods that will look them up', async () => {
  // The fill's listing of one directory is refused once: the fill fails with the directories
  // below it unmade, which the stage's outline had left to it (prefetch '**' lists everything).
  const gate = await listingGate(server.port);
  let staged: string | undefined;
  try {
    gate.refuses = (path) => path === '/gaps/split/g2/' && gate.refused === 0;
    const vol = await volume('gaps', {
      source: `http://127.0.0.1:${gate.port}/gaps/`,
      prefetch: '**',
    });
    staged = vol.volume_id;
    await kubelet.run(vol, ['reader'], true);
    const { key, copy } = await datasetAt('/gaps');
    await until('the prefetch to fail', async () =>
      ((await scrape()).dataset('prefetch_errors_total', key) ?? 0) >= 1 ? true : undefined,
    );
    expect(gate.refused).toBe(1);
    const deep = ['split/g2/d0', 'split/g2/d1'];
    await untilHolds(
      'the directories below the refused listing in the copy',
      async () => deep.filter((dir) => !existsSync(join(copy.root, dir))),
      (missing) => missing.length === 0,
      30_000,
    );
  } finally {
    if (staged) await kubelet.stop(staged, ['reader']);
    await gate.close();
  }
}, 120_000);

it('a top directory pods looked up before the stage outlined it is found in the copy once they let go of it', async () => {
  // The remote lists the dataset's top only after 5 s: the stage stops waiting for its outline
  // after one, and the pod looks `train/` up before the copy has it, from the engine alone.
  const gate = await listingGate(server.port);
  let staged: string | undefined;
  try {
    let slow = true;
    gate.delays = (path) => (slow && path === '/late/' ? 5000 : 0);
    const vol = await volume('late', {
      source: `http://127.0.0.1:${gate.port}/late/`,
      autoPrefetch: 'false',
    });
    staged = vol.volume_id;
    await kubelet.run(vol, ['reader'], true);
    const target = kubelet.target('reader');
    const files = filesUnder('late/train').map((p) => p.slice('late/'.length));
    const { copy } = await datasetAt('/late');
    // The pod keeps one file below `train/` open (as readers that never pause do) and reads
    // every file whole: each is promoted into the copy.
    const held = await open(join(target, files[0] as string), 'r');
    try {
      slow = false;
      for (const name of files)
        expect(await sha256(join(target, name))).toBe(digests[`late/${name}`]);
      await until('every file in the copy', async () =>
        (await copied(copy.root)).length === files.length ? true : undefined,
      );
      // A remount the last promotion asked for comes while the file is still held.
      await sleep(3000);
      // Held, `train/` stays the engine's: the overlay shows none of the copy's files there.
      expect(await notShownFromCopy(target, copy.root, files)).toEqual(files);
    } finally {
      await held.close();
    }
    // Let go, the next remount finds `train/` in the copy, though the copy no longer changes.
    await untilHolds(
      "the copy's files shown through the overlay",
      () => notShownFromCopy(target, copy.root, files),
      (missing) => missing.length === 0,
      30_000,
    );
  } finally {
    if (staged) await kubelet.stop(staged, ['reader']);
    await gate.close();
  }
}, 120_000);

it('a fill whose remote refuses every file asks for each once: a second transfer follows only one that got files through', async () => {
  // A remote that lists but serves no file (down behind its listings, or refusing the node):
  // a second transfer of the same files would double the time until the fill gives up.
  const gate = await listingGate(server.port);
  let staged: string | undefined;
  try {
    const files = new Set(filesUnder('refused').map((p) => `/${p}`));
    // Listings and HEADs answered (the listing asks for sizes): only the files' bytes refused.
    gate.refuses = (path, method) => method === 'GET' && files.has(path);
    const vol = await volume('refused', {
      source: `http://127.0.0.1:${gate.port}/refused/`,
      prefetch: '**',
    });
    staged = vol.volume_id;
    await kubelet.run(vol, ['reader'], true);
    const { key } = await datasetAt('/refused');
    await until('the prefetch to fail', async () =>
      ((await scrape()).dataset('prefetch_errors_total', key) ?? 0) >= 1 ? true : undefined,
    );
    // Each file asked for once (the fill's one transfer), and nothing else of it.
    expect(gate.refused).toBe(files.size);
    expect(gate.requests.filter((r) => r.startsWith('GET ') && files.has(r.slice(4)))).toEqual([]);
  } finally {
    if (staged) await kubelet.stop(staged, ['reader']);
    await gate.close();
  }
}, 120_000);

it('files read on demand are promoted: the second epoch never crosses FUSE nor the network', async () => {
  // Promotion alone: no sweep fill (autoPrefetch), whose downloads would be copies of their own.
  const vol = await volume('epoch', {
    source: `http://127.0.0.1:${server.port}/epoch/`,
    autoPrefetch: 'false',
  });
  await kubelet.run(vol, ['trainer'], true);
  const target = kubelet.target('trainer');
  const files = filesUnder('epoch').map((p) => p.slice('epoch/'.length));
  const { key, copy } = await datasetAt('/epoch');
  for (const name of files) expect(await sha256(join(target, name))).toBe(digests[`epoch/${name}`]);
  await until('every file to be promoted', async () =>
    (await copied(copy.root)).length === files.length ? true : undefined,
  );
  // The overlay looked every name up in the engine during epoch 1: the copy keeper's next round
  // remounts it, and it then finds them in the copy.
  await shownFromCopy(target, copy.root, files);
  const served = async () => (await scrape()).dataset('served_bytes_total', key) ?? NaN;
  const fetched = async () => (await scrape()).dataset('remote_bytes_total', key) ?? NaN;
  const [remoteBefore, servedBefore, fetchedBefore] = [
    await serverReadBytes(),
    await served(),
    await fetched(),
  ];
  for (const name of files) expect(await sha256(join(target, name))).toBe(digests[`epoch/${name}`]);
  // Nothing came from the remote: rclone fetched no byte, and the server read no file (its rchar
  // also counts socket reads, where a closing idle connection costs a byte).
  expect((await fetched()) - fetchedBefore).toBe(0);
  expect((await serverReadBytes()) - remoteBefore).toBeLessThan(1024);
  // No file of epoch 2 went through FUSE: the page-cache layer (bindfs) read only the few FUSE
  // requests of directory look-ups (its rchar counts them), not the files' 190 KB.
  const sizes = await Promise.all(files.map((name) => stat(join(data, 'epoch', name))));
  expect(sizes.reduce((sum, s) => sum + s.size, 0)).toBeGreaterThan(150_000);
  expect((await served()) - servedBefore).toBeLessThan(16 * 1024);
  // Each file of the copy is a hard link to the engine cache's file (a second name of the same
  // inode): promotion costs no second copy.
  const links = await Promise.all(
    files.map(async (name) => (await stat(join(copy.root, name))).nlink),
  );
  expect(links.filter((n) => n < 2)).toEqual([]);
  expect((await scrape()).dataset('copy_files', key)).toBe(files.length);
  await kubelet.stop(vol.volume_id, ['trainer']);
});

it('a prefetch bigger than cacheQuota stops at the quota; everything stays readable and the condition says why', async () => {
  const vol = await volume('quota', {
    source: `http://127.0.0.1:${server.port}/quota/`,
    cacheQuota: '8Mi',
    prefetch: '**',
  });
  await kubelet.run(vol, ['small-quota'], true);
  const { key, copy } = await datasetAt('/quota');
  await until('the prefetch to end', async () =>
    ((await scrape()).dataset('prefetch_completed', key) ?? 0) >= 1 ? true : undefined,
  );
  const s = await scrape();
  expect(s.dataset('copy_complete', key)).toBe(0);
  expect(await copied(copy.root)).not.toContain('big.bin');
  const copyBytes = s.dataset('copy_bytes', key) as number;
  expect(copyBytes).toBeLessThanOrEqual(8 * MiB * 0.8);
  const { volume_condition: condition } = await driver.client.node.NodeGetVolumeStats({
    volume_id: vol.volume_id,
    volume_path: kubelet.target('small-quota'),
  });
  expect(condition?.abnormal).toBe(true);
  expect(condition?.message).toMatch(/local copy .* incomplete.*raise cacheQuota/);
  const target = kubelet.target('small-quota');
  for (const name of filesUnder('quota').map((p) => p.slice('quota/'.length))) {
    expect(await sha256(join(target, name))).toBe(digests[`quota/${name}`]);
  }
  await kubelet.stop(vol.volume_id, ['small-quota']);
});

it('prefetch globs that escape the dataset are refused, naming the key', async () => {
  for (const prefetch of ['../etc/**', '/etc/**', 'train/../../x']) {
    await expect(
      volume(`escape-${prefetch.length}`, { source: `http://127.0.0.1:${server.port}/`, prefetch }),
    ).rejects.toMatchObject({
      code: GrpcStatus.INVALID_ARGUMENT,
      details: expect.stringMatching(/prefetch/),
    });
  }
  await expect(
    volume('copy-on-writable', { source: 'local:///tmp', localCopy: 'true' }),
  ).rejects.toMatchObject({
    code: GrpcStatus.INVALID_ARGUMENT,
    details: expect.stringMatching(/localCopy=true needs readOnly/),
  });
});

it('names from the remote that cannot be local paths are skipped and counted, nothing is written outside the copy', async () => {
  const tree = join(driver.work, 'unsafe');
  await writeTree(join(tree, 'ok'), 2, 5);
  await writeFile(join(tree, 'ok', 'line\nbreak.txt'), 'newline in the name\n');
  await writeFile(join(tree, 'ok', 'carriage\rreturn'), 'cr in the name\n');
  const vol = await volume('unsafe', {
    source: `local://${tree}`,
    readOnly: 'true',
    prefetch: '**',
  });
  await kubelet.run(vol, ['u'], true);
  const { key, cacheDir, copy } = await datasetAt(tree);
  await until('the prefetch to end', async () =>
    ((await scrape()).dataset('prefetch_completed', key) ?? 0) >= 1 ? true : undefined,
  );
  const s = await scrape();
  expect(s.dataset('copy_unsafe_names_total', key)).toBe(2);
  const root = copy.root;
  expect((await copied(root)).every((p) => !/[\n\r]/.test(p))).toBe(true);
  expect(await copied(root)).toHaveLength(11);
  // The cache file system holds rclone's cache, the copy and its workspace, nothing else.
  expect((await readdir(cacheDir)).sort()).toEqual(expect.arrayContaining(['copy', 'incoming']));
  expect(
    (await readdir(cacheDir)).filter(
      (name) => !['copy', 'incoming', 'vfs', 'vfsMeta', 'lost+found'].includes(name),
    ),
  ).toEqual([]);
  expect(await readdir(join(cacheDir, 'incoming'))).toEqual([]);
  await kubelet.stop(vol.volume_id, ['u']);
});

it('a file changed on the remote keeps its copied content until a refresh, which replaces it whole', async () => {
  const tree = join(driver.work, 'changing');
  await mkdir(tree, { recursive: true });
  await writeFile(join(tree, 'labels.csv'), 'version 1\n');
  await writeFile(join(tree, 'gone.txt'), 'will be removed\n');
  const vol = await volume('changing', {
    source: `local://${tree}`,
    readOnly: 'true',
    prefetch: '*',
  });
  await kubelet.run(vol, ['c'], true);
  const target = kubelet.target('c');
  const { key, copy } = await datasetAt(tree);
  await until('the prefetch to end', async () =>
    ((await scrape()).dataset('prefetch_completed', key) ?? 0) >= 1 ? true : undefined,
  );
  await shownFromCopy(target, copy.root, ['labels.csv', 'gone.txt']);
  expect(await readFile(join(target, 'labels.csv'), 'utf8')).toBe('version 1\n');
  await writeFile(join(tree, 'labels.csv'), 'version 2 is longer\n');
  await utimes(join(tree, 'labels.csv'), new Date(), new Date(Date.now() + 5000));
  await execa('rm', [join(tree, 'gone.txt')]);
  // The dataset is treated as immutable: the copy still answers.
  expect(await readFile(join(target, 'labels.csv'), 'utf8')).toBe('version 1\n');
  const result = await execa(
    process.execPath,
    [
      join(process.cwd(), 'dist', 'main.js'),
      'prefetch',
      '--state-dir',
      driver.stateDir,
      '--dataset',
      vol.volume_id,
      '--refresh',
      '*',
    ],
    { reject: false },
  );
  expect(result.exitCode).toBe(0);
  const summary = JSON.parse(result.stdout.trim().split('\n').pop() as string) as {
    stale: number;
    files: number;
  };
  expect(summary.stale).toBe(2);
  expect(summary.files).toBe(1);
  expect(await readFile(join(target, 'labels.csv'), 'utf8')).toBe('version 2 is longer\n');
  // Dropped from the copy, it falls through to the engine, which lists the directory again.
  await until(
    'the removed file to disappear',
    () =>
      stat(join(target, 'gone.txt')).then(
        () => undefined,
        (err: NodeJS.ErrnoException) => (err.code === 'ENOENT' ? true : undefined),
      ),
    10_000,
  );
  await kubelet.stop(vol.volume_id, ['c']);
});

it('an S3 dataset: the prefetch lists without a request per object and copies every file whole', async () => {
  const store = join(driver.work, 's3');
  let s3: S3Server | undefined;
  let recorder: Awaited<ReturnType<typeof requestRecorder>> | undefined;
  try {
    s3 = await S3Server.start(store, ['datasets']);
    await s3.upload(join(data, 'train'), 'datasets/train');
    // The driver talks to the server through the recorder: every request it makes is counted.
    recorder = await requestRecorder(Number(new URL(s3.endpoint).port));
    const vol = await volume('s3-copy', {
      source: 's3://datasets/train',
      readOnly: 'true',
      prefetch: 'd1/**,d2/**,MANIFEST',
    });
    await kubelet.stage(vol, { ...s3.secrets(), endpoint: recorder.url });
    await kubelet.publish(vol.volume_id, 's3-reader', true);
    const { key, copy } = await datasetAt('/train');
    await until('the prefetch to end', async () =>
      ((await scrape()).dataset('prefetch_completed', key) ?? 0) >= 1 ? true : undefined,
    );
    const expected = filesUnder('train')
      .map((p) => p.slice('train/'.length))
      .filter((p) => /^(d1\/|d2\/|MANIFEST$)/.test(p));
    expect(await copied(copy.root)).toEqual(expected.sort());
    // Until here (the mount, the listing and the transfer) the remote was asked about each object
    // of the dataset only for the bytes of a copied one, by one GET; every other request (listings,
    // HEADs of the root, of the prefetched directories and of the driver's own probe) concerned no
    // object of the dataset: a few requests for its 401 objects, not one per object.
    const objects = new Set(filesUnder('train').map((p) => p.slice('train/'.length)));
    const aboutObjects: string[] = [];
    const others: string[] = [];
    for (const request of recorder.requests) {
      const [method, url] = request.split(' ') as [string, string];
      const path = decodeURIComponent(url.split('?')[0] as string);
      const name = path.startsWith('/datasets/train/') ? path.slice('/datasets/train/'.length) : '';
      if (objects.has(name)) aboutObjects.push(`${method} ${name}`);
      else others.push(request);
    }
    expect(aboutObjects.sort()).toEqual(expected.map((name) => `GET ${name}`));
    // Besides the stage's outline of the copy (listings of its directories, level by level).
    const outline = await outlineCost(
      's3://datasets/train',
      () => Promise.resolve(recorder?.requests.length ?? 0),
      { ...s3.secrets(), endpoint: recorder.url },
    );
    expect(others.length).toBeLessThan(20 + outline);
    expect((await scrape()).dataset('copy_complete', key)).toBe(1);
    const target = kubelet.target('s3-reader');
    await shownFromCopy(target, copy.root, expected);
    for (const name of expected) {
      expect(await sha256(join(target, name))).toBe(digests[`train/${name}`]);
    }
    // The copy shows the time rclone shows for the object (set from the download).
    const viaCopy = await stat(join(target, 'd1', 'f1.txt'));
    const viaEngine = await stat(join(target, 'd3', 'f1.txt'));
    expect(viaCopy.mode).toBe(viaEngine.mode);
    expect(
      Math.abs(viaCopy.mtimeMs - (await stat(join(data, 'train', 'd1', 'f1.txt'))).mtimeMs),
    ).toBeLessThan(1000);
    await kubelet.stop(vol.volume_id, ['s3-reader']);
  } finally {
    await recorder?.close();
    await s3?.stop();
  }
});

it('a disk cache keeps its copy for the next client, which first drops what changed on the remote', async () => {
  const tree = join(driver.work, 'kept');
  await mkdir(tree, { recursive: true });
  await writeFile(join(tree, 'weights.bin'), 'epoch 1 weights\n');
  await writeFile(join(tree, 'labels.csv'), 'unchanged\n');
  await mkdir(join(tree, 'old', 'shard'), { recursive: true });
  await writeFile(join(tree, 'old', 'shard', 'a.txt'), 'removed before the next client\n');
  const parameters = {
    source: `local://${tree}`,
    readOnly: 'true',
    cacheMedium: 'SSD',
    cacheQuota: '64Mi',
    prefetch: '*,old/**',
  };
  const first = await volume('kept-1', parameters);
  await kubelet.run(first, ['k1'], true);
  const { key, copy, cacheDir } = await datasetAt(tree);
  await until('the first prefetch', async () =>
    ((await scrape()).dataset('prefetch_completed', key) ?? 0) >= 1 ? true : undefined,
  );
  expect(existsSync(join(copy.root, 'old', 'shard', 'a.txt'))).toBe(true);
  await kubelet.stop(first.volume_id, ['k1']);
  // The client is gone; its disk image (and the copy in it) stays, unmounted.
  expect((await MountTable.read()).at(cacheDir)).toBeUndefined();
  expect((await stat(`${cacheDir}.img`)).size).toBe(64 * MiB);
  await writeFile(join(tree, 'weights.bin'), 'epoch 2 weights, longer\n');
  await utimes(join(tree, 'weights.bin'), new Date(), new Date(Date.now() + 5000));
  // A directory removed from the remote: the copy must not keep showing it, empty.
  await rm(join(tree, 'old'), { recursive: true });

  const second = await volume('kept-2', parameters);
  await kubelet.run(second, ['k2'], true);
  await until('the copy to be checked and the prefetch to end', async () =>
    ((await scrape()).dataset('prefetch_completed', key) ?? 0) >= 1 ? true : undefined,
  );
  const target = kubelet.target('k2');
  await shownFromCopy(target, copy.root, ['weights.bin', 'labels.csv']);
  expect(await readFile(join(target, 'weights.bin'), 'utf8')).toBe('epoch 2 weights, longer\n');
  expect(await readFile(join(copy.root, 'weights.bin'), 'utf8')).toBe('epoch 2 weights, longer\n');
  expect(await readFile(join(target, 'labels.csv'), 'utf8')).toBe('unchanged\n');
  expect(await driver.log()).toMatch(
    new RegExp(`"dataset":"${key}","stale":2,.*checked against the remote`),
  );
  expect(existsSync(join(copy.root, 'old'))).toBe(false);
  await until('the pod to stop seeing the removed directory', async () =>
    (await readdir(target)).includes('old') ? undefined : true,
  );
  await kubelet.stop(second.volume_id, ['k2']);
});
