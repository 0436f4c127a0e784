/**
 * Node and controller behaviour through the real socket with real rclone clients: repeated
 * lifecycles, errors that must leave nothing behind, concurrency, adoption after a driver restart
 * and volume health after a client crash.
 */
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { LoopbackServer } from '../../src/demo/loopback-server.js';
import { MountTable } from '../../src/kernel/mountinfo.js';
import { freePort } from '../../src/util/net.js';
import { recordedClients } from '../helpers/cleanup.js';
import { mountCapability, startTestDriver, type TestDriver } from '../helpers/driver.js';
import { pidsWithArgs } from '../helpers/processes.js';

let driver: TestDriver;
let source: string;
let kubelet: string;

const code = (status: grpc.status, message?: RegExp) =>
  expect.objectContaining({
    code: status,
    ...(message ? { details: expect.stringMatching(message) } : {}),
  });
const staging = (id: string) => join(kubelet, 'plugins', 'staging', id);
const target = (pod: string) => join(kubelet, 'pods', pod, 'volumes', 'data');
const cap = mountCapability('MULTI_NODE_MULTI_WRITER');

async function create(
  name: string,
  parameters: Record<string, string> = { source: `local://${source}` },
) {
  const { volume } = await driver.client.controller.CreateVolume({
    name,
    volume_capabilities: [cap],
    parameters,
  });
  if (!volume) throw new Error('no volume');
  return volume;
}

async function stage(
  volume: { volume_id: string; volume_context: Record<string, string> },
  path = staging(volume.volume_id),
) {
  await driver.client.node.NodeStageVolume({
    volume_id: volume.volume_id,
    staging_target_path: path,
    volume_capability: cap,
    volume_context: volume.volume_context,
  });
}

async function publish(volumeId: string, pod: string, readonly = false) {
  await driver.client.node.NodePublishVolume({
    volume_id: volumeId,
    staging_target_path: staging(volumeId),
    target_path: target(pod),
    volume_capability: cap,
    readonly,
  });
}

/** Unpublish, unstage and delete, in kubelet's and the provisioner's order. */
async function teardown(volumeId: string, pod: string) {
  await driver.client.node.NodeUnpublishVolume({ volume_id: volumeId, target_path: target(pod) });
  await driver.client.node.NodeUnstageVolume({
    volume_id: volumeId,
    staging_target_path: staging(volumeId),
  });
  await driver.client.controller.DeleteVolume({ volume_id: volumeId });
}

async function expectClean() {
  expect((await MountTable.read()).under(kubelet)).toEqual([]);
  expect(await recordedClients(driver.stateDir)).toEqual([]);
  expect(await pidsWithArgs('rclone', 'mount', driver.stateDir)).toEqual([]);
}

beforeAll(async () => {
  driver = await startTestDriver();
  source = join(driver.work, 'source');
  kubelet = join(driver.work, 'kubelet');
  await mkdir(join(source, 'models'), { recursive: true });
  await writeFile(join(source, 'models', 'weights.bin'), 'weights\n');
  await writeFile(join(source, 'labels.txt'), 'cat\ndog\n');
});

afterAll(async () => {
  await driver.dispose();
});

afterEach(async () => {
  if (process.env.DEBUG_DRIVER_LOG) process.stderr.write(await driver.log());
  await expectClean();
});

it('runs the full lifecycle 10 times, starting and stopping one client each time', async () => {
  const pids = new Set<number>();
  for (let round = 0; round < 10; round += 1) {
    const volume = await create(`round-${round}`);
    await stage(volume);
    await publish(volume.volume_id, `pod-${round}`);
    const [client] = await recordedClients(driver.stateDir);
    pids.add(client?.pid ?? -1);
    expect(await readFile(join(target(`pod-${round}`), 'labels.txt'), 'utf8')).toBe('cat\ndog\n');
    await teardown(volume.volume_id, `pod-${round}`);
    await expectClean();
  }
  expect(pids.size).toBe(10);
});

it('answers repeated calls idempotently and conflicting ones with precise codes', async () => {
  const volume = await create('conflicts');
  const { node } = driver.client;
  await expect(publish(volume.volume_id, 'early')).rejects.toEqual(
    code(grpc.status.FAILED_PRECONDITION, /not staged/),
  );
  await stage(volume);
  await stage(volume);
  await expect(stage(volume, join(kubelet, 'elsewhere'))).rejects.toEqual(
    code(grpc.status.ALREADY_EXISTS, /already staged at/),
  );
  await publish(volume.volume_id, 'pod-a');
  await publish(volume.volume_id, 'pod-a');
  await expect(publish(volume.volume_id, 'pod-a', true)).rejects.toEqual(
    code(grpc.status.ALREADY_EXISTS, /read-write/),
  );
  await expect(
    node.NodeUnstageVolume({
      volume_id: volume.volume_id,
      staging_target_path: staging(volume.volume_id),
    }),
  ).rejects.toEqual(code(grpc.status.FAILED_PRECONDITION, /still published/));
  expect((await MountTable.read()).countAt(target('pod-a'))).toBe(1);
  for (let i = 0; i < 2; i += 1) {
    await node.NodeUnpublishVolume({ volume_id: volume.volume_id, target_path: target('pod-a') });
  }
  for (let i = 0; i < 2; i += 1) {
    await node.NodeUnstageVolume({
      volume_id: volume.volume_id,
      staging_target_path: staging(volume.volume_id),
    });
  }
  for (let i = 0; i < 2; i += 1)
    await driver.client.controller.DeleteVolume({ volume_id: volume.volume_id });
});

