/**
 * layout: subdir through the real controller and node against real servers on loopback: each
 * provisioned volume gets its own directory on the source (made with rclone, credentials from the
 * provisioner secrets), is staged from the dataset's one shared client (even when that client
 * listed the root before the directory existed), and is removed or kept per onDelete.
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { DIRECTORY_MARKER } from '../../src/controller/source-directories.js';
import { LoopbackServer } from '../../src/demo/loopback-server.js';
import { S3Server } from '../../src/demo/s3-server.js';
import { MountTable } from '../../src/kernel/mountinfo.js';
import { recordedClients } from '../helpers/cleanup.js';
import { mountCapability, startTestDriver, type TestDriver } from '../helpers/driver.js';
import { Kubelet } from '../helpers/kubelet.js';
import { pathExists } from '../helpers/files.js';

let driver: TestDriver;
let kubelet: Kubelet;
const cap = mountCapability('MULTI_NODE_MULTI_WRITER');

beforeAll(async () => {
  driver = await startTestDriver();
  kubelet = new Kubelet(driver.work, () => driver.client, cap);
});

afterAll(async () => {
  await driver.dispose();
});

interface Source {
  parameters: Record<string, string>;
  secrets: Record<string, string>;
  /** Whether the volume's directory exists on the source (looked at without the driver). */
  hasDirectory(subPath: string): Promise<boolean>;
  /** A file's content on the source, read without the driver. */
  read(path: string): Promise<string>;
}

async function create(name: string, source: Source, extra: Record<string, string> = {}) {
  const { volume } = await driver.client.controller.CreateVolume({
    name,
    volume_capabilities: [cap],
    parameters: { ...source.parameters, ...extra },
    secrets: source.secrets,
  });
  if (!volume) throw new Error('no volume');
  return volume;
}

async function exercise(kind: string, source: Source): Promise<void> {
  // The whole dataset is staged first: its client lists the root before any sub-directory exists.
  const whole = await create(`${kind}-whole`, source);
  await kubelet.stage(whole, source.secrets);
  await kubelet.publish(whole.volume_id, `${kind}-reader`);
  const kept = await create(`${kind}-kept`, source, { layout: 'subdir' });
  const dropped = await create(`${kind}-dropped`, source, { layout: 'subdir', onDelete: 'delete' });
  try {
    for (const volume of [kept, dropped]) {
      expect(volume.volume_context.subPath).toBe(volume.volume_id);
      expect(volume.volume_context.layout).toBeUndefined();
      expect(await source.hasDirectory(volume.volume_id)).toBe(true);
    }
    // Idempotent: the same request again answers the same volume and makes nothing new.
    expect((await create(`${kind}-kept`, source, { layout: 'subdir' })).volume_id).toBe(
      kept.volume_id,
    );

    await kubelet.stage(kept, source.secrets);
    await kubelet.publish(kept.volume_id, `${kind}-writer`);
    const written = join(kubelet.target(`${kind}-writer`), 'result.txt');
    await writeFile(written, `result of ${kind}\n`);
    // One client serves both volumes of the dataset.
    expect(await recordedClients(driver.stateDir)).toHaveLength(1);
    // The writer sees only its own directory; the whole-dataset reader sees it inside the dataset.
    expect(await pathExists(join(kubelet.target(`${kind}-writer`), kept.volume_id))).toBe(false);
    expect(
      await readFile(join(kubelet.target(`${kind}-reader`), kept.volume_id, 'result.txt'), 'utf8'),
    ).toBe(`result of ${kind}\n`);
    await kubelet.stop(kept.volume_id, [`${kind}-writer`]);
    expect(await source.read(`${kept.volume_id}/result.txt`)).toBe(`result of ${kind}\n`);
  } finally {
    await kubelet.stop(whole.volume_id, [`${kind}-reader`]);
  }

  for (const volume of [kept, dropped, whole]) {
    await driver.client.controller.DeleteVolume({
      volume_id: volume.volume_id,
      secrets: source.secrets,
    });
  }
  expect(await source.hasDirectory(kept.volume_id)).toBe(true);
  expect(await source.hasDirectory(dropped.volume_id)).toBe(false);
  // A DeleteVolume retried after the directory is gone still succeeds.
  await driver.client.controller.DeleteVolume({
    volume_id: dropped.volume_id,
    secrets: source.secrets,
  });
  expect((await MountTable.read()).under(driver.work)).toEqual([]);
  expect(await recordedClients(driver.stateDir)).toEqual([]);
}

