/**
 * Persistent volumes of one S3 bucket staged with different node-stage secrets (one per tenant, as
 * csi-provisioner templates them) never share a client: the remote decides what each one reads.
 */
import { mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { S3Server } from '../../src/demo/s3-server.js';
import { MountTable } from '../../src/kernel/mountinfo.js';
import { recordedClients } from '../helpers/cleanup.js';
import { mountCapability, startTestDriver, type TestDriver } from '../helpers/driver.js';
import { Kubelet } from '../helpers/kubelet.js';
import { until } from '../helpers/wait.js';

const cap = mountCapability('MULTI_NODE_MULTI_WRITER');
let driver: TestDriver;
let kubelet: Kubelet;
let s3: S3Server;
const tenantB = { accessKeyId: 'TENANTB', secretAccessKey: `b-${Math.random().toString(36)}` };

beforeAll(async () => {
  driver = await startTestDriver();
  kubelet = new Kubelet(driver.work, () => driver.client, cap);
  const store = join(driver.work, 's3');
  await mkdir(store);
  s3 = await S3Server.start(store, ['shared'], [tenantB]);
});

afterAll(async () => {
  await s3?.stop();
  await driver?.dispose();
});

const secretsOf = (keys: { accessKeyId: string; secretAccessKey: string }) => ({
  ...s3.secrets(),
  ...keys,
});

for (const engine of ['rclone', 's3fs']) {
  it(`${engine}: other credentials get their own client, equal ones share, refused ones fail the stage`, async () => {
    const { controller } = driver.client;
    const ids: string[] = [];
    const pods: Record<string, string[]> = {};
    const make = async (name: string) => {
      const { volume_id, volume_context } = await controller
        .CreateVolume({
          name: `${engine}-${name}`,
          volume_capabilities: [cap],
          parameters: { source: 's3://shared/data', engine },
        })
        .then((r) => r.volume ?? Promise.reject(new Error('no volume')));
      ids.push(volume_id);
      pods[volume_id] = [];
      return { volume_id, volume_context };
    };
    const publish = async (volumeId: string, pod: string) => {
      await kubelet.publish(volumeId, pod);
      pods[volumeId]?.push(pod);
    };
    try {
      // Tenant A writes through its volume; the file reaches the server.
      const a = await make('tenant-a');
      await kubelet.stage(a, s3.secrets());
      await publish(a.volume_id, `${engine}-a`);
      await writeFile(join(kubelet.target(`${engine}-a`), 'from-a.txt'), 'tenant a\n');
      await until('the upload of from-a.txt', async () =>
        (await s3.list('shared/data')).includes('from-a.txt') ? true : undefined,
      );
      expect(await recordedClients(driver.stateDir)).toHaveLength(1);

      // Keys the server refuses (an unknown key id; the front before s3rver also verifies V4
      // signatures): the stage fails with the server's refusal, no client is left, nothing of
      // A's is reachable.
      const intruder = await make('intruder');
      const refused = await kubelet
        .stage(intruder, secretsOf({ accessKeyId: 'INTRUDER', secretAccessKey: 'guessed' }))
        .then(
          () => undefined,
          (err: { code: number; details: string }) => err,
        );
      expect(refused?.details).toMatch(/InvalidAccessKeyId|invalid credentials/);
      expect(await recordedClients(driver.stateDir)).toHaveLength(1);
      expect((await MountTable.read()).at(kubelet.staging(intruder.volume_id))).toBeUndefined();

      // Tenant B's own valid keys: a client of its own, which reads what the server gives it.
      const b = await make('tenant-b');
      await kubelet.stage(b, secretsOf(tenantB));
      await publish(b.volume_id, `${engine}-b`);
      expect(await readFile(join(kubelet.target(`${engine}-b`), 'from-a.txt'), 'utf8')).toBe(
        'tenant a\n',
      );
      const twoClients = await recordedClients(driver.stateDir);
      expect(twoClients).toHaveLength(2);

      // A second volume with A's exact secrets shares A's client.
      const a2 = await make('tenant-a-again');
      await kubelet.stage(a2, s3.secrets());
      expect(await recordedClients(driver.stateDir)).toEqual(twoClients);

      // A repeated stage of A after its secret changed (rotation) keeps the client it has.
      await kubelet.stage(a, secretsOf(tenantB));
      expect(await recordedClients(driver.stateDir)).toEqual(twoClients);

      // The credentials enter the key only as a digest under the node's own key (0600).
      const journal = await readFile(join(driver.stateDir, 'journal.json'), 'utf8');
      expect(journal).not.toContain(tenantB.secretAccessKey);
      expect((await stat(join(driver.stateDir, 'node.key'))).mode & 0o077).toBe(0);
    } finally {
      for (const id of ids) {
        const staged = (await MountTable.read()).at(kubelet.staging(id));
        if (staged) await kubelet.stop(id, pods[id] ?? []);
        await controller.DeleteVolume({ volume_id: id });
      }
    }
    expect(await recordedClients(driver.stateDir)).toEqual([]);
    expect((await MountTable.read()).under(driver.work)).toEqual([]);
    expect(await readdir(join(driver.stateDir, 'datasets')).catch(() => [])).toEqual([]);
    expect(await driver.log()).not.toContain(tenantB.secretAccessKey);
  });
}
