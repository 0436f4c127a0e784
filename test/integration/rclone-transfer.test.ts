/**
 * `RcloneTransfers.copy` with a real rclone between two directories: the work its caller does per
 * copied file runs one file at a time and is all done when copy() returns; a failure in it does not
 * stop the other files' work, and copy() rejects with it. `listDirectories` names every directory
 * of a source but those it is told to leave out, or says why it cannot. An object read other than the store says it is (s3rver on
 * loopback) is refused and named, without the copy failing. A copy started within a directory
 * lists no directory above it.
 */
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { LoopbackServer } from '../../src/demo/loopback-server.js';
import { S3Server } from '../../src/demo/s3-server.js';
import { parseSource } from '../../src/dataset/source.js';
import { RcloneTransfers } from '../../src/engines/rclone-transfer.js';
import { type TransferSource } from '../../src/engines/transfer-source.js';
import { listingGate } from '../helpers/listing-gate.js';

let work: string;
let from: TransferSource;
const names = Array.from({ length: 12 }, (_, i) => `d${i % 3}/f${i}.txt`);

beforeAll(async () => {
  work = await mkdtemp('/tmp/dcsi-transfer-');
  for (const name of names) {
    await mkdir(join(work, 'src', name, '..'), { recursive: true });
    await writeFile(join(work, 'src', name), `content of ${name}\n`);
  }
  await writeFile(join(work, 'list'), names.map((n) => `${n}\n`).join(''));
  await mkdir(join(work, 'home'));
  from = {
    source: parseSource(`local://${work}/src`),
    secrets: {},
    runtimeDir: join(work, 'home'),
  };
});

afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

/** Copies every file into a fresh directory, running `handle` for each one copied. */
async function copyAll(dest: string, handle: (relative: string) => Promise<void>) {
  return new RcloneTransfers().copy(
    from,
    { localDir: join(work, dest) },
    { listFile: join(work, 'list') },
    { transfers: 4, onCopied: handle },
  );
}

it("each copied file's work runs alone, on the whole file, and all of it before copy() returns", async () => {
  const done: string[] = [];
  let running = 0;
  let mostAtOnce = 0;
  const result = await copyAll('ordered', async (relative) => {
    running += 1;
    mostAtOnce = Math.max(mostAtOnce, running);
    // The file is whole when its work starts.
    expect(await readFile(join(work, 'ordered', relative), 'utf8')).toBe(
      `content of ${relative}\n`,
    );
    await sleep(20);
    done.push(relative);
    running -= 1;
  });
  expect(result.ok).toBe(true);
  expect(done.sort()).toEqual([...names].sort());
  expect(mostAtOnce).toBe(1);
});

it('a failing piece of work leaves the others done, and copy() rejects with it', async () => {
  const done: string[] = [];
  const failing = names[4] as string;
  await expect(
    copyAll('failing', async (relative) => {
      await sleep(5);
      if (relative === failing) throw new Error(`cannot install ${relative}`);
      done.push(relative);
    }),
  ).rejects.toThrow(`cannot install ${failing}`);
  expect(done.sort()).toEqual(names.filter((n) => n !== failing).sort());
});

it('a named file that fails does not make rclone fetch again the files already handed over', async () => {
  // Each file leaves the destination as soon as it is reported (a fill installs it): a second
  // attempt of the whole copy would find none of them there and fetch every one again.
  const server = await LoopbackServer.start(join(work, 'src'), 'http');
  const gate = await listingGate(server.port);
  try {
    const list = join(work, 'list-with-a-gap');
    await writeFile(list, [...names, 'd0/gone.txt'].map((n) => `${n}\n`).join(''));
    const destination = join(work, 'moved-away');
    const reported: string[] = [];
    const result = await new RcloneTransfers().copy(
      { ...from, source: parseSource(`http://127.0.0.1:${gate.port}/`) },
      { localDir: destination },
      { listFile: list },
      {
        transfers: 4,
        listed: true,
        onCopied: async (relative) => {
          reported.push(relative);
          await rm(join(destination, relative), { force: true });
        },
      },
    );
    expect(result.ok).toBe(false);
    expect(reported.sort()).toEqual([...names].sort());
    // Asked for once each, at the server.
    const fetched = gate.requests.filter((r) => r.startsWith('GET ')).map((r) => r.slice(4));
    expect(fetched.filter((path) => path !== '/d0/gone.txt').sort()).toEqual(
      names.map((n) => `/${n}`).sort(),
    );
  } finally {
    await gate.close();
    await server.stop();
  }
});

