/**
 * Inline ephemeral volumes (CSI volumes in a pod spec): kubelet only publishes them, the driver
 * stages them itself, and what a pod author may ask for is restricted: no node paths, no host
 * cache paths, bounded MEM caches, and never another tenant's client.
 */
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { LoopbackServer } from '../../src/demo/loopback-server.js';
import { MountTable } from '../../src/kernel/mountinfo.js';
import { recordedClients } from '../helpers/cleanup.js';
import { mountCapability, startTestDriver, type TestDriver } from '../helpers/driver.js';
import { Kubelet } from '../helpers/kubelet.js';

const cap = mountCapability('SINGLE_NODE_WRITER');
let driver: TestDriver;
let kubelet: Kubelet;
let root: string;
let server: LoopbackServer;
const password = `inline-${Math.random().toString(36).slice(2)}`;

beforeAll(async () => {
  driver = await startTestDriver({ ephemeralCacheQuotaLimitBytes: 256 * 2 ** 20 });
  kubelet = new Kubelet(driver.work, () => driver.client, cap);
  root = join(driver.work, 'dav');
  await mkdir(root);
  await writeFile(join(root, 'labels.csv'), 'id,label\n1,cat\n');
  server = await LoopbackServer.start(root, 'webdav', ['--user', 'ml', '--pass', password]);
});

afterAll(async () => {
  await server?.stop();
  await driver.dispose();
});

/** What kubelet sends for a CSI volume in a pod spec (podInfoOnMount: true). */
function inline(
  pod: string,
  namespace: string,
  attributes: Record<string, string>,
  secrets: Record<string, string> = { user: 'ml', password },
) {
  return {
    volume_id: `csi-${pod}`,
    target_path: kubelet.target(pod),
    volume_capability: cap,
    readonly: false,
    secrets,
    volume_context: {
      'csi.storage.k8s.io/ephemeral': 'true',
      'csi.storage.k8s.io/pod.name': pod,
      'csi.storage.k8s.io/pod.namespace': namespace,
      'csi.storage.k8s.io/pod.uid': `uid-${pod}`,
      'csi.storage.k8s.io/serviceAccount.name': 'default',
      ...attributes,
    },
  };
}

const unpublish = (pod: string) =>
  driver.client.node.NodeUnpublishVolume({
    volume_id: `csi-${pod}`,
    target_path: kubelet.target(pod),
  });

const source = () => ({ source: `webdav://127.0.0.1:${server.port}/` });

it('stages on publish, serves the pod, and cleans everything up on unpublish', async () => {
  const request = inline('inline-a', 'team-a', source());
  await driver.client.node.NodePublishVolume(request);
  // kubelet retries a publish it did not see answered: same answer, nothing new.
  await driver.client.node.NodePublishVolume(request);
  expect(await readFile(join(kubelet.target('inline-a'), 'labels.csv'), 'utf8')).toBe(
    'id,label\n1,cat\n',
  );
  await writeFile(join(kubelet.target('inline-a'), 'out.txt'), 'result\n');
  const stats = await driver.client.node.NodeGetVolumeStats({
    volume_id: 'csi-inline-a',
    volume_path: kubelet.target('inline-a'),
  });
  expect(stats.volume_condition?.abnormal).toBe(false);
  expect(await recordedClients(driver.stateDir)).toHaveLength(1);

  await unpublish('inline-a');
  await unpublish('inline-a');
  expect(await readFile(join(root, 'out.txt'), 'utf8')).toBe('result\n');
  expect(await recordedClients(driver.stateDir)).toEqual([]);
  expect((await MountTable.read()).under(driver.work)).toEqual([]);
  expect(await readdir(join(driver.stateDir, 'ephemeral'))).toEqual([]);
});