it('rejects bad input naming the field, and leaves nothing behind', async () => {
  const { node, controller } = driver.client;
  await expect(
    create('bad-param', { source: `local://${source}`, colour: 'blue' }),
  ).rejects.toEqual(code(grpc.status.INVALID_ARGUMENT, /unknown parameter "colour"/));
  await expect(create('no-source', { engine: 'rclone' })).rejects.toEqual(
    code(grpc.status.INVALID_ARGUMENT, /source is required/),
  );
  await expect(
    controller.CreateVolume({
      name: 'block',
      volume_capabilities: [{ block: {}, access_mode: { mode: 'SINGLE_NODE_WRITER' } }],
      parameters: { source: `local://${source}` },
    }),
  ).rejects.toEqual(code(grpc.status.INVALID_ARGUMENT, /block access is not supported/));
  await expect(
    controller.CreateVolume({
      name: 'ro-writer',
      volume_capabilities: [cap],
      parameters: { source: `local://${source}`, readOnly: 'true' },
    }),
  ).rejects.toEqual(code(grpc.status.INVALID_ARGUMENT, /read-only/));
  await expect(
    controller.CreateVolume({
      name: 'x'.repeat(129),
      volume_capabilities: [cap],
      parameters: { source: `local://${source}` },
    }),
  ).rejects.toEqual(code(grpc.status.INVALID_ARGUMENT, /at most 128/));
  await expect(
    node.NodeStageVolume({
      volume_id: 'v',
      staging_target_path: 'relative/path',
      volume_capability: cap,
      volume_context: { source: `local://${source}` },
    }),
  ).rejects.toEqual(
    code(grpc.status.INVALID_ARGUMENT, /staging_target_path must be an absolute path/),
  );
  await expect(
    node.NodeStageVolume({
      volume_id: 'v',
      staging_target_path: staging('v'),
      volume_capability: cap,
      volume_context: { source: `local://${source}`, subPath: '../etc' },
    }),
  ).rejects.toEqual(code(grpc.status.INVALID_ARGUMENT, /volume_context: parameter subPath/));
  await expect(
    node.NodePublishVolume({
      volume_id: 'v',
      staging_target_path: staging('v'),
      target_path: '/a/../etc',
      volume_capability: cap,
    }),
  ).rejects.toEqual(code(grpc.status.INVALID_ARGUMENT, /target_path must not contain/));
  // A sub-directory that does not exist: the started client is stopped again, nothing stays mounted.
  await expect(
    node.NodeStageVolume({
      volume_id: 'missing-dir',
      staging_target_path: staging('missing-dir'),
      volume_capability: cap,
      volume_context: { source: `local://${source}`, subPath: 'no/such/dir' },
    }),
  ).rejects.toEqual(
    code(grpc.status.FAILED_PRECONDITION, /sub-directory "no\/such\/dir" does not exist/),
  );
});

it('refuses to stage when the remote does not answer, with the client’s own words, leaving nothing', async () => {
  const closed = await freePort();
  await expect(
    driver.client.node.NodeStageVolume({
      volume_id: 'unreachable',
      staging_target_path: staging('unreachable'),
      volume_capability: cap,
      volume_context: { source: `webdav://127.0.0.1:${closed}/data` },
    }),
  ).rejects.toEqual(
    code(
      grpc.status.UNAVAILABLE,
      /cannot list the remote \(.*Input\/output error\).*connection refused/,
    ),
  );
  expect((await MountTable.read()).at(staging('unreachable'))).toBeUndefined();
});

it('serializes calls on one volume (ABORTED) and starts one client for volumes staging together', async () => {
  const a = await create('concurrent-a');
  const b = await create('concurrent-b');
  const sameVolume = await Promise.allSettled([stage(a), stage(a), stage(a), stage(a)]);
  const rejected = sameVolume.filter((r) => r.status === 'rejected') as PromiseRejectedResult[];
  expect(sameVolume.some((r) => r.status === 'fulfilled')).toBe(true);
  expect(rejected.length).toBeGreaterThan(0);
  for (const r of rejected) expect(r.reason).toEqual(code(grpc.status.ABORTED, /in progress/));
  await Promise.all([stage(a), stage(b)]);
  expect(await recordedClients(driver.stateDir)).toHaveLength(1);
  expect(await pidsWithArgs('rclone', 'mount', driver.stateDir)).toHaveLength(1);
  for (const v of [a, b]) {
    await driver.client.node.NodeUnstageVolume({
      volume_id: v.volume_id,
      staging_target_path: staging(v.volume_id),
    });
    await driver.client.controller.DeleteVolume({ volume_id: v.volume_id });
  }
});