it('local', async () => {
  const root = join(driver.work, 'nas');
  await mkdir(root);
  await writeFile(join(root, 'README'), 'shared dataset\n');
  await exercise('local', {
    parameters: { source: `local://${root}` },
    secrets: {},
    hasDirectory: (sub) => pathExists(join(root, sub)),
    read: (path) => readFile(join(root, path), 'utf8'),
  });
});

it('webdav with credentials from the provisioner secrets', async () => {
  const root = join(driver.work, 'dav');
  await mkdir(root);
  await writeFile(join(root, 'README'), 'shared dataset\n');
  const password = `dav-${Math.random().toString(36).slice(2)}`;
  const server = await LoopbackServer.start(root, 'webdav', ['--user', 'ml', '--pass', password]);
  try {
    await exercise('webdav', {
      parameters: { source: `webdav://127.0.0.1:${server.port}/` },
      secrets: { user: 'ml', password },
      hasDirectory: (sub) => pathExists(join(root, sub)),
      read: (path) => readFile(join(root, path), 'utf8'),
    });
    const refused = await driver.client.controller
      .CreateVolume({
        name: 'webdav-wrong-password',
        volume_capabilities: [cap],
        parameters: { source: `webdav://127.0.0.1:${server.port}/`, layout: 'subdir' },
        secrets: { user: 'ml', password: 'not-the-password' },
      })
      .then(
        () => undefined,
        (err: grpc.ServiceError) => err,
      );
    expect(refused?.code).toBe(grpc.status.UNAVAILABLE);
    expect(refused?.details).toMatch(
      /could not create sub-directory "dcv-[0-9a-f]+" on the source/,
    );
    expect(refused?.details).not.toContain('not-the-password');
    // Nothing was recorded for the refused volume: kubelet's retry starts from scratch.
    const { entries } = await driver.client.controller.ListVolumes({});
    expect(entries).toEqual([]);
  } finally {
    await server.stop();
  }
});

it('s3 (s3rver): a marker object makes the empty prefix exist', async () => {
  const store = join(driver.work, 's3-store');
  await mkdir(store);
  const s3 = await S3Server.start(store, ['teams']);
  try {
    const seed = join(driver.work, 's3-seed');
    await mkdir(seed);
    await writeFile(join(seed, 'README'), 'shared dataset\n');
    await s3.upload(seed, 'teams/vision');
    await exercise('s3', {
      parameters: { source: 's3://teams/vision' },
      secrets: s3.secrets(),
      hasDirectory: async (sub) =>
        (await s3.list('teams/vision')).includes(`${sub}/`) &&
        (await s3.list(`teams/vision/${sub}`)).includes(DIRECTORY_MARKER),
      read: (path) => s3.cat(`teams/vision/${path}`),
    });
  } finally {
    await s3.stop();
  }
});

it('refuses a sub-directory volume where it could never be written', async () => {
  for (const [parameters, message] of [
    [{ source: 'http://127.0.0.1:1/', layout: 'subdir' }, /http:\/\/ sources are read-only/],
    [{ source: `local://${driver.work}`, readOnly: 'true', layout: 'subdir' }, /readOnly=true/],
    [{ source: `local://${driver.work}`, subPath: 'a', layout: 'subdir' }, /exclude each other/],
  ] as const) {
    await expect(
      driver.client.controller.CreateVolume({
        name: 'refused',
        volume_capabilities: [mountCapability('MULTI_NODE_READER_ONLY')],
        parameters,
      }),
    ).rejects.toMatchObject({
      code: grpc.status.INVALID_ARGUMENT,
      details: expect.stringMatching(message),
    });
  }
});
