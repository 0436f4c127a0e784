/**
 * Pods that run as a non-root user: the dataset's owner and modes (uid, gid, fileMode, dirMode)
 * let them write a writable dataset, and a read-only dataset's local copy never shows its files
 * to more users than the engine's mount does.
 */
import { chmod, mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { LoopbackServer } from '../../src/demo/loopback-server.js';
import { S3Server } from '../../src/demo/s3-server.js';
import { MountTable } from '../../src/kernel/mountinfo.js';
import { recordedClients } from '../helpers/cleanup.js';
import {
  createVolume,
  mountCapability,
  startTestDriver,
  type TestDriver,
} from '../helpers/driver.js';
import { Kubelet } from '../helpers/kubelet.js';
import { until } from '../helpers/wait.js';

const TRAINER = 1234;
const STRANGER = 4321;
const rw = mountCapability('MULTI_NODE_MULTI_WRITER');
let driver: TestDriver;
let kubelet: Kubelet;
let data: string;

beforeAll(async () => {
  driver = await startTestDriver();
  kubelet = new Kubelet(driver.work, () => driver.client, rw);
  data = join(driver.work, 'data');
  await mkdir(join(data, 'dir'), { recursive: true });
  await writeFile(join(data, 'dir', 'labels.csv'), 'id,label\n');
  // The work directory is private to root (mkdtemp): others must reach the pods' targets.
  await chmod(driver.work, 0o755);
});

afterAll(async () => {
  await driver?.dispose();
});

/** Runs a shell command as another user, with no supplementary groups. */
const as = (uid: number, script: string) =>
  execa(
    'setpriv',
    ['--reuid', String(uid), '--regid', String(uid), '--clear-groups', 'sh', '-c', script],
    {
      reject: false,
    },
  );

it('a non-root pod writes a writable dataset only when the dataset is given its owner', async () => {
  const plain = await createVolume(driver.client, 'plain', { source: `local://${data}` }, rw);
  const owned = await createVolume(
    driver.client,
    'owned',
    {
      source: `local://${data}`,
      uid: String(TRAINER),
      gid: String(TRAINER),
      fileMode: '0664',
      dirMode: '0775',
    },
    rw,
  );
  try {
    await kubelet.run(plain, ['plain-pod']);
    await kubelet.run(owned, ['owned-pod']);
    // Without an owner: readable, but root's files refuse a non-root writer.
    const plainTarget = kubelet.target('plain-pod');
    expect((await as(TRAINER, `cat ${plainTarget}/dir/labels.csv`)).stdout).toBe('id,label');
    const refused = await as(TRAINER, `echo x > ${plainTarget}/dir/refused.txt`);
    expect(refused.exitCode).not.toBe(0);
    expect(refused.stderr).toMatch(/Permission denied/);

    // With one: the files show it and its modes, and the pod's user writes.
    const target = kubelet.target('owned-pod');
    const shown = await stat(join(target, 'dir', 'labels.csv'));
    expect([shown.uid, shown.gid, shown.mode & 0o7777]).toEqual([TRAINER, TRAINER, 0o664]);
    const dir = await stat(join(target, 'dir'));
    expect([dir.uid, dir.gid, dir.mode & 0o7777]).toEqual([TRAINER, TRAINER, 0o775]);
    const wrote = await as(
      TRAINER,
      `echo result > ${target}/dir/out.txt && mkdir ${target}/dir/run`,
    );
    expect([wrote.exitCode, wrote.stderr]).toEqual([0, '']);
    // Uploaded after rclone's write-back delay.
    expect(
      await until('the upload of out.txt', () =>
        readFile(join(data, 'dir', 'out.txt'), 'utf8').catch(() => undefined),
      ),
    ).toBe('result\n');
    // Another non-root user is neither owner nor in the group: it reads, it does not write.
    expect((await as(STRANGER, `cat ${target}/dir/out.txt`)).stdout).toBe('result');
    expect((await as(STRANGER, `echo x > ${target}/dir/other.txt`)).exitCode).not.toBe(0);
    // Owner and modes are part of the dataset's identity: two clients.
    expect(await recordedClients(driver.stateDir)).toHaveLength(2);
  } finally {
    await kubelet.stop(plain.volume_id, ['plain-pod']);
    await kubelet.stop(owned.volume_id, ['owned-pod']);
  }
  expect((await MountTable.read()).under(driver.work)).toEqual([]);
});

it('s3fs: the owner and directory mode apply to files and directories alike', async () => {
  const store = join(driver.work, 's3');
  await mkdir(store);
  const s3 = await S3Server.start(store, ['bucket']);
  try {
    await s3.upload(data, 'bucket/set');
    const vol = await createVolume(
      driver.client,
      's3fs-owned',
      {
        source: 's3://bucket/set',
        engine: 's3fs',
        uid: String(TRAINER),
        gid: String(TRAINER),
        dirMode: '0775',
      },
      rw,
    );
    try {
      await kubelet.stage(vol, s3.secrets());
      await kubelet.publish(vol.volume_id, 's3fs-pod');
      const target = kubelet.target('s3fs-pod');
      const dir = await stat(join(target, 'dir'));
      expect([dir.uid, dir.gid, dir.mode & 0o777]).toEqual([TRAINER, TRAINER, 0o775]);
      const wrote = await as(TRAINER, `echo from-s3fs > ${target}/dir/s3fs.txt`);
      expect([wrote.exitCode, wrote.stderr]).toEqual([0, '']);
      expect(await s3.cat('bucket/set/dir/s3fs.txt')).toBe('from-s3fs\n');
    } finally {
      await kubelet.stop(vol.volume_id, ['s3fs-pod']);
    }
  } finally {
    await s3.stop();
  }
});

it('a read-only dataset with a local copy shows the same owner and modes from either layer', async () => {
  const server = await LoopbackServer.start(data, 'http');
  const ro = mountCapability('MULTI_NODE_READER_ONLY');
  const roKubelet = new Kubelet(driver.work, () => driver.client, ro);
  let volumeId: string | undefined;
  try {
    const vol = await createVolume(
      driver.client,
      'private-copy',
      {
        source: `http://127.0.0.1:${server.port}/`,
        gid: String(TRAINER),
        fileMode: '0640',
        dirMode: '0750',
        prefetch: '**',
      },
      ro,
    );
    volumeId = vol.volume_id;
    await roKubelet.run(vol, ['copy-pod'], true);
    const [client] = await recordedClients(driver.stateDir);
    if (!client) throw new Error('no client');
    const copied = join(client.cacheDir, 'copy', 'dir', 'labels.csv');
    await until('the prefetch to fill the copy', async () =>
      (await stat(copied).catch(() => undefined)) ? true : undefined,
    );
    // The copy holds the file with the dataset's group and modes, as the engine shows it.
    const inCopy = await stat(copied);
    expect([inCopy.gid, inCopy.mode & 0o777]).toEqual([TRAINER, 0o640]);
    const copyDir = await stat(join(client.cacheDir, 'copy', 'dir'));
    expect([copyDir.gid, copyDir.mode & 0o777]).toEqual([TRAINER, 0o750]);
    const target = roKubelet.target('copy-pod');
    // A member of the group reads; a stranger is refused, whichever layer serves the file.
    expect((await as(TRAINER, `cat ${target}/dir/labels.csv`)).stdout).toBe('id,label');
    const stranger = await as(STRANGER, `cat ${target}/dir/labels.csv`);
    expect(stranger.exitCode).not.toBe(0);
    expect(stranger.stderr).toMatch(/Permission denied/);
  } finally {
    if (volumeId) await roKubelet.stop(volumeId, ['copy-pod']);
    await server.stop();
  }
});