it('a copy within a directory lists that directory alone (S3) or none (HTTP), and names its files from the root', async () => {
  const inD1 = names.filter((n) => n.startsWith('d1/'));
  const list = join(work, 'list-within-d1');
  await writeFile(list, inD1.map((n) => `${n.slice('d1/'.length)}\n`).join(''));
  const store = await S3Server.start(join(work, 's3-within'), ['bucket']);
  const server = await LoopbackServer.start(join(work, 'src'), 'http');
  const s3Gate = await listingGate(Number(new URL(store.endpoint).port));
  const httpGate = await listingGate(server.port);
  try {
    await store.upload(join(work, 'src'), 'bucket/set');
    const remotes: [string, TransferSource, boolean][] = [
      [
        's3',
        {
          source: parseSource('s3://bucket/set'),
          secrets: { ...store.secrets(), endpoint: `http://127.0.0.1:${s3Gate.port}` },
          runtimeDir: join(work, 'home'),
        },
        false,
      ],
      ['http', { ...from, source: parseSource(`http://127.0.0.1:${httpGate.port}/`) }, true],
    ];
    for (const [name, remote, listed] of remotes) {
      const destination = join(work, `within-${name}`);
      const copied: string[] = [];
      const result = await new RcloneTransfers().copy(
        remote,
        { localDir: destination },
        { listFile: list, within: 'd1' },
        { transfers: 4, listed, onCopied: (relative) => void copied.push(relative) },
      );
      expect(result.ok).toBe(true);
      expect(copied.sort()).toEqual([...inD1].sort());
      for (const file of inD1) {
        expect(await readFile(join(destination, file), 'utf8')).toBe(`content of ${file}\n`);
      }
    }
    // S3: one listing, of d1 (not of set/ above it); HTTP: the files by name and nothing else.
    const listings = s3Gate.urls.filter((url) => /^GET \/bucket\?/.test(url));
    expect(
      listings.map((url) => new URL(url.slice(4), 'http://s3').searchParams.get('prefix')),
    ).toEqual(['set/d1/']);
    expect(httpGate.requests.sort()).toEqual(inD1.map((n) => `GET /${n}`).sort());
  } finally {
    await s3Gate.close();
    await httpGate.close();
    await server.stop();
    await store.stop();
  }
}, 60_000);

it('listDirectories names every directory of the source, nested ones included, and no file', async () => {
  await mkdir(join(work, 'src', 'd1', 'deeper', 'deepest'), { recursive: true });
  await writeFile(join(work, 'src', 'd1', 'deeper', 'deepest', 'leaf.txt'), 'leaf\n');
  const found: string[] = [];
  await new RcloneTransfers().listDirectories(from, undefined, (dir) => found.push(dir));
  expect(found.sort()).toEqual(['d0', 'd1', 'd1/deeper', 'd1/deeper/deepest', 'd2']);
  // The first two levels from one listing: the same directories, every level told in order.
  const again: string[] = [];
  const levels: number[] = [];
  const asked: number[] = [];
  await new RcloneTransfers().listDirectories(from, undefined, (dir) => again.push(dir), {
    firstDepth: 2,
    onLevel: (depth) => levels.push(depth),
    leaveOut: (depth) => {
      asked.push(depth);
      return Promise.resolve([]);
    },
  });
  expect(again.sort()).toEqual(found);
  expect(levels).toEqual([1, 2, 3]);
  // Every level below the first two from one more listing.
  expect(asked).toEqual([1, 3]);
  // Below one directory, in one walk: named from the root, as the others.
  const below: string[] = [];
  await new RcloneTransfers().listDirectories(from, undefined, (dir) => below.push(dir), {
    under: 'd1',
    firstDepth: Number.POSITIVE_INFINITY,
    onLevel: (depth) => levels.push(depth),
  });
  expect(below.sort()).toEqual(['d1/deeper', 'd1/deeper/deepest']);
  // Its levels counted from that directory, each told once.
  expect(levels.slice(3)).toEqual([1, 2]);
  // What is left out is named from the root: below that directory (neither it nor what is below
  // it told), or holding it (nothing told).
  await mkdir(join(work, 'src', 'd1', 'other'));
  await writeFile(join(work, 'src', 'd1', 'other', 'leaf.txt'), 'leaf\n');
  const walkUnder = async (left: string[]) => {
    const told: string[] = [];
    await new RcloneTransfers().listDirectories(from, undefined, (dir) => told.push(dir), {
      under: 'd1',
      firstDepth: Number.POSITIVE_INFINITY,
      leaveOut: () => Promise.resolve(left),
    });
    return told;
  };
  expect(await walkUnder(['d1/deeper', 'd0'])).toEqual(['d1/other']);
  expect(await walkUnder([''])).toEqual([]);
  await rm(join(work, 'src', 'd1', 'other'), { recursive: true });
});

