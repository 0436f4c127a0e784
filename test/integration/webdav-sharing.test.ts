/**
 * One Dataset on a WebDAV server on loopback, two volumes of it (the whole dataset and a
 * sub-directory) staged and published into four pod targets through the real driver socket.
 */
import { access, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { LoopbackServer } from '../../src/demo/loopback-server.js';
import { MountTable } from '../../src/kernel/mountinfo.js';
import { isSameProcess, sleep } from '../../src/kernel/proc.js';
import { mountCapability, startTestDriver, type TestDriver } from '../helpers/driver.js';
import { recordedClients } from '../helpers/cleanup.js';
import { sha256File, treeDigest, writeRandomFile, writeTree } from '../helpers/files.js';
import { pidsWithArgs } from '../helpers/processes.js';

let driver: TestDriver;
let server: LoopbackServer;
let data: string;

beforeAll(async () => {
  driver = await startTestDriver();
  data = join(driver.work, 'remote');
  await mkdir(data);
  await writeRandomFile(join(data, 'big.bin'), 32 << 20);
  await writeTree(join(data, 'tree'), 5, 20);
  server = await LoopbackServer.start(data, 'webdav');
});

afterAll(async () => {
  await driver?.dispose();
  await server?.stop();
});

it('shares one rclone client between two volumes and four targets, and cleans up completely', async () => {
  const { controller, node } = driver.client;
  const rw = mountCapability('MULTI_NODE_MULTI_WRITER');
  const whole = (
    await controller.CreateVolume({
      name: 'whole',
      volume_capabilities: [rw],
      parameters: { source: server.url() },
    })
  ).volume;
  const sub = (
    await controller.CreateVolume({
      name: 'tree-only',
      volume_capabilities: [rw],
      parameters: { source: server.url(), subPath: 'tree', cacheQuota: '512Mi' },
    })
  ).volume;
  if (!whole || !sub) throw new Error('CreateVolume returned no volume');
  expect(sub.volume_context.subPath).toBe('tree');

  const kubelet = join(driver.work, 'kubelet');
  const staging = (v: string) => join(kubelet, 'plugins', 'staging', v);
  const target = (pod: string) => join(kubelet, 'pods', pod, 'volumes', 'data');
  const plan = [
    { volume: whole, pod: 'pod-1', readonly: false },
    { volume: whole, pod: 'pod-2', readonly: true },
    { volume: sub, pod: 'pod-3', readonly: true },
    { volume: sub, pod: 'pod-4', readonly: false },
  ];
  for (const volume of [whole, sub]) {
    await node.NodeStageVolume({
      volume_id: volume.volume_id,
      staging_target_path: staging(volume.volume_id),
      volume_capability: rw,
      volume_context: volume.volume_context,
    });
  }
  for (const { volume, pod, readonly } of plan) {
    await node.NodePublishVolume({
      volume_id: volume.volume_id,
      staging_target_path: staging(volume.volume_id),
      target_path: target(pod),
      volume_capability: rw,
      volume_context: volume.volume_context,
      readonly,
    });
  }

  // Exactly one cache client for the two volumes.
  const clients = await recordedClients(driver.stateDir);
  expect(clients).toHaveLength(1);
  expect(await pidsWithArgs('rclone', 'mount', driver.stateDir)).toEqual([clients[0]?.pid]);

  // Every target serves the source's bytes.
  const bigDigest = await sha256File(join(data, 'big.bin'));
  const treeExpected = await treeDigest(join(data, 'tree'));
  expect(await sha256File(join(target('pod-1'), 'big.bin'))).toBe(bigDigest);
  expect(await sha256File(join(target('pod-2'), 'big.bin'))).toBe(bigDigest);
  expect(await treeDigest(join(target('pod-1'), 'tree'))).toEqual(treeExpected);
  expect(await treeDigest(target('pod-3'))).toEqual(treeExpected);
  expect(await treeDigest(target('pod-4'))).toEqual(treeExpected);

  // Read-only targets refuse writes; writable ones reach the remote.
  await expect(writeFile(join(target('pod-2'), 'nope.txt'), 'x')).rejects.toMatchObject({
    code: 'EROFS',
  });
  await expect(writeFile(join(target('pod-3'), 'nope.txt'), 'x')).rejects.toMatchObject({
    code: 'EROFS',
  });
  await writeFile(join(target('pod-4'), 'written-by-pod-4.txt'), 'hello from pod 4\n');
  expect(await readFile(join(target('pod-1'), 'tree', 'written-by-pod-4.txt'), 'utf8')).toBe(
    'hello from pod 4\n',
  );

  // Every bind comes from the dataset mount: the page-cache layer over rclone's own mount.
  const table = await MountTable.read();
  const [record] = await recordedClients(driver.stateDir);
  const datasetMount = table.at(record?.mountPoint ?? '');
  expect(datasetMount).toMatchObject({
    fsType: 'fuse.dataset-cache',
    source: expect.stringMatching(/\/backing$/),
  });
  expect(table.at(datasetMount?.source ?? '')).toMatchObject({
    fsType: 'fuse.rclone',
    source: expect.stringMatching(/^dataset-cache-csi:ds-/),
  });
  for (const { pod } of plan) {
    expect(table.at(target(pod))).toMatchObject({
      fsType: 'fuse.dataset-cache',
      device: datasetMount?.device,
    });
  }
  expect(await pidsWithArgs('bindfs', driver.stateDir)).toEqual([record?.layer?.pid]);
  expect(table.at(target('pod-2'))?.options).toContain('ro');
  expect(table.at(target('pod-1'))?.options).toContain('rw');

  for (const { volume, pod } of plan) {
    await node.NodeUnpublishVolume({ volume_id: volume.volume_id, target_path: target(pod) });
  }
  await node.NodeUnstageVolume({
    volume_id: whole.volume_id,
    staging_target_path: staging(whole.volume_id),
  });
  // The dataset is still in use by the second volume.
  expect(await isSameProcess(clients[0]?.pid ?? -1, clients[0]?.startTime ?? '')).toBe(true);
  await node.NodeUnstageVolume({
    volume_id: sub.volume_id,
    staging_target_path: staging(sub.volume_id),
  });

  // The last unstage stopped the client and left no mount behind.
  expect(await isSameProcess(clients[0]?.pid ?? -1, clients[0]?.startTime ?? '')).toBe(false);
  expect((await MountTable.read()).under(driver.work)).toEqual([]);
  expect(await recordedClients(driver.stateDir)).toEqual([]);
  expect(await pidsWithArgs('bindfs', driver.stateDir)).toEqual([]);
  for (const { pod } of plan)
    await expect(access(target(pod))).rejects.toMatchObject({ code: 'ENOENT' });

  // What pod 4 wrote reached the remote before the client stopped.

  for (let i = 0; i < 50; i += 1) {
    if (
      await access(join(data, 'tree', 'written-by-pod-4.txt')).then(
        () => true,
        () => false,
      )
    )
      break;
    await sleep(100);
  }
  expect(await readFile(join(data, 'tree', 'written-by-pod-4.txt'), 'utf8')).toBe(
    'hello from pod 4\n',
  );
});
