/**
 * The contract of upstream csi-sanity v5.3.1, run through the real socket of a real driver with a
 * local:// source. Describe/it names follow csi-sanity's spec names so a failure upstream maps to a
 * test here. Like csi-sanity, every spec gets a fresh mount dir M (target M/target, which the
 * driver must create and remove) and staging dir S (which the driver must leave empty).
 */
import { mkdir, mkdtemp, readdir, rmdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { MountTable } from '../src/kernel/mountinfo.js';
import { mountCapability, startTestDriver, type TestDriver } from '../test/helpers/driver.js';

const NAME_RE = /^[a-zA-Z][A-Za-z0-9-\\._]{0,61}[a-zA-Z]$/;
const V1_10_CONTROLLER_CAPS = new Set([
  'CREATE_DELETE_VOLUME',
  'PUBLISH_UNPUBLISH_VOLUME',
  'LIST_VOLUMES',
  'GET_CAPACITY',
  'CREATE_DELETE_SNAPSHOT',
  'LIST_SNAPSHOTS',
  'PUBLISH_READONLY',
  'CLONE_VOLUME',
  'EXPAND_VOLUME',
  'MODIFY_VOLUME',
  'LIST_VOLUMES_PUBLISHED_NODES',
  'GET_VOLUME',
  'VOLUME_CONDITION',
  'SINGLE_NODE_MULTI_WRITER',
]);
const V1_10_NODE_CAPS = new Set([
  'UNKNOWN',
  'STAGE_UNSTAGE_VOLUME',
  'GET_VOLUME_STATS',
  'EXPAND_VOLUME',
  'VOLUME_CONDITION',
  'SINGLE_NODE_MULTI_WRITER',
  'VOLUME_MOUNT_GROUP',
]);
const TEST_VOLUME_SIZE = String(10 * 2 ** 30);

let driver: TestDriver;
let source: string;
let sanityRoot: string;
let M: string;
let S: string;
let created: string[] = [];
let params: Record<string, string>;

const code = (status: grpc.status) => expect.objectContaining({ code: status });
const uniqueName = (prefix: string) => `${prefix}-${Math.random().toString(16).slice(2, 12)}`;

async function createVolume(name = uniqueName('sanity'), capacity?: string) {
  const res = await driver.client.controller.CreateVolume({
    name,
    volume_capabilities: [mountCapability()],
    parameters: params,
    ...(capacity ? { capacity_range: { required_bytes: capacity } } : {}),
  });
  const volume = res.volume;
  if (!volume) throw new Error('CreateVolume returned no volume');
  created.push(volume.volume_id);
  return volume;
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

beforeAll(async () => {
  driver = await startTestDriver();
  source = join(driver.work, 'source');
  await mkdir(join(source, 'dir'), { recursive: true });
  await writeFile(join(source, 'dir', 'file.txt'), 'sanity data\n');
  params = { source: `local://${source}` };
  sanityRoot = await mkdtemp(join(driver.work, 'sanity-'));
});

afterAll(async () => {
  await driver.dispose();
});

beforeEach(async () => {
  created = [];
  M = join(sanityRoot, 'csi-mount');
  S = join(sanityRoot, 'csi-staging');
  await mkdir(M);
  await mkdir(S);
});

/** csi-sanity's cleanup: unpublish, unstage, delete; then its own rmdir of M and S must succeed. */
afterEach(async () => {
  for (const volumeId of created) {
    await driver.client.node.NodeUnpublishVolume({
      volume_id: volumeId,
      target_path: join(M, 'target'),
    });
    await driver.client.node.NodeUnstageVolume({ volume_id: volumeId, staging_target_path: S });
    await driver.client.controller.DeleteVolume({ volume_id: volumeId });
  }
  expect(await readdir(S)).toEqual([]);
  await rmdir(M);
  await rmdir(S);
  expect((await MountTable.read()).under(sanityRoot)).toEqual([]);
});

describe('Identity Service', () => {
  it('GetPluginCapabilities should return appropriate capabilities', async () => {
    const res = await driver.client.identity.GetPluginCapabilities({});
    const services = res.capabilities.map((c) => c.service?.type);
    expect(services).toEqual(['CONTROLLER_SERVICE']);
  });

  it('Probe should return appropriate information', async () => {
    const res = await driver.client.identity.Probe({});
    expect(res.ready?.value).toBe(true);
  });

  it('GetPluginInfo should return appropriate information', async () => {
    const res = await driver.client.identity.GetPluginInfo({});
    expect(res.name).toMatch(NAME_RE);
    expect(res.name).toBe('dataset-cache.csi.dev');
    expect(res.vendor_version).toMatch(/^\d+\.\d+\.\d+/);
  });
});

describe('Controller Service [Controller Server]', () => {
  it('ControllerGetCapabilities should return appropriate capabilities', async () => {
    const res = await driver.client.controller.ControllerGetCapabilities({});
    const caps = res.capabilities.map((c) => String(c.rpc?.type));
    expect(caps.length).toBeGreaterThan(0);
    for (const cap of caps) expect(V1_10_CONTROLLER_CAPS.has(cap)).toBe(true);
    expect(caps).not.toContain('GET_SNAPSHOT');
  });

  describe('ListVolumes', () => {
    it('should return appropriate values (no optional values added)', async () => {
      const res = await driver.client.controller.ListVolumes({});
      expect(Array.isArray(res.entries)).toBe(true);
    });

    it('should fail when an invalid starting_token is passed', async () => {
      await expect(
        driver.client.controller.ListVolumes({ starting_token: 'invalid-token' }),
      ).rejects.toEqual(code(grpc.status.ABORTED));
    });

    it('check the presence of new volumes and absence of deleted ones in the volume list', async () => {
      const before = (await driver.client.controller.ListVolumes({})).entries.length;
      const volume = await createVolume('sanity');
      const during = await driver.client.controller.ListVolumes({});
      expect(during.entries.length).toBe(before + 1);
      expect(during.entries.map((e) => e.volume?.volume_id)).toContain(volume.volume_id);
      await driver.client.controller.DeleteVolume({ volume_id: volume.volume_id });
      created = [];
      expect((await driver.client.controller.ListVolumes({})).entries.length).toBe(before);
    });

    it('pages with max_entries and next_token, tolerating deletion of the last volume of a page', async () => {
      const volumes = [];
      for (let i = 0; i < 5; i += 1) volumes.push(await createVolume());
      const first = await driver.client.controller.ListVolumes({ max_entries: 2 });
      expect(first.entries).toHaveLength(2);
      expect(first.next_token).not.toBe('');
      await driver.client.controller.DeleteVolume({
        volume_id: first.entries[1]?.volume?.volume_id ?? '',
      });
      const seen = first.entries.map((e) => e.volume?.volume_id);
      let token = first.next_token;
      while (token !== '') {
        const page = await driver.client.controller.ListVolumes({
          max_entries: 2,
          starting_token: token,
        });
        seen.push(...page.entries.map((e) => e.volume?.volume_id));
        token = page.next_token;
      }
      expect(new Set(seen).size).toBe(5);
      for (const v of volumes) expect(seen).toContain(v.volume_id);
    });
  });

  describe('CreateVolume', () => {
    it('should fail when no name is provided', async () => {
      await expect(
        driver.client.controller.CreateVolume({
          volume_capabilities: [mountCapability()],
          parameters: params,
        }),
      ).rejects.toEqual(code(grpc.status.INVALID_ARGUMENT));
    });

    it('should fail when no volume capabilities are provided', async () => {
      await expect(
        driver.client.controller.CreateVolume({ name: uniqueName('sanity'), parameters: params }),
      ).rejects.toEqual(code(grpc.status.INVALID_ARGUMENT));
    });

    it('should return appropriate values SingleNodeWriter NoCapacity', async () => {
      const volume = await createVolume();
      expect(volume.volume_id).not.toBe('');
    });

    it('should return appropriate values SingleNodeWriter WithCapacity 1Gi', async () => {
      const volume = await createVolume(uniqueName('sanity'), String(2 ** 30));
      expect(BigInt(volume.capacity_bytes)).toBeGreaterThanOrEqual(BigInt(2 ** 30));
    });

    it('should not fail when requesting to create a volume with already existing name and same capacity', async () => {
      const name = uniqueName('sanity');
      const first = await createVolume(name, TEST_VOLUME_SIZE);
      const second = await createVolume(name, TEST_VOLUME_SIZE);
      expect(second.volume_id).toBe(first.volume_id);
      expect(second.capacity_bytes).toBe(first.capacity_bytes);
    });

    it('should fail when requesting to create a volume with already existing name and different capacity', async () => {
      const name = uniqueName('sanity');
      await createVolume(name, TEST_VOLUME_SIZE);
      const double = String(2n * BigInt(TEST_VOLUME_SIZE));
      await expect(
        driver.client.controller.CreateVolume({
          name,
          volume_capabilities: [mountCapability()],
          parameters: params,
          capacity_range: { required_bytes: double, limit_bytes: double },
        }),
      ).rejects.toEqual(code(grpc.status.ALREADY_EXISTS));
    });

    it('should not fail when creating volume with maximum-length name', async () => {
      const volume = await createVolume('a'.repeat(128));
      expect(Buffer.byteLength(volume.volume_id)).toBeLessThanOrEqual(128);
    });
  });

  describe('DeleteVolume', () => {
    it('should fail when no volume id is provided', async () => {
      await expect(driver.client.controller.DeleteVolume({})).rejects.toEqual(
        code(grpc.status.INVALID_ARGUMENT),
      );
    });

    it('should succeed when an invalid volume id is used', async () => {
      await expect(
        driver.client.controller.DeleteVolume({ volume_id: 'fake-vol-id' }),
      ).resolves.toEqual({});
    });

    it('should return appropriate values (no optional values added)', async () => {
      const volume = await createVolume();
      await expect(
        driver.client.controller.DeleteVolume({ volume_id: volume.volume_id }),
      ).resolves.toEqual({});
      created = [];
    });
  });

  describe('ValidateVolumeCapabilities', () => {
    it('should fail when no volume id is provided', async () => {
      await expect(
        driver.client.controller.ValidateVolumeCapabilities({
          volume_capabilities: [mountCapability()],
        }),
      ).rejects.toEqual(code(grpc.status.INVALID_ARGUMENT));
    });

    it('should fail when no volume capabilities are provided', async () => {
      const volume = await createVolume();
      await expect(
        driver.client.controller.ValidateVolumeCapabilities({ volume_id: volume.volume_id }),
      ).rejects.toEqual(code(grpc.status.INVALID_ARGUMENT));
    });

    it('should return appropriate values (no optional values added)', async () => {
      const volume = await createVolume();
      const res = await driver.client.controller.ValidateVolumeCapabilities({
        volume_id: volume.volume_id,
        volume_capabilities: [mountCapability()],
      });
      expect(res.confirmed?.volume_capabilities).toHaveLength(1);
    });

    it('should fail when the requested volume does not exist', async () => {
      await expect(
        driver.client.controller.ValidateVolumeCapabilities({
          volume_id: uniqueName('fake-vol-id'),
          volume_capabilities: [mountCapability()],
        }),
      ).rejects.toEqual(code(grpc.status.NOT_FOUND));
    });

    it('does not confirm block access', async () => {
      const volume = await createVolume();
      const res = await driver.client.controller.ValidateVolumeCapabilities({
        volume_id: volume.volume_id,
        volume_capabilities: [{ block: {}, access_mode: { mode: 'SINGLE_NODE_WRITER' } }],
      });
      expect(res.confirmed).toBeNull();
      expect(res.message).toMatch(/block/);
    });
  });
});

describe('Node Service', () => {
  const target = () => join(M, 'target');

  it('NodeGetCapabilities should return appropriate capabilities', async () => {
    const res = await driver.client.node.NodeGetCapabilities({});
    const caps = res.capabilities.map((c) => String(c.rpc?.type));
    for (const cap of caps) expect(V1_10_NODE_CAPS.has(cap)).toBe(true);
    expect(caps).toEqual(
      expect.arrayContaining(['STAGE_UNSTAGE_VOLUME', 'GET_VOLUME_STATS', 'VOLUME_CONDITION']),
    );
  });

  it('NodeGetInfo should return appropriate values', async () => {
    const res = await driver.client.node.NodeGetInfo({});
    expect(res.node_id).toBe('test-node');
    expect(Number(res.max_volumes_per_node)).toBeGreaterThanOrEqual(0);
  });

  describe('NodePublishVolume', () => {
    it('should fail when no volume id is provided', async () => {
      await expect(
        driver.client.node.NodePublishVolume({
          target_path: target(),
          staging_target_path: S,
          volume_capability: mountCapability(),
        }),
      ).rejects.toEqual(code(grpc.status.INVALID_ARGUMENT));
    });
    it('should fail when no target path is provided', async () => {
      await expect(
        driver.client.node.NodePublishVolume({
          volume_id: 'id',
          staging_target_path: S,
          volume_capability: mountCapability(),
        }),
      ).rejects.toEqual(code(grpc.status.INVALID_ARGUMENT));
    });
    it('should fail when no volume capability is provided', async () => {
      await expect(
        driver.client.node.NodePublishVolume({
          volume_id: 'id',
          staging_target_path: S,
          target_path: target(),
        }),
      ).rejects.toEqual(code(grpc.status.INVALID_ARGUMENT));
    });
  });

  describe('NodeUnpublishVolume', () => {
    it('should fail when no volume id is provided', async () => {
      await expect(
        driver.client.node.NodeUnpublishVolume({ target_path: target() }),
      ).rejects.toEqual(code(grpc.status.INVALID_ARGUMENT));
    });
    it('should fail when no target path is provided', async () => {
      await expect(driver.client.node.NodeUnpublishVolume({ volume_id: 'id' })).rejects.toEqual(
        code(grpc.status.INVALID_ARGUMENT),
      );
    });
    it('should remove target path', async () => {
      const volume = await createVolume();
      await driver.client.node.NodeStageVolume({
        volume_id: volume.volume_id,
        staging_target_path: S,
        volume_capability: mountCapability(),
        volume_context: volume.volume_context,
        publish_context: { device: '/dev/mock' },
      });
      await driver.client.node.NodePublishVolume({
        volume_id: volume.volume_id,
        staging_target_path: S,
        target_path: target(),
        volume_capability: mountCapability(),
        volume_context: volume.volume_context,
      });
      expect((await stat(target())).isDirectory()).toBe(true);
      await driver.client.node.NodeUnpublishVolume({
        volume_id: volume.volume_id,
        target_path: target(),
      });
      expect(await exists(target())).toBe(false);
    });
  });

  describe('NodeStageVolume', () => {
    it('should fail when no volume id is provided', async () => {
      await expect(
        driver.client.node.NodeStageVolume({
          staging_target_path: S,
          volume_capability: mountCapability(),
          volume_context: params,
        }),
      ).rejects.toEqual(code(grpc.status.INVALID_ARGUMENT));
    });
    it('should fail when no staging target path is provided', async () => {
      await expect(
        driver.client.node.NodeStageVolume({
          volume_id: 'id',
          volume_capability: mountCapability(),
          volume_context: params,
        }),
      ).rejects.toEqual(code(grpc.status.INVALID_ARGUMENT));
    });
    it('should fail when no volume capability is provided', async () => {
      const volume = await createVolume();
      await expect(
        driver.client.node.NodeStageVolume({
          volume_id: volume.volume_id,
          staging_target_path: S,
          volume_context: volume.volume_context,
          publish_context: { device: '/dev/mock' },
        }),
      ).rejects.toEqual(code(grpc.status.INVALID_ARGUMENT));
    });
  });

  describe('NodeUnstageVolume', () => {
    it('should fail when no volume id is provided', async () => {
      await expect(
        driver.client.node.NodeUnstageVolume({ staging_target_path: S }),
      ).rejects.toEqual(code(grpc.status.INVALID_ARGUMENT));
    });
    it('should fail when no staging target path is provided', async () => {
      await expect(driver.client.node.NodeUnstageVolume({ volume_id: 'id' })).rejects.toEqual(
        code(grpc.status.INVALID_ARGUMENT),
      );
    });
  });

  describe('NodeGetVolumeStats', () => {
    it('should fail when no volume id is provided', async () => {
      await expect(driver.client.node.NodeGetVolumeStats({ volume_path: '/tmp' })).rejects.toEqual(
        code(grpc.status.INVALID_ARGUMENT),
      );
    });
    it('should fail when no volume path is provided', async () => {
      await expect(driver.client.node.NodeGetVolumeStats({ volume_id: 'id' })).rejects.toEqual(
        code(grpc.status.INVALID_ARGUMENT),
      );
    });
    it('should fail when volume is not found', async () => {
      await expect(
        driver.client.node.NodeGetVolumeStats({
          volume_id: uniqueName('fake-vol-id'),
          volume_path: '/tmp',
        }),
      ).rejects.toEqual(code(grpc.status.NOT_FOUND));
    });
    it('should fail when volume does not exist on the specified path', async () => {
      const volume = await createVolume();
      await stageAndPublish(volume.volume_id, volume.volume_context);
      await expect(
        driver.client.node.NodeGetVolumeStats({
          volume_id: volume.volume_id,
          volume_path: 'some/path',
        }),
      ).rejects.toEqual(code(grpc.status.NOT_FOUND));
    });
  });

  async function stageAndPublish(volumeId: string, context: Record<string, string>) {
    await driver.client.node.NodeStageVolume({
      volume_id: volumeId,
      staging_target_path: S,
      volume_capability: mountCapability(),
      volume_context: context,
      publish_context: { device: '/dev/mock' },
    });
    await driver.client.node.NodePublishVolume({
      volume_id: volumeId,
      staging_target_path: S,
      target_path: target(),
      volume_capability: mountCapability(),
      volume_context: context,
    });
  }

  async function lifecycle(repeat: number) {
    const volume = await createVolume();
    for (let i = 0; i < repeat; i += 1)
      await stageAndPublish(volume.volume_id, volume.volume_context);
    const stats = await driver.client.node.NodeGetVolumeStats({
      volume_id: volume.volume_id,
      volume_path: target(),
    });
    expect(stats.volume_condition?.abnormal).toBe(false);
    // rclone cannot count a remote's files: its placeholder inode figures are not passed on.
    expect(stats.usage.map((u) => u.unit)).toEqual(['BYTES']);
    expect(await readdir(join(target(), 'dir'))).toEqual(['file.txt']);
    for (let i = 0; i < repeat; i += 1) {
      await driver.client.node.NodeUnpublishVolume({
        volume_id: volume.volume_id,
        target_path: target(),
      });
    }
    expect(await exists(target())).toBe(false);
    for (let i = 0; i < repeat; i += 1) {
      await driver.client.node.NodeUnstageVolume({
        volume_id: volume.volume_id,
        staging_target_path: S,
      });
    }
    for (let i = 0; i < repeat; i += 1)
      await driver.client.controller.DeleteVolume({ volume_id: volume.volume_id });
    created = [];
  }

  it('should work', async () => {
    await lifecycle(1);
  });

  it('should be idempotent', async () => {
    await lifecycle(10);
  });
});