it('keeps caller-chosen volume ids inside its own directory: traversal, slashes, options, prototype names', async () => {
  const ids = [
    '../../../../escape',
    'a/b/../../c',
    '/abs/path',
    '-x',
    '--flag=1',
    '..',
    '.',
    '__proto__',
    'constructor',
    'ü'.repeat(64),
  ];
  const ephemeral = join(driver.stateDir, 'ephemeral');
  const request = (id: string) => ({
    ...inline(`id-${ids.indexOf(id)}`, 'team-a', source()),
    volume_id: id,
  });
  const mountPoints = async () => (await MountTable.read()).entries.map((m) => m.mountPoint);
  const before = new Set(await mountPoints());
  try {
    for (const id of ids) await driver.client.node.NodePublishVolume(request(id));
    // Nothing new mounted anywhere but below the test's directory and its MEM cache.
    const ours = [`${driver.work}/`, `${driver.memCacheDir}/`];
    const added = (await mountPoints()).filter((m) => !before.has(m));
    expect(added.filter((m) => !ours.some((dir) => m.startsWith(dir)))).toEqual([]);
    const staged = (await MountTable.read()).under(driver.work).map((m) => m.mountPoint);
    // One staging directory per id, each a single entry of the ephemeral directory, none alike.
    const entries = await readdir(ephemeral);
    expect(entries).toHaveLength(ids.length);
    for (const entry of entries) {
      expect(entry).toMatch(/^[A-Za-z0-9_][A-Za-z0-9_.-]*-[0-9a-f]{16}$/);
      expect(staged).toContain(join(ephemeral, entry));
    }
    for (const [i] of ids.entries()) {
      expect(await readFile(join(kubelet.target(`id-${i}`), 'labels.csv'), 'utf8')).toContain(
        'cat',
      );
    }
    expect(await recordedClients(driver.stateDir)).toHaveLength(1);
  } finally {
    for (const id of ids) {
      await driver.client.node.NodeUnpublishVolume({
        volume_id: id,
        target_path: request(id).target_path,
      });
    }
  }
  expect(await readdir(ephemeral)).toEqual([]);
  expect(await recordedClients(driver.stateDir)).toEqual([]);
  expect((await MountTable.read()).under(driver.work)).toEqual([]);
});

it.each([
  [{ source: 'local:///etc' }, /inline volumes cannot use local:\/\/ sources/],
  [{ cachePath: '/var/lib/kubelet', cacheMedium: 'SSD' }, /inline volumes cannot set "cachePath"/],
  [{ cacheMedium: 'SSD' }, /inline volumes cannot set "cacheMedium"/],
  [{ keepWarm: '168h' }, /inline volumes cannot set "keepWarm"/],
  [{ layout: 'subdir' }, /inline volumes cannot set "layout"/],
  [{ cacheQuota: '1Gi' }, /cacheQuota of an inline volume may be at most 268435456 bytes/],
  [{ subPath: '../../x' }, /subPath="\.\.\/\.\.\/x" must not contain/],
])('refuses an inline volume asking for %j, leaving nothing', async (attributes, message) => {
  await expect(
    driver.client.node.NodePublishVolume(
      inline('refused', 'team-a', { ...source(), ...attributes }),
    ),
  ).rejects.toMatchObject({
    code: grpc.status.INVALID_ARGUMENT,
    details: expect.stringMatching(message),
  });
  expect(await recordedClients(driver.stateDir)).toEqual([]);
  expect((await MountTable.read()).under(driver.work)).toEqual([]);
});

it("never shares another tenant's client: other namespace or credentials get their own", async () => {
  // An administrator's volume of the same source, staged with the real credentials.
  const { volume } = await driver.client.controller.CreateVolume({
    name: 'admin-pv',
    volume_capabilities: [cap],
    parameters: source(),
  });
  if (!volume) throw new Error('no volume');
  await kubelet.stage(volume, { user: 'ml', password });
  await kubelet.publish(volume.volume_id, 'admin-pod');
  try {
    // A pod naming the same source without the password gets a client of its own, which the
    // server refuses: nothing of the administrator's client is reachable.
    await expect(
      driver.client.node.NodePublishVolume(inline('intruder', 'team-b', source(), { user: 'ml' })),
    ).rejects.toMatchObject({ code: grpc.status.UNAVAILABLE });
    expect(await recordedClients(driver.stateDir)).toHaveLength(1);
    expect((await MountTable.read()).at(kubelet.target('intruder'))).toBeUndefined();

    // Two pods of one namespace with the same credentials share a client; another namespace
    // with the same credentials gets its own.
    for (const [pod, namespace] of [
      ['b-1', 'team-b'],
      ['b-2', 'team-b'],
      ['c-1', 'team-c'],
    ] as const) {
      await driver.client.node.NodePublishVolume(inline(pod, namespace, source()));
    }
    const clients = await recordedClients(driver.stateDir);
    expect(clients).toHaveLength(3);
    for (const pod of ['b-1', 'b-2', 'c-1']) {
      expect(await readFile(join(kubelet.target(pod), 'labels.csv'), 'utf8')).toContain('cat');
      await unpublish(pod);
    }
  } finally {
    await kubelet.stop(volume.volume_id, ['admin-pod']);
  }
  expect(await recordedClients(driver.stateDir)).toEqual([]);
  expect((await MountTable.read()).under(driver.work)).toEqual([]);
});
