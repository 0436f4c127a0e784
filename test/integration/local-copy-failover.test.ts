/**
 * Failures under the local-copy layer: a kill -9 of the engine client while readers read copied
 * and uncopied files (the overlay is rebuilt on the new FUSE path and every bind re-made), and a
 * kill -9 of the driver during a prefetch (no partial file ever enters the copy; the restarted
 * driver ends the orphaned transfer by PID and resumes the prefetch).
 */
import { createHash } from 'node:crypto';
import { mkdir, readdir, readFile, stat } from 'node:fs/promises';
import { constants } from 'node:os';
import { join } from 'node:path';
import { LoopbackServer } from '../../src/demo/loopback-server.js';
import { ExecaRunner } from '../../src/kernel/runner.js';
import { readXattr } from '../../src/kernel/xattr.js';
import { MountTable } from '../../src/kernel/mountinfo.js';
import { isSameProcess, processStartTime, sleep } from '../../src/kernel/proc.js';
import { DriverProcess } from '../helpers/driver-process.js';
import { mountCapability, startTestDriver } from '../helpers/driver.js';
import { treeDigest, writeRandomFile, writeTree } from '../helpers/files.js';
import { until, untilHolds } from '../helpers/wait.js';
import { Kubelet } from '../helpers/kubelet.js';

const cap = mountCapability('MULTI_NODE_READER_ONLY');
// What a read through a dead FUSE layer (directly or under the overlay) fails with.
const RETRIABLE = new Set(['EIO', 'ENOTCONN', 'ECONNABORTED', 'ENOENT', 'ESTALE', 'ENXIO']);

interface JournalDataset {
  key: string;
  pid: number;
  cacheDir: string;
  copy?: { root: string };
}

async function datasets(stateDir: string): Promise<JournalDataset[]> {
  const journal = JSON.parse(await readFile(join(stateDir, 'journal.json'), 'utf8')) as {
    datasets: Record<string, JournalDataset>;
  };
  return Object.values(journal.datasets);
}

const runner = new ExecaRunner();
const sha256 = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');

/** Files of the copy with their digests. */
async function copyContents(root: string): Promise<Record<string, string>> {
  return treeDigest(root).catch(() => ({}));
}

/**
 * Waits until the overlay at `target` shows each of `files` from the copy at `root`: with the
 * copy's inode, not the FUSE layer's (a name the overlay looked up in the engine stays there until
 * the copy keeper's next round remounts it). A timeout names the files still shown from the engine.
 */
async function shownFromCopy(target: string, root: string, files: string[]): Promise<void> {
  await untilHolds(
    'the overlay to show the files from the copy',
    async () => {
      const fromEngine: string[] = [];
      for (const name of files) {
        const [seen, inCopy] = await Promise.all([
          stat(join(target, name)).catch(() => undefined),
          stat(join(root, name)).catch(() => undefined),
        ]);
        if (!seen || !inCopy || seen.ino !== inCopy.ino) fromEngine.push(name);
      }
      return fromEngine;
    },
    (fromEngine) => fromEngine.length === 0,
    15_000,
    200,
  );
}