it('listDirectories leaves out what it is told to, glob characters included, and ends where told', async () => {
  for (const dir of ['d[1]*/inner', 'd0/sub/below']) {
    await mkdir(join(work, 'src', dir), { recursive: true });
    await writeFile(join(work, 'src', dir, 'leaf.txt'), 'leaf\n');
  }
  const found: string[] = [];
  await new RcloneTransfers().listDirectories(from, undefined, (dir) => found.push(dir), {
    leaveOut: (depth) => Promise.resolve(depth === 1 ? [] : ['d1', 'd[1]*']),
  });
  // The levels below the first read neither d1 nor the directory whose name is a glob.
  expect(found.sort()).toEqual(['d0', 'd0/sub', 'd0/sub/below', 'd1', 'd2', 'd[1]*']);
  const ended: string[] = [];
  await new RcloneTransfers().listDirectories(from, undefined, (dir) => ended.push(dir), {
    leaveOut: (depth) => Promise.resolve(depth === 1 ? [] : ['']),
  });
  expect(ended.sort()).toEqual(['d0', 'd1', 'd2', 'd[1]*']);
  for (const dir of ['d[1]*', 'd0/sub']) await rm(join(work, 'src', dir), { recursive: true });
});

it("listDirectories rejects with rclone's reason when the source cannot be listed", async () => {
  const missing: TransferSource = {
    ...from,
    source: parseSource(`sftp://nobody@127.0.0.1:1/nowhere`),
  };
  await expect(
    new RcloneTransfers().listDirectories(missing, undefined, () => undefined),
  ).rejects.toThrow(/listing the remote's directories failed: .+/);
}, 60_000);

it('an object whose bytes are not what the store says is refused and named, and the copy counts as answered; a store that is down does not', async () => {
  const store = await S3Server.start(join(work, 's3'), ['bucket']);
  try {
    await store.upload(join(work, 'src'), 'bucket/set');
    const s3: TransferSource = {
      source: parseSource('s3://bucket/set'),
      secrets: store.secrets(),
      runtimeDir: join(work, 'home'),
    };
    // Changed in place on the store's disk, size kept: its MD5 (the ETag) no longer matches.
    const damaged = names[5] as string;
    const onDisk = join(work, 's3', 'bucket', 'set', `${damaged}._S3rver_object`);
    const bytes = await readFile(onDisk);
    await writeFile(
      onDisk,
      bytes.map((b) => b ^ 0xff),
    );
    const copied: string[] = [];
    const result = await new RcloneTransfers().copy(
      s3,
      { localDir: join(work, 'from-s3') },
      { listFile: join(work, 'list') },
      { transfers: 4, onCopied: (relative) => void copied.push(relative) },
    );
    expect(result).toEqual({
      ok: true,
      reason: expect.any(String),
      corrupted: [damaged],
      noSpace: [],
    });
    expect(copied.sort()).toEqual(names.filter((n) => n !== damaged).sort());
    await expect(readFile(join(work, 'from-s3', damaged))).rejects.toThrow(/ENOENT/);

    await store.stop();
    const down = await new RcloneTransfers().copy(
      s3,
      { localDir: join(work, 'from-down') },
      { listFile: join(work, 'list') },
      { transfers: 4, impatient: true, onCopied: () => undefined },
    );
    expect(down.ok).toBe(false);
    expect(down.reason).toMatch(/connection refused/);
    expect(down.corrupted).toEqual([]);
  } finally {
    await store.stop();
  }
}, 60_000);
