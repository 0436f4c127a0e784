/**
 * Failover: a crashed cache client is replaced and every bind repaired while a reader streams; a
 * crashed driver does not interrupt readers and adopts its clients; a crash at any step of the
 * node calls is healed by kubelet's retry; a storm of concurrent calls leaves a consistent node.
 */
import { mkdir, open, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { execa } from 'execa';
import type { CsiClient } from '../../src/csi/client.js';
import { LoopbackServer } from '../../src/demo/loopback-server.js';
import { MountTable } from '../../src/kernel/mountinfo.js';
import { isSameProcess, sleep } from '../../src/kernel/proc.js';
import { recordedClients } from '../helpers/cleanup.js';
import { DriverProcess } from '../helpers/driver-process.js';
import { Kubelet } from '../helpers/kubelet.js';
import { mountCapability, startTestDriver } from '../helpers/driver.js';
import { sha256File, writeRandomFile, writeTree } from '../helpers/files.js';
import { pidsWithArgs } from '../helpers/processes.js';
import { streamWithRetry } from '../helpers/reader.js';
import { until } from '../helpers/wait.js';

const cap = mountCapability('MULTI_NODE_MULTI_WRITER');
const MiB = 1 << 20;

interface Volume {
  volume_id: string;
  volume_context: Record<string, string>;
}

function paths(work: string) {
  const kubelet = join(work, 'kubelet');
  return {
    kubelet,
    staging: (id: string) => join(kubelet, 'plugins', 'staging', id),
    target: (pod: string) => join(kubelet, 'pods', pod, 'volumes', 'data'),
  };
}

async function createVolume(
  client: CsiClient,
  name: string,
  parameters: Record<string, string>,
): Promise<Volume> {
  const { volume } = await client.controller.CreateVolume({
    name,
    volume_capabilities: [cap],
    parameters,
  });
  if (!volume) throw new Error('no volume');
  return volume;
}

/** A slow remote so that a read of a big file lasts long enough to crash things under it. */
async function slowServer(work: string, sizeMiB: number, rate: string) {
  const data = join(work, 'remote');
  await mkdir(data, { recursive: true });
  await writeRandomFile(join(data, 'big.bin'), sizeMiB * MiB);
  const server = await LoopbackServer.start(data, 'webdav', ['--bwlimit', rate]);
  return { data, server, digest: await sha256File(join(data, 'big.bin')) };
}

const report = (line: string) => process.stdout.write(`failover: ${line}\n`);

it('replaces a kill -9ed client and repairs every bind within 5 s while a reader streams', async () => {
  const driver = await startTestDriver();
  let remote: Awaited<ReturnType<typeof slowServer>> | undefined;
  try {
    remote = await slowServer(driver.work, 96, '32M');
    const kubelet = new Kubelet(driver.work, () => driver.client);
    const { staging, target } = paths(driver.work);
    const volume = await createVolume(driver.client, 'failover', { source: remote.server.url() });
    await kubelet.run(volume, ['reader', 'other'], true);
    const [client] = await recordedClients(driver.stateDir);
    if (!client) throw new Error('no client');
    let killedAt = 0;
    const reading = streamWithRetry(join(target('reader'), 'big.bin'), {
      onProgress: (bytes) => {
        if (killedAt === 0 && bytes > 16 * MiB) {
          killedAt = Date.now();
          process.kill(client.pid, 'SIGKILL');
        }
      },
    });
    // The other pod's target serves data again: time from the kill to a successful read.
    await until(
      'the reader to pass 16 MiB (and the kill)',
      async () => (killedAt !== 0 ? true : undefined),
      30_000,
      5,
    );
    let servedAgainMs = -1;
    const probe = Buffer.alloc(64 * 1024);
    while (Date.now() - killedAt < 10_000) {
      const ok = await open(join(target('other'), 'big.bin'), 'r')
        .then(async (handle) => {
          try {
            return (await handle.read(probe, 0, probe.length, 0)).bytesRead === probe.length;
          } finally {
            await handle.close();
          }
        })
        .catch(() => false);
      if (ok) {
        servedAgainMs = Date.now() - killedAt;
        break;
      }
      await sleep(10);
    }
    const result = await reading;
    const [restarted] = await recordedClients(driver.stateDir);
    report(
      `client kill -9: target served again after ${servedAgainMs} ms; reader outage ${result.longestOutageMs} ms (${result.errors.join(',')}); new pid ${restarted?.pid} (was ${client.pid})`,
    );
    expect(servedAgainMs).toBeGreaterThanOrEqual(0);
    expect(servedAgainMs).toBeLessThanOrEqual(5000);
    expect(result.errors.length).toBeGreaterThan(0);
    expect(result.sha256).toBe(remote.digest);
    expect(restarted?.pid).not.toBe(client.pid);
    expect(await isSameProcess(client.pid, client.startTime)).toBe(false);
    // Each path has one live mount again: stale ones were detached, not stacked.
    const table = await MountTable.read();
    for (const path of [staging(volume.volume_id), target('reader'), target('other')]) {
      expect(table.countAt(path)).toBe(1);
    }
    const stats = await driver.client.node.NodeGetVolumeStats({
      volume_id: volume.volume_id,
      volume_path: target('reader'),
    });
    expect(stats.volume_condition?.abnormal).toBe(false);
    await kubelet.stop(volume.volume_id, ['reader', 'other']);
    expect((await MountTable.read()).under(driver.work)).toEqual([]);
    expect(await recordedClients(driver.stateDir)).toEqual([]);
  } finally {
    await driver.dispose();
    await remote?.server.stop();
  }
});

it('reports a hung client as abnormal, then kills and replaces it', async () => {
  const driver = await startTestDriver();
  const source = join(driver.work, 'source');
  try {
    await mkdir(source);
    await writeTree(source, 2, 5);
    const kubelet = new Kubelet(driver.work, () => driver.client);
    const { target } = paths(driver.work);
    const volume = await createVolume(driver.client, 'hung', { source: `local://${source}` });
    await kubelet.run(volume, ['pod']);
    const [client] = await recordedClients(driver.stateDir);
    if (!client) throw new Error('no client');
    process.kill(client.pid, 'SIGSTOP');
    const stoppedAt = Date.now();
    let abnormal: { abnormal: boolean; message: string } | null | undefined;
    while (Date.now() - stoppedAt < 10_000) {
      const stats = await driver.client.node.NodeGetVolumeStats({
        volume_id: volume.volume_id,
        volume_path: target('pod'),
      });
      if (stats.volume_condition?.abnormal) {
        abnormal = stats.volume_condition;
        break;
      }
    }
    expect(abnormal?.message).toMatch(/does not answer|did not answer/);
    let replacedMs = -1;
    while (Date.now() - stoppedAt < 20_000) {
      const [now] = await recordedClients(driver.stateDir);
      if (now && now.pid !== client.pid) {
        const stats = await driver.client.node.NodeGetVolumeStats({
          volume_id: volume.volume_id,
          volume_path: target('pod'),
        });
        if (!stats.volume_condition?.abnormal) {
          replacedMs = Date.now() - stoppedAt;
          break;
        }
      }
      await sleep(50);
    }
    report(`hung client (SIGSTOP): reported abnormal, replaced and healthy after ${replacedMs} ms`);
    expect(replacedMs).toBeGreaterThan(0);
    expect(await isSameProcess(client.pid, client.startTime)).toBe(false);
    expect(
      (await readFile(join(target('pod'), 'd1', 'f3.txt'), 'utf8')).startsWith('dir 1 file 3'),
    ).toBe(true);
    await kubelet.stop(volume.volume_id, ['pod']);
  } finally {
    await driver.dispose();
  }
});

it('keeps a reader going through a kill -9 of the driver; the new driver adopts the client', async () => {
  const driver = await DriverProcess.create();
  let remote: Awaited<ReturnType<typeof slowServer>> | undefined;
  try {
    remote = await slowServer(driver.work, 64, '12M');
    await driver.start();
    const kubelet = new Kubelet(driver.work, () => driver.client);
    const { staging, target } = paths(driver.work);
    const volume = await createVolume(driver.client, 'driver-crash', {
      source: remote.server.url(),
    });
    await kubelet.run(volume, ['reader'], true);
    const [client] = await recordedClients(driver.stateDir);
    // Recorded before the crash: the adoption below compares the recorded client with it.
    if (!client) throw new Error('no client recorded');
    let crashed: Promise<void> | undefined;
    let latest = 0;
    let atKill = 0;
    let atRestart = 0;
    const result = await streamWithRetry(join(target('reader'), 'big.bin'), {
      onProgress: (bytes) => {
        latest = bytes;
        if (crashed || bytes <= 8 * MiB) return;
        atKill = bytes;
        crashed = driver
          .crash()
          .then(() => driver.start())
          .then(() => {
            atRestart = latest;
          });
      },
    });
    await crashed;
    // The kill landed mid-read and the reader went on after the new driver was up.
    expect(atKill).toBeGreaterThan(0);
    expect(atRestart).toBeLessThan(result.bytes);
    const [adopted] = await recordedClients(driver.stateDir);
    report(
      `driver kill -9 during a read: reader errors ${result.errors.length}, client pid ${client.pid} adopted as ${adopted?.pid}`,
    );
    expect(result.errors).toEqual([]);
    expect(result.sha256).toBe(remote.digest);
    expect(adopted).toEqual(client);
    expect(
      await driver.client.node.NodeUnpublishVolume({
        volume_id: volume.volume_id,
        target_path: target('reader'),
      }),
    ).toEqual({});
    expect(
      await driver.client.node.NodeUnstageVolume({
        volume_id: volume.volume_id,
        staging_target_path: staging(volume.volume_id),
      }),
    ).toEqual({});
    expect((await MountTable.read()).under(driver.work)).toEqual([]);
    expect(await recordedClients(driver.stateDir)).toEqual([]);
    expect(await isSameProcess(client.pid, client.startTime)).toBe(false);
  } finally {
    await driver.dispose();
    await remote?.server.stop();
  }
});

describe('a driver killed at each step, then retried by kubelet', () => {
  const points = [
    'stage:client-ready',
    'stage:bound',
    'publish:bound',
    'unpublish:journaled',
    'unstage:journaled',
    'unstage:detached',
  ];

  it.each(points)('%s', async (point) => {
    const driver = await DriverProcess.create();
    const source = join(driver.work, 'source');
    try {
      await mkdir(source);
      await writeTree(source, 1, 3);
      await driver.start(point);
      const { staging, target } = paths(driver.work);
      const volume = await createVolume(driver.client, `fault-${point}`, {
        source: `local://${source}`,
      });
      const steps: [string, () => Promise<unknown>][] = [
        [
          'stage',
          () =>
            driver.client.node.NodeStageVolume({
              volume_id: volume.volume_id,
              staging_target_path: staging(volume.volume_id),
              volume_capability: cap,
              volume_context: volume.volume_context,
            }),
        ],
        [
          'publish',
          () =>
            driver.client.node.NodePublishVolume({
              volume_id: volume.volume_id,
              staging_target_path: staging(volume.volume_id),
              target_path: target('pod'),
              volume_capability: cap,
            }),
        ],
        [
          'read',
          async () =>
            expect(await readFile(join(target('pod'), 'd0', 'f1.txt'), 'utf8')).toMatch(
              /^dir 0 file 1/,
            ),
        ],
        [
          'unpublish',
          () =>
            driver.client.node.NodeUnpublishVolume({
              volume_id: volume.volume_id,
              target_path: target('pod'),
            }),
        ],
        [
          'unstage',
          () =>
            driver.client.node.NodeUnstageVolume({
              volume_id: volume.volume_id,
              staging_target_path: staging(volume.volume_id),
            }),
        ],
      ];
      let crashes = 0;
      for (const [name, step] of steps) {
        try {
          await step();
        } catch (err) {
          // The step and the error together, so that an unexpected failure tells what it was.
          expect(`${name}: ${String(err)}`).toMatch(
            new RegExp(`^${point.split(':')[0]}: Error: 14 UNAVAILABLE`),
          );
          expect(await driver.exited()).toBe(137);
          crashes += 1;
          await driver.start();
          await step(); // kubelet's retry
        }
      }
      expect(crashes).toBe(1);
      await driver.client.controller.DeleteVolume({ volume_id: volume.volume_id });
      expect((await MountTable.read()).under(driver.work)).toEqual([]);
      expect(await pidsWithArgs('rclone', 'mount', driver.stateDir)).toEqual([]);
      const journal = JSON.parse(await readFile(join(driver.stateDir, 'journal.json'), 'utf8')) as {
        datasets: object;
        volumes: object;
      };
      expect(journal).toMatchObject({ datasets: {}, volumes: {} });
    } finally {
      await driver.dispose();
    }
  });
});

it('stays consistent under 200 concurrent calls over 20 volumes of 3 datasets', async () => {
  const driver = await startTestDriver();
  try {
    const { staging, target, kubelet } = paths(driver.work);
    const sources = ['a', 'b', 'c'].map((name) => join(driver.work, 'sources', name));
    for (const source of sources) {
      await mkdir(source, { recursive: true });
      await writeTree(source, 1, 2);
    }
    const volumes: Volume[] = [];
    for (let i = 0; i < 20; i += 1) {
      volumes.push(
        await createVolume(driver.client, `storm-${i}`, { source: `local://${sources[i % 3]}` }),
      );
    }
    let calls = 0;
    let aborted = 0;
    /** As kubelet does: retry while the driver says ABORTED. */
    const call = async (rpc: () => Promise<unknown>) => {
      calls += 1;
      for (;;) {
        try {
          return await rpc();
        } catch (err) {
          if ((err as grpc.ServiceError).code !== grpc.status.ABORTED) throw err;
          aborted += 1;
          await sleep(5 + Math.random() * 20);
        }
      }
    };
    const stage = (v: Volume) => () =>
      driver.client.node.NodeStageVolume({
        volume_id: v.volume_id,
        staging_target_path: staging(v.volume_id),
        volume_capability: cap,
        volume_context: v.volume_context,
      });
    const publish = (v: Volume, pod: string) => () =>
      driver.client.node.NodePublishVolume({
        volume_id: v.volume_id,
        staging_target_path: staging(v.volume_id),
        target_path: target(`${v.volume_id}-${pod}`),
        volume_capability: cap,
      });
    const unpublish = (v: Volume, pod: string) => () =>
      driver.client.node.NodeUnpublishVolume({
        volume_id: v.volume_id,
        target_path: target(`${v.volume_id}-${pod}`),
      });
    const unstage = (v: Volume) => () =>
      driver.client.node.NodeUnstageVolume({
        volume_id: v.volume_id,
        staging_target_path: staging(v.volume_id),
      });

    // Every call of a phase at once, duplicates included (kubelet retries overlap too).
    await Promise.all(volumes.flatMap((v) => [call(stage(v)), call(stage(v))]));
    expect(await recordedClients(driver.stateDir)).toHaveLength(3);
    expect(await pidsWithArgs('rclone', 'mount', driver.stateDir)).toHaveLength(3);
    await Promise.all(
      volumes.flatMap((v) => [call(publish(v, 'a')), call(publish(v, 'b')), call(publish(v, 'a'))]),
    );
    const table = await MountTable.read();
    expect(table.under(join(kubelet, 'pods'))).toHaveLength(40);
    expect(table.under(join(kubelet, 'plugins'))).toHaveLength(20);
    await Promise.all(
      volumes.flatMap((v) => [
        call(unpublish(v, 'a')),
        call(unpublish(v, 'b')),
        call(unpublish(v, 'a')),
      ]),
    );
    await Promise.all(volumes.flatMap((v) => [call(unstage(v)), call(unstage(v))]));
    report(`storm: ${calls} calls, ${aborted} ABORTED answers retried`);
    expect((await MountTable.read()).under(driver.work)).toEqual([]);
    expect(await recordedClients(driver.stateDir)).toEqual([]);
    expect(await pidsWithArgs('rclone', 'mount', driver.stateDir)).toEqual([]);
  } finally {
    await driver.dispose();
  }
});

it('answers Probe not-ready until the node state is loaded, and ready once it is', async () => {
  const driver = await DriverProcess.create();
  try {
    // The journal is a FIFO: loading it blocks until the test writes it, holding the driver in
    // the window between binding its socket and knowing its node state.
    await mkdir(driver.stateDir, { recursive: true });
    const journal = join(driver.stateDir, 'journal.json');
    await execa('mkfifo', ['-m', '0600', journal]);
    const starting = driver.start();
    const answers: boolean[] = [];
    for (let i = 0; i < 200 && answers.length < 3; i += 1) {
      const probe = await driver.client.identity
        .Probe({}, { timeoutMs: 500 })
        .catch(() => undefined);
      if (probe) answers.push(probe.ready?.value === true);
      await sleep(25);
    }
    expect(answers).toEqual([false, false, false]);
    const writer = await open(journal, 'w');
    await writer.write('{"version":1,"datasets":{},"volumes":{}}\n');
    await writer.close();
    await starting;
    expect((await driver.client.identity.Probe({})).ready?.value).toBe(true);
  } finally {
    await driver.dispose();
  }
});