it('a kill -9 of the engine under readers of copied and uncopied files: repaired, every read right', async () => {
  const driver = await startTestDriver();
  const data = join(driver.work, 'data');
  let server: LoopbackServer | undefined;
  const kubelet = new Kubelet(driver.work, () => driver.client, cap);
  try {
    await writeTree(join(data, 'copied'), 4, 25);
    await writeTree(join(data, 'remote'), 4, 25);
    const digests = await treeDigest(data);
    server = await LoopbackServer.start(data, 'http');
    const { volume } = await driver.client.controller.CreateVolume({
      name: 'failover-copy',
      volume_capabilities: [cap],
      parameters: { source: `http://127.0.0.1:${server.port}/`, prefetch: 'copied/**' },
    });
    if (!volume) throw new Error('no volume');
    await kubelet.run(volume, ['reader'], true);
    const target = kubelet.target('reader');
    const [dataset] = await datasets(driver.stateDir);
    if (!dataset?.copy) throw new Error('no copy layer');
    await until('the prefetch to fill the copy', async () =>
      Object.keys(await copyContents(dataset.copy?.root as string)).length === 101
        ? true
        : undefined,
    );
    // copied/ holds every file of its remote directory: marked opaque to the overlay.
    await until('copied/ to be marked complete', async () => {
      const root = dataset.copy?.root as string;
      const value = await readXattr(runner, join(root, 'copied'), 'trusted.overlay.opaque');
      return value === 'y' ? true : undefined;
    });
    // A round of the copy keeper after the marking: a file read whole through the engine is linked
    // into the copy at the next round, which then remounts the overlay, so that the overlay shows
    // that file from the copy only after a remount that also took the opaque mark in.
    const probe = Object.keys(digests).find((name) => name.startsWith('remote/')) as string;
    expect(sha256(await readFile(join(target, probe)))).toBe(digests[probe]);
    await shownFromCopy(target, dataset.copy.root, [probe]);

    const names = Object.keys(digests);
    let stop = false;
    let reads = 0;
    const wrong: string[] = [];
    const errors: string[] = [];
    /** Failed reads of files in the copy: its directories are opaque, so none should fail. */
    const copiedErrors: string[] = [];
    let readsAfterRepair = 0;
    let repaired = false;
    const readers = Array.from({ length: 4 }, async (_, r) => {
      for (let i = r; !stop; i = (i + 5) % names.length) {
        const name = names[i] as string;
        try {
          const bytes = await readFile(join(target, name));
          if (sha256(bytes) !== digests[name]) wrong.push(name);
          reads += 1;
          if (repaired) readsAfterRepair += 1;
        } catch (err) {
          const { errno, code: named } = err as NodeJS.ErrnoException;
          // libuv has no name for ESTALE (an overlay's directory whose FUSE layer died): its number.
          const code = errno === -constants.errno.ESTALE ? 'ESTALE' : (named ?? String(err));
          if (!RETRIABLE.has(code)) throw err;
          errors.push(code);
          if (name.startsWith('copied/')) copiedErrors.push(`${name}: ${code}`);
          await sleep(10);
        }
      }
    });
    await until('the readers to be reading', async () => (reads >= 40 ? true : undefined));
    const copiedBeforeKill = Object.keys(await copyContents(dataset.copy.root));
    process.kill(dataset.pid, 'SIGKILL');
    const killedAt = Date.now();
    const replaced = await until('a new client', async () => {
      const [now] = await datasets(driver.stateDir);
      return now && now.pid !== dataset.pid ? now : undefined;
    });
    // The overlay is rebuilt on the new FUSE path and the staging and target binds follow it.
    await until('the binds to be repaired', async () => {
      const table = await MountTable.read();
      const top = table.at(join(driver.stateDir, 'datasets', dataset.key, 'mount'));
      const bound = table.at(target);
      return top?.fsType === 'overlay' && bound?.device === top.device ? true : undefined;
    });
    const repairMs = Date.now() - killedAt;
    repaired = true;
    await until('reads after the repair', async () => (readsAfterRepair > 400 ? true : undefined));
    stop = true;
    await Promise.all(readers);
    process.stdout.write(
      `copy failover: engine kill -9 repaired in ${repairMs} ms (pid ${dataset.pid} -> ${replaced.pid}); reader errors during it: ${errors.length}; reads after: ${readsAfterRepair}\n`,
    );
    expect(wrong).toEqual([]);
    expect(readsAfterRepair).toBeGreaterThan(400);
    // Files of the copy stayed readable while the engine was dead (reads of the others failed).
    expect(errors.length).toBeGreaterThan(0);
    expect(copiedErrors).toEqual([]);
    // The copy survived the restart (same cache file system) and grew by files of remote/ read
    // whole (promoted at the keeper's rounds), and holds only whole files of the source.
    const copy = await copyContents(dataset.copy.root);
    expect(copiedBeforeKill.filter((name) => !(name in copy))).toEqual([]);
    const grown = await untilHolds(
      'files read whole to be promoted into the copy',
      async () =>
        Object.keys(await copyContents(dataset.copy?.root as string)).filter(
          (name) => !copiedBeforeKill.includes(name),
        ),
      (names) => names.length > 0,
      15_000,
      200,
    );
    expect(grown.filter((name) => !name.startsWith('remote/'))).toEqual([]);
    const after = await copyContents(dataset.copy.root);
    for (const [name, digest] of Object.entries(after)) expect(digest).toBe(digests[name]);
    await kubelet.stop(volume.volume_id, ['reader']);
  } finally {
    await server?.stop();
    await driver.dispose();
  }
}, 120_000);

