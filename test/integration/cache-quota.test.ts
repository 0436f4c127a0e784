/**
 * The cache quota is a hard promise on every medium (MEM: a tmpfs of the quota; SSD/HDD: a loop-
 * mounted image of the quota), and MEM caches never promise more memory than the node allows.
 */
import { mkdir, readdir, stat, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { execa } from 'execa';
import { MountTable } from '../../src/kernel/mountinfo.js';
import { PathProbe } from '../../src/kernel/path-probe.js';
import { cacheImage } from '../../src/supervisor/cache-volume.js';
import { ExecaRunner } from '../../src/kernel/runner.js';
import { recordedClients } from '../helpers/cleanup.js';
import { mountCapability, startTestDriver, type TestDriver } from '../helpers/driver.js';
import { sha256File, writeRandomFile } from '../helpers/files.js';

const MiB = 1 << 20;
const cap = mountCapability('MULTI_NODE_READER_ONLY');
let driver: TestDriver;
let source: string;

beforeAll(async () => {
  driver = await startTestDriver({ memCacheLimitBytes: 100 * MiB });
  source = join(driver.work, 'source');
  await mkdir(source);
  for (let i = 0; i < 3; i += 1) await writeRandomFile(join(source, `part-${i}.bin`), 48 * MiB);
});

afterAll(async () => {
  await driver?.dispose();
});

async function stage(name: string, parameters: Record<string, string>) {
  const { volume } = await driver.client.controller.CreateVolume({
    name,
    volume_capabilities: [cap],
    parameters,
  });
  if (!volume) throw new Error('no volume');
  const staging = join(driver.work, 'kubelet', 'staging', volume.volume_id);
  await driver.client.node.NodeStageVolume({
    volume_id: volume.volume_id,
    staging_target_path: staging,
    volume_capability: cap,
    volume_context: volume.volume_context,
  });
  return { volume, staging };
}

it.each([
  ['MEM', 'tmpfs', /^dataset-cache-csi-cache:ds-/],
  ['SSD', 'ext4', /^\/dev\/loop\d+$/],
  // HDD differs from SSD only in what an administrator tells the scheduler: the same image.
  ['HDD', 'ext4', /^\/dev\/loop\d+$/],
] as const)(
  'keeps a %s cache within its quota while 3x the quota is read through it',
  async (medium, fsType, device) => {
    const quota = 64 * MiB;
    const { volume, staging } = await stage(`quota-${medium}`, {
      source: `local://${source}`,
      cacheQuota: '64Mi',
      cacheMedium: medium,
      readOnly: 'true',
    });
    const [client] = await recordedClients(driver.stateDir);
    const cacheDir = client?.cacheDir ?? '';
    const probe = new PathProbe(new ExecaRunner());
    let peak = 0;
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        const usage = await probe.usage(cacheDir);
        if (usage) peak = Math.max(peak, usage.totalBytes - usage.freeBytes);
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    })();
    try {
      for (let i = 0; i < 3; i += 1) {
        expect(await sha256File(join(staging, `part-${i}.bin`))).toBe(
          await sha256File(join(source, `part-${i}.bin`)),
        );
      }
      const mount = (await MountTable.read()).at(cacheDir);
      expect(mount).toMatchObject({ fsType, source: expect.stringMatching(device) });
      // The filesystem under the cache is the quota's size: that, not the engine, bounds it.
      const fs = await statfs(cacheDir);
      const size = fs.blocks * fs.bsize;
      if (medium === 'MEM') {
        expect(size).toBe(quota);
      } else {
        // ext4 keeps its journal and inode tables out of the size it reports.
        expect(size).toBeLessThanOrEqual(quota);
        expect(size).toBeGreaterThan(quota * 0.8);
      }
      if (medium !== 'MEM') {
        // The image's blocks are reserved up front: the disk never gives the cache more than this.
        const image = await stat(cacheImage(cacheDir));
        expect(image.size).toBe(quota);
        expect(image.blocks * 512).toBeGreaterThanOrEqual(quota);
        expect(image.mode & 0o777).toBe(0o600);
      }
    } finally {
      sampling = false;
      await sampler;
      await driver.client.node.NodeUnstageVolume({
        volume_id: volume.volume_id,
        staging_target_path: staging,
      });
    }
    process.stdout.write(
      `quota: read ${3 * 48} MiB through a 64 MiB ${medium} cache (${fsType}); peak cache use ${(peak / MiB).toFixed(1)} MiB\n`,
    );
    expect(peak).toBeGreaterThan(0);
    expect(peak).toBeLessThanOrEqual(quota);
    expect((await MountTable.read()).at(cacheDir)).toBeUndefined();
  },
);

it('refuses a MEM cache the node cannot hold with RESOURCE_EXHAUSTED, leaving nothing', async () => {
  const first = await stage('first', { source: `local://${source}`, cacheQuota: '64Mi' });
  const other = join(driver.work, 'other');
  await mkdir(other);
  await expect(stage('second', { source: `local://${other}`, cacheQuota: '64Mi' })).rejects.toEqual(
    expect.objectContaining({
      code: grpc.status.RESOURCE_EXHAUSTED,
      details: expect.stringMatching(
        /MEM cache of 64Mi for dataset ds-\w+ does not fit: this node allows 100Mi \(--mem-cache-limit\) and 64Mi is in use by running clients and kept caches; use a smaller cacheQuota or cacheMedium SSD/,
      ),
    }),
  );
  expect(await recordedClients(driver.stateDir)).toHaveLength(1);
  // The same data on SSD needs no memory budget.
  const ssd = await stage('second-on-ssd', {
    source: `local://${other}`,
    cacheQuota: '64Mi',
    cacheMedium: 'SSD',
  });
  expect(await recordedClients(driver.stateDir)).toHaveLength(2);
  for (const { volume, staging } of [first, ssd]) {
    await driver.client.node.NodeUnstageVolume({
      volume_id: volume.volume_id,
      staging_target_path: staging,
    });
  }
  expect((await MountTable.read()).under(driver.work)).toEqual([]);
  expect((await MountTable.read()).under(driver.memCacheDir)).toEqual([]);
});

it('refuses an SSD cache whose disk cannot hold the quota with RESOURCE_EXHAUSTED, leaving nothing', async () => {
  const small = join(driver.work, 'small-disk');
  await mkdir(small);
  await execa('mount', ['-t', 'tmpfs', '-o', 'size=32m', 'dcsi-test-small-disk', small]);
  try {
    await expect(
      stage('too-big', {
        source: `local://${source}`,
        cacheMedium: 'SSD',
        cachePath: small,
        cacheQuota: '64Mi',
      }),
    ).rejects.toEqual(
      expect.objectContaining({
        code: grpc.status.RESOURCE_EXHAUSTED,
        details: expect.stringMatching(
          /cannot hold cacheQuota 67108864 bytes; free disk space or lower cacheQuota/,
        ),
      }),
    );
    expect(await readdir(small, { recursive: true })).toEqual(
      expect.not.arrayContaining([expect.stringMatching(/\.img$/)]),
    );
    expect(await recordedClients(driver.stateDir)).toEqual([]);
    expect((await MountTable.read()).under(driver.work).map((m) => m.mountPoint)).toEqual([small]);
  } finally {
    await execa('umount', [small]);
  }
});
