/**
 * Replacing the node plugin's pod (a DaemonSet update) kills every process of its container. The
 * containers are modelled by cgroups, and the pod replacement by cgroup.kill, while a pod streams
 * a file through the driver. Without the launcher the cache clients die with the driver's
 * container and the reader sees errors until the new driver restarts them; with the launcher (its
 * own container) they live on, the reader sees nothing, and the new driver adopts them.
 */
import { access, mkdir } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { MountTable } from '../../src/kernel/mountinfo.js';
import { isSameProcess, sleep } from '../../src/kernel/proc.js';
import { ContainerCgroup } from '../helpers/cgroup.js';
import { recordedClients } from '../helpers/cleanup.js';
import { DriverProcess } from '../helpers/driver-process.js';
import { mountCapability } from '../helpers/driver.js';
import { Kubelet } from '../helpers/kubelet.js';
import { streamWithRetry } from '../helpers/reader.js';
import { LoopbackServer } from '../../src/demo/loopback-server.js';
import { sha256File, writeRandomFile } from '../helpers/files.js';

const MiB = 1 << 20;
const MAIN = fileURLToPath(new URL('../../dist/main.js', import.meta.url));
const cap = mountCapability('MULTI_NODE_READER_ONLY');
const report = (line: string) => process.stdout.write(`upgrade: ${line}\n`);

/** Wrapped: an execa child is a thenable, which an async function would wait for. */
async function startLauncher(
  socket: string,
  cgroup: ContainerCgroup,
): Promise<{ child: ResultPromise }> {
  const child = execa('node', [MAIN, 'launcher', '--socket', socket], {
    reject: false,
    stdout: 'ignore',
    stderr: 'ignore',
  });
  await cgroup.add(child.pid as number);
  for (let i = 0; i < 400; i += 1) {
    if (
      await access(socket).then(
        () => true,
        () => false,
      )
    )
      return { child };
    await sleep(25);
  }
  throw new Error('launcher did not start');
}

/** Stage and publish, stream the file, replace the driver's "pod" mid-read; returns what the reader saw. */
async function replacePodDuringRead(withLauncher: boolean) {
  const driver = await DriverProcess.create();
  // Set up inside the cleanup scope: what a failed step had created is removed all the same.
  let server: LoopbackServer | undefined;
  let launcherCgroup: ContainerCgroup | undefined;
  const cgroups: ContainerCgroup[] = [];
  let launcher: ResultPromise | undefined;
  try {
    const data = join(driver.work, 'remote');
    await mkdir(data);
    await writeRandomFile(join(data, 'big.bin'), 48 * MiB);
    const digest = await sha256File(join(data, 'big.bin'));
    server = await LoopbackServer.start(data, 'webdav', ['--bwlimit', '8M']);
    launcherCgroup = await ContainerCgroup.create('launcher');
    cgroups.push(await ContainerCgroup.create('driver'));
    cgroups.push(await ContainerCgroup.create('driver-new'));
    if (withLauncher) {
      const socket = join(driver.work, 'run', 'launcher.sock');
      ({ child: launcher } = await startLauncher(socket, launcherCgroup));
      driver.extraArgs = [`--launcher-socket=${socket}`];
    }
    await driver.start();
    await cgroups[0]?.add(driver.pid as number);
    const kubelet = new Kubelet(driver.work, () => driver.client, cap);
    const { volume } = await driver.client.controller.CreateVolume({
      name: 'upgrade',
      volume_capabilities: [cap],
      parameters: { source: server.url() },
    });
    if (!volume) throw new Error('no volume');
    await kubelet.run(volume, ['reader'], true);
    const [client] = await recordedClients(driver.stateDir);
    if (!client) throw new Error('no client');

    let replaced: Promise<void> | undefined;
    let replacedAt = 0;
    let latest = 0;
    let atRestart = 0;
    const result = await streamWithRetry(join(kubelet.target('reader'), 'big.bin'), {
      onProgress: (bytes) => {
        latest = bytes;
        if (replaced || bytes < 8 * MiB) return;
        replaced = (async () => {
          replacedAt = Date.now();
          await cgroups[0]?.kill();
          await driver.exited();
          // The new pod: a new driver in a new container on the same node state.
          await driver.start();
          await cgroups[1]?.add(driver.pid as number);
          atRestart = latest;
        })();
      },
    });
    await replaced;
    // The kill landed mid-read: the reader still had bytes to read when the new driver was up.
    expect(replacedAt).toBeGreaterThan(0);
    expect(atRestart).toBeLessThan(result.bytes);
    const clientSurvived = await isSameProcess(client.pid, client.startTime);
    const [after] = await recordedClients(driver.stateDir);
    report(
      `${withLauncher ? 'with' : 'without'} launcher: client ${clientSurvived ? 'survived' : 'died'} (pid ${client.pid} -> ${after?.pid}), reader errors ${result.errors.length}, longest outage ${result.longestOutageMs} ms, new driver ready ${Date.now() - replacedAt} ms after the kill`,
    );
    expect(result.sha256).toBe(digest);
    await kubelet.stop(volume.volume_id, ['reader']);
    expect((await MountTable.read()).under(driver.work)).toEqual([]);
    expect(await recordedClients(driver.stateDir)).toEqual([]);
    return { clientSurvived, errors: result.errors, adoptedPid: after?.pid, pid: client.pid };
  } finally {
    await driver.dispose();
    for (const cgroup of cgroups) await cgroup.remove();
    launcher?.kill('SIGTERM');
    await launcher;
    await launcherCgroup?.remove();
    await server?.stop();
  }
}

it('without the launcher, clients die with the driver container (and are restarted)', async () => {
  const seen = await replacePodDuringRead(false);
  expect(seen.clientSurvived).toBe(false);
  expect(seen.errors.length).toBeGreaterThan(0);
  // A new client was recorded (not none), and it is another process.
  expect(seen.adoptedPid).toEqual(expect.any(Number));
  expect(seen.adoptedPid).not.toBe(seen.pid);
});

it('with the launcher, clients outlive the driver container: no reader error, same client adopted', async () => {
  const seen = await replacePodDuringRead(true);
  expect(seen.clientSurvived).toBe(true);
  expect(seen.errors).toEqual([]);
  expect(seen.adoptedPid).toBe(seen.pid);
});