it('a kill -9 of the driver during a prefetch: no partial file enters the copy; the restart ends the orphan and resumes', async () => {
  const driver = await DriverProcess.create();
  const data = join(driver.work, 'data');
  let server: LoopbackServer | undefined;
  try {
    await mkdir(data, { recursive: true });
    for (let i = 0; i < 48; i += 1) await writeRandomFile(join(data, `shard-${i}.bin`), 512 * 1024);
    const digests = await treeDigest(data);
    // 24 MiB at 2 MB/s: the prefetch runs for about 12 s, in waves of 16 files.
    server = await LoopbackServer.start(data, 'http', ['--bwlimit', '2M']);
    await driver.start();
    const kubelet = new Kubelet(driver.work, () => driver.client, cap);
    const { volume } = await driver.client.controller.CreateVolume({
      name: 'crash-prefetch',
      volume_capabilities: [cap],
      parameters: { source: `http://127.0.0.1:${server.port}/`, prefetch: '*.bin' },
    });
    if (!volume) throw new Error('no volume');
    await kubelet.stage(volume);
    const [dataset] = await datasets(driver.stateDir);
    const root = dataset?.copy?.root as string;
    // Between two waves: the transfer writes no log line for seconds, so it outlives the driver
    // (a line written to the dead driver's pipe would end it).
    const seen = { count: -1, since: Date.now() };
    await until('a few files in the copy, and none arriving for 300 ms', async () => {
      const n = (await readdir(root)).length;
      if (n !== seen.count) Object.assign(seen, { count: n, since: Date.now() });
      return n >= 3 && n < 32 && Date.now() - seen.since >= 300 ? true : undefined;
    });
    // The transfer the driver started, recorded by PID in its workspace.
    const incoming = join(dataset?.cacheDir as string, 'incoming');
    const [workspace] = await readdir(incoming);
    const owner = (await readFile(join(incoming, workspace as string, 'owner'), 'utf8')).split(' ');
    const orphan = { pid: Number(owner[0]), startTime: owner[1] as string };
    expect(await processStartTime(orphan.pid)).toBe(orphan.startTime);
    await driver.crash();
    expect(await isSameProcess(orphan.pid, orphan.startTime)).toBe(true);
    // Whatever is in the copy is whole, while the orphaned transfer still writes elsewhere.
    for (const [name, digest] of Object.entries(await copyContents(root))) {
      expect(digest).toBe(digests[name]);
    }

    await driver.start();
    expect(await isSameProcess(orphan.pid, orphan.startTime)).toBe(false);
    await until(
      'the resumed prefetch to fill the copy',
      async () => (Object.keys(await copyContents(root)).length === 48 ? true : undefined),
      60_000,
    );
    expect(await copyContents(root)).toEqual(digests);
    await kubelet.publish(volume.volume_id, 'after');
    await shownFromCopy(kubelet.target('after'), root, Object.keys(digests));
    expect(await treeDigest(kubelet.target('after'))).toEqual(digests);
    await kubelet.stop(volume.volume_id, ['after']);
  } finally {
    await server?.stop();
    await driver.dispose();
  }
}, 120_000);