it('adopts running clients after a driver restart without interrupting reads', async () => {
  const volume = await create('adopt');
  await stage(volume);
  await publish(volume.volume_id, 'pod-adopt');
  const [before] = await recordedClients(driver.stateDir);
  // A client was recorded: the comparison below is between two records, not two absences.
  expect(before).toMatchObject({ pid: expect.any(Number), startTime: expect.any(String) });
  await driver.restartDriver();
  expect((await driver.client.identity.Probe({})).ready?.value).toBe(true);
  const [after] = await recordedClients(driver.stateDir);
  expect(after).toEqual(before);
  expect(await readFile(join(target('pod-adopt'), 'models', 'weights.bin'), 'utf8')).toBe(
    'weights\n',
  );
  const stats = await driver.client.node.NodeGetVolumeStats({
    volume_id: volume.volume_id,
    volume_path: target('pod-adopt'),
  });
  expect(stats.volume_condition).toEqual({ abnormal: false, message: expect.any(String) });
  expect(
    (await driver.client.controller.ListVolumes({})).entries.map((e) => e.volume?.volume_id),
  ).toContain(volume.volume_id);
  await teardown(volume.volume_id, 'pod-adopt');
});

it('passes credentials from node-stage secrets without leaking them to logs, argv or state files', async () => {
  const secret = `pw-${Math.random().toString(36).slice(2)}-SECRET`;
  const served = join(driver.work, 'private');
  await mkdir(served);
  await writeFile(join(served, 'private.txt'), 'only with a password\n');
  const server = await LoopbackServer.start(served, 'webdav', [
    '--user',
    'reader',
    '--pass',
    secret,
  ]);
  try {
    const { volume } = await driver.client.controller.CreateVolume({
      name: 'with-secret',
      volume_capabilities: [cap],
      parameters: { source: server.url() },
    });
    if (!volume) throw new Error('no volume');
    await driver.client.node.NodeStageVolume({
      volume_id: volume.volume_id,
      staging_target_path: staging(volume.volume_id),
      volume_capability: cap,
      volume_context: volume.volume_context,
      secrets: { user: 'reader', password: secret },
    });
    await publish(volume.volume_id, 'pod-secret');
    expect(await readFile(join(target('pod-secret'), 'private.txt'), 'utf8')).toBe(
      'only with a password\n',
    );
    const [client] = await recordedClients(driver.stateDir);
    const cmdline = await readFile(`/proc/${client?.pid}/cmdline`, 'utf8');
    expect(cmdline).not.toContain(secret);
    const stateFiles = await readdir(driver.stateDir, { recursive: true, withFileTypes: true });
    for (const entry of stateFiles.filter((e) => e.isFile())) {
      expect(await readFile(join(entry.parentPath, entry.name), 'utf8')).not.toContain(secret);
    }
    await teardown(volume.volume_id, 'pod-secret');
    expect(await driver.log()).not.toContain(secret);
  } finally {
    await server.stop();
  }
});

it('--page-cache none: the engine mount alone is staged, no page-cache layer, no copy overlay', async () => {
  const plain = await startTestDriver({ pageCache: 'none' });
  const data = join(plain.work, 'http');
  let server: LoopbackServer | undefined;
  try {
    await mkdir(data);
    await writeFile(join(data, 'a.txt'), 'served by rclone alone\n');
    server = await LoopbackServer.start(data, 'http');
    const ro = mountCapability('MULTI_NODE_READER_ONLY');
    const stagingPath = join(plain.work, 'kubelet', 'staging', 'plain');
    const { volume } = await plain.client.controller.CreateVolume({
      name: 'plain',
      volume_capabilities: [ro],
      parameters: { source: server.url() },
    });
    if (!volume) throw new Error('no volume');
    await plain.client.node.NodeStageVolume({
      volume_id: volume.volume_id,
      staging_target_path: stagingPath,
      volume_capability: ro,
      volume_context: volume.volume_context,
    });
    try {
      expect(await readFile(join(stagingPath, 'a.txt'), 'utf8')).toBe('served by rclone alone\n');
      const fsTypes = (await MountTable.read()).under(plain.work).map((m) => m.fsType);
      // The dataset mount and its staging bind (the MEM cache's tmpfs is under /dev/shm).
      expect(fsTypes).toEqual(['fuse.rclone', 'fuse.rclone']);
      // The client is recorded, without a page-cache layer or a local copy.
      const clients = await recordedClients(plain.stateDir);
      expect(clients).toHaveLength(1);
      expect(clients[0]).toMatchObject({ pid: expect.any(Number), startTime: expect.any(String) });
      expect(clients[0]).not.toHaveProperty('layer');
      expect(clients[0]).not.toHaveProperty('copy');
    } finally {
      await plain.client.node.NodeUnstageVolume({
        volume_id: volume.volume_id,
        staging_target_path: stagingPath,
      });
    }
    expect((await MountTable.read()).under(plain.work)).toEqual([]);
  } finally {
    await server?.stop();
    await plain.dispose();
  }
});
