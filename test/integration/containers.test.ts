/**
 * The image built from the Dockerfile, run the way a cluster runs it: the node plugin and the
 * clients' launcher as two podman containers set up from the rendered chart's DaemonSets
 * (privileges, host PID/network, hostPath volumes and their propagation, env, args), with this test
 * playing kubelet against the containerized driver's socket. See docs/containers.md.
 */
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { execa } from 'execa';
import { CsiClient } from '../../src/csi/client.js';
import { LoopbackServer } from '../../src/demo/loopback-server.js';
import { MountTable } from '../../src/kernel/mountinfo.js';
import { isSameProcess, processStartTime } from '../../src/kernel/proc.js';
import { cleanupUnder, recordedClients, type RecordedClient } from '../helpers/cleanup.js';
import {
  argValue,
  buildImage,
  containerLogs,
  containerPid,
  containersLabelled,
  hostPathIn,
  manifestContainer,
  podman,
  PODMAN_RUN_LIMITS,
  podmanAvailable,
  podmanRunArgs,
  removeContainer,
  runContainer,
  type DaemonSetContainer,
  type Node,
} from '../helpers/containers.js';
import { mountCapability, startTestDriver, type TestDriver } from '../helpers/driver.js';
import {
  pathExists,
  sha256File,
  treeDigest,
  writeRandomFile,
  writeTree,
} from '../helpers/files.js';
import { streamWithRetry, type StreamResult } from '../helpers/reader.js';
import { until, untilHolds } from '../helpers/wait.js';

const MiB = 1 << 20;
const report = (line: string) => process.stdout.write(`containers: ${line}\n`);
const available = await podmanAvailable();
if (!available && !process.env.CI) {
  process.stderr.write(
    '\n*** containers.test.ts SKIPPED: podman is not installed, so the image was NOT built and the ' +
      'driver was NOT run in containers. Install it (apt-get install podman runc debootstrap) to ' +
      'run this test; in CI (CI set) it fails instead of skipping. ***\n\n',
  );
}
const suite = available || process.env.CI ? describe : describe.skip;

const RO = mountCapability('MULTI_NODE_READER_ONLY');
const RW = mountCapability('MULTI_NODE_MULTI_WRITER');
const code = (status: grpc.status) => expect.objectContaining({ code: status });

suite('the image, run as the DaemonSets say', () => {
  let work: string;
  let node: Node;
  let nodeSpec: DaemonSetContainer;
  let launcherSpec: DaemonSetContainer;
  let image: string;
  let controller: TestDriver | undefined;
  const servers: LoopbackServer[] = [];
  let roServer: LoopbackServer;
  let rwServer: LoopbackServer;
  let client: CsiClient | undefined;
  let nodeId: string | undefined;
  let launcherId: string | undefined;
  let stateDir: string;
  let socketPath: string;
  let launcherSocket: string;
  const sharedMounts: string[] = [];
  const mainProcesses: { pid: number; startTime: string }[] = [];
  // Should a DaemonSet leave the host network: a pod network of its own, from which the host's
  // loopback (the test's servers) is 10.0.2.2.
  const podNetwork = 'slirp4netns:allow_host_loopback=true';
  const remoteHost = () => (nodeSpec.pod.hostNetwork ? '127.0.0.1' : '10.0.2.2');
  let bigDigest: string;
  let treeExpected: Record<string, string>;

  // kubelet's path layout, as the driver sees it (the container's /var/lib/kubelet).
  const driverName = () => argValue(nodeSpec, 'driver-name');
  const kubeletDir = () => argValue(nodeSpec, 'kubelet-dir');
  const staging = (volumeId: string) =>
    join(
      kubeletDir(),
      'plugins/kubernetes.io/csi',
      driverName(),
      createHash('sha256').update(volumeId).digest('hex'),
      'globalmount',
    );
  const target = (pod: string) =>
    join(kubeletDir(), 'pods', pod, 'volumes/kubernetes.io~csi/data/mount');
  const onHost = (path: string) => hostPathIn(nodeSpec, node, path);
  const csi = () => {
    if (!client) throw new Error('no driver client');
    return client;
  };

  async function startLauncher(): Promise<void> {
    const id = await runContainer(
      await podmanRunArgs(launcherSpec, node, image, `${node.nodeName}-clients-${Date.now()}`),
    );
    launcherId = id;
    await recordMain(id);
    await until('the launcher socket', async () =>
      (await pathExists(launcherSocket)) && (await containerPid(id)) > 0 ? true : undefined,
    );
  }

  async function startNodePlugin(): Promise<number> {
    const started = Date.now();
    const id = await runContainer(
      await podmanRunArgs(nodeSpec, node, image, `${node.nodeName}-node-${Date.now()}`),
    );
    nodeId = id;
    await recordMain(id);
    client?.close();
    client = new CsiClient(`unix://${socketPath}`);
    await until(
      'the containerized driver to be ready',
      async () => {
        try {
          return (await csi().identity.Probe({}, { timeoutMs: 1000 })).ready?.value
            ? true
            : undefined;
        } catch {
          return undefined;
        }
      },
      60_000,
      50,
    ).catch(async (err: unknown) => {
      throw new Error(`${String(err)}; driver log:\n${await containerLogs(id)}`);
    });
    return Date.now() - started;
  }

  async function createVolume(name: string, parameters: Record<string, string>, cap = RO) {
    if (!controller) throw new Error('no controller');
    const { volume } = await controller.client.controller.CreateVolume({
      name,
      volume_capabilities: [cap],
      parameters,
    });
    if (!volume) throw new Error(`CreateVolume ${name} returned no volume`);
    return volume;
  }

  // kubelet creates the staging directory and a target's parent; the driver the target itself.
  async function stage(
    volume: { volume_id: string; volume_context: Record<string, string> },
    cap = RO,
  ) {
    await mkdir(onHost(staging(volume.volume_id)), { recursive: true });
    await csi().node.NodeStageVolume({
      volume_id: volume.volume_id,
      staging_target_path: staging(volume.volume_id),
      volume_capability: cap,
      volume_context: volume.volume_context,
    });
  }

  async function publish(volumeId: string, pod: string, readonly: boolean, cap = RO) {
    await mkdir(join(onHost(target(pod)), '..'), { recursive: true });
    await csi().node.NodePublishVolume({
      volume_id: volumeId,
      staging_target_path: staging(volumeId),
      target_path: target(pod),
      volume_capability: cap,
      readonly,
    });
  }

  async function unpublish(volumeId: string, pod: string) {
    await csi().node.NodeUnpublishVolume({ volume_id: volumeId, target_path: target(pod) });
  }

  async function unstage(volumeId: string) {
    await csi().node.NodeUnstageVolume({
      volume_id: volumeId,
      staging_target_path: staging(volumeId),
    });
  }

  /** The host PIDs of the processes in a container's cgroup (the launcher's clients, say). */
  async function inContainer(pid: number, containerId: string): Promise<boolean> {
    try {
      return (await readFile(`/proc/${pid}/cgroup`, 'utf8')).includes(containerId);
    } catch {
      return false;
    }
  }

  /** Reads the file again and again until `done`, each pass checked; everything it met. */
  async function streamUntil(path: string, done: () => boolean) {
    const passes: StreamResult[] = [];
    do passes.push(await streamWithRetry(path, { deadlineMs: 180_000 }));
    while (!done());
    return {
      passes: passes.length,
      digests: [...new Set(passes.map((p) => p.sha256))],
      errors: passes.flatMap((p) => p.errors),
      longestOutageMs: Math.max(...passes.map((p) => p.longestOutageMs)),
    };
  }

  /** Mounts below the test directory but the test's own (the node's shared directories). */
  const mountsLeft = async (): Promise<string[]> =>
    (await MountTable.read())
      .under(work)
      .map((m) => m.mountPoint)
      .filter((p) => !sharedMounts.includes(p));

  /** Every container's main process, started or replaced: none may outlive its container. */
  async function recordMain(id: string): Promise<void> {
    const pid = await containerPid(id);
    const startTime = await processStartTime(pid);
    if (startTime !== undefined) mainProcesses.push({ pid, startTime });
  }

  const liveClients = async (): Promise<RecordedClient[]> => {
    const clients = await recordedClients(stateDir);
    const alive = await Promise.all(clients.map((c) => isSameProcess(c.pid, c.startTime)));
    return clients.filter((_, i) => alive[i]);
  };

  beforeAll(async () => {
    if (!available) throw new Error('podman is required in CI (apt-get install podman runc)');
    work = await mkdtemp('/tmp/dcsi-containers-');
    node = {
      // Host paths that would collide with this machine's own (or another test's) go below work.
      redirect: {
        '/var/lib/kubelet': join(work, 'kubelet'),
        '/var/lib/dataset-cache-csi': join(work, 'state'),
        '/run/dataset-cache-csi': join(work, 'run'),
      },
      nodeName: `dcsi-ctr-${work.slice(-6).toLowerCase()}`,
      podNetwork,
      label: `dev.dataset-cache-csi.test=${work}`,
    };
    nodeSpec = await manifestContainer('node.yaml', 'driver');
    launcherSpec = await manifestContainer('launcher.yaml', 'launcher');
    stateDir = hostPathIn(nodeSpec, node, argValue(nodeSpec, 'state-dir'));
    socketPath = hostPathIn(nodeSpec, node, argValue(nodeSpec, 'endpoint').slice('unix://'.length));
    launcherSocket = hostPathIn(nodeSpec, node, argValue(nodeSpec, 'launcher-socket'));
    // What a node has before the pods come: kubelet's directories, and (systemd's default) shared
    // mounts under them, without which Bidirectional propagation cannot work.
    for (const dir of ['/var/lib/kubelet', '/var/lib/dataset-cache-csi']) {
      const path = node.redirect[dir] as string;
      await mkdir(path, { recursive: true });
      await execa('mount', ['--bind', path, path]);
      sharedMounts.push(path);
      await execa('mount', ['--make-rshared', path]);
    }
    await mkdir(join(node.redirect['/var/lib/kubelet'] as string, 'plugins_registry'));

    const started = Date.now();
    ({ image } = await buildImage());
    report(`image ${image} built (scripts/image.sh) in ${Date.now() - started} ms`);

    const remote = join(work, 'remote');
    await mkdir(join(remote, 'ro'), { recursive: true });
    await mkdir(join(remote, 'rw'), { recursive: true });
    await writeRandomFile(join(remote, 'ro', 'big.bin'), 64 * MiB);
    await writeTree(join(remote, 'ro', 'tree'), 4, 10);
    bigDigest = await sha256File(join(remote, 'ro', 'big.bin'));
    treeExpected = await treeDigest(join(remote, 'ro', 'tree'));
    // Slow enough that a read of big.bin lasts across the pod replacements below.
    roServer = await LoopbackServer.start(join(remote, 'ro'), 'http', ['--bwlimit', '4M']);
    servers.push(roServer);
    rwServer = await LoopbackServer.start(join(remote, 'rw'), 'webdav');
    servers.push(rwServer);
    // The controller is not what this test is about: it runs on the host and only hands out
    // volume contexts, as the external-provisioner would relay them.
    controller = await startTestDriver({ mode: 'controller' });

    await startLauncher();
    const readyMs = await startNodePlugin();
    report(`node plugin ready ${readyMs} ms after podman run`);
  }, 15 * 60_000);

  afterAll(async () => {
    client?.close();
    // Every container of this test, by id, whatever state a failure left it in.
    if (node) {
      for (const id of await containersLabelled(node.label)) {
        await podman(['rm', '--force', '--time', '5', id]);
      }
    }
    if (work) await cleanupUnder(work, stateDir ?? join(work, 'state'));
    await controller?.dispose();
    for (const server of servers) await server.stop();
    if (work) await rm(work, { recursive: true, force: true });
  }, 5 * 60_000);

  it('answers --version, from the image and as dataset-cache-csi on its PATH', async () => {
    const { version } = JSON.parse(await readFile('package.json', 'utf8')) as { version: string };
    const direct = await podman(['run', '--rm', ...PODMAN_RUN_LIMITS, image, '--version']);
    expect(String(direct.stdout).trim()).toBe(`dataset-cache-csi ${version}`);
    const onPath = await podman([
      'run',
      '--rm',
      ...PODMAN_RUN_LIMITS,
      '--entrypoint',
      'dataset-cache-csi',
      image,
      '--version',
    ]);
    expect(String(onPath.stdout).trim()).toBe(`dataset-cache-csi ${version}`);
    const size = Number(
      String((await podman(['image', 'inspect', '--format', '{{.Size}}', image])).stdout).trim(),
    );
    report(`image size ${(size / 1e6).toFixed(0)} MB`);
    expect(size).toBeGreaterThan(0);
  });

  it('runs the containers with the manifests’ privileges, PID namespace, args and env', async () => {
    for (const [id, spec] of [
      [nodeId, nodeSpec],
      [launcherId, launcherSpec],
    ] as const) {
      if (!id) throw new Error('container missing');
      const pid = await containerPid(id);
      const args = (await readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0').filter(Boolean);
      // The host sees the container's main process: host PID namespace, the manifest's args.
      expect(args.slice(2)).toEqual(
        (spec.container.args ?? []).map((a) => a.replace('$(KUBE_NODE_NAME)', node.nodeName)),
      );
      const inspect = JSON.parse(String((await podman(['inspect', id])).stdout)) as {
        HostConfig: { Privileged: boolean; PidMode: string };
      }[];
      expect(inspect[0]?.HostConfig.Privileged).toBe(spec.container.securityContext?.privileged);
      expect(inspect[0]?.HostConfig.PidMode).toBe(spec.pod.hostPID ? 'host' : 'private');
    }
  });

  describe('conformance (the csi-sanity Identity and Node specs) against the container socket', () => {
    it('Identity: Probe, GetPluginInfo, GetPluginCapabilities', async () => {
      expect((await csi().identity.Probe({})).ready?.value).toBe(true);
      const info = await csi().identity.GetPluginInfo({});
      expect(info.name).toBe(driverName());
      expect(info.vendor_version).toMatch(/^\d+\.\d+\.\d+/);
      // --mode=node: no controller service on the node plugin's socket.
      const services = (await csi().identity.GetPluginCapabilities({})).capabilities.map(
        (c) => c.service?.type,
      );
      expect(services).not.toContain('CONTROLLER_SERVICE');
    });

    it('NodeGetInfo names the node from the downward API; NodeGetCapabilities', async () => {
      expect((await csi().node.NodeGetInfo({})).node_id).toBe(node.nodeName);
      const caps = (await csi().node.NodeGetCapabilities({})).capabilities.map((c) =>
        String(c.rpc?.type),
      );
      expect(caps).toEqual(
        expect.arrayContaining(['STAGE_UNSTAGE_VOLUME', 'GET_VOLUME_STATS', 'VOLUME_CONDITION']),
      );
    });

    it('refuses node calls without volume id, path or capability, and paths outside kubelet’s', async () => {
      const invalid = code(grpc.status.INVALID_ARGUMENT);
      await expect(
        csi().node.NodeStageVolume({ staging_target_path: staging('x'), volume_capability: RO }),
      ).rejects.toEqual(invalid);
      await expect(
        csi().node.NodeStageVolume({ volume_id: 'x', volume_capability: RO }),
      ).rejects.toEqual(invalid);
      await expect(
        csi().node.NodePublishVolume({ target_path: target('x'), volume_capability: RO }),
      ).rejects.toEqual(invalid);
      await expect(csi().node.NodeUnpublishVolume({ volume_id: 'x' })).rejects.toEqual(invalid);
      await expect(csi().node.NodeUnstageVolume({ volume_id: 'x' })).rejects.toEqual(invalid);
      // --kubelet-dir: a path outside kubelet's directory is refused.
      await expect(
        csi().node.NodeStageVolume({
          volume_id: 'x',
          staging_target_path: '/tmp/elsewhere',
          volume_capability: RO,
          volume_context: { source: `http://${remoteHost()}:1/` },
        }),
      ).rejects.toEqual(
        expect.objectContaining({
          code: grpc.status.INVALID_ARGUMENT,
          details: expect.stringContaining('outside the kubelet directory'),
        }),
      );
    });

    it('stage, publish, unpublish, unstage, each repeated (idempotent), leaves nothing', async () => {
      const volume = await createVolume('sanity', {
        source: `http://${remoteHost()}:${new URL(roServer.url()).port}/`,
      });
      for (let i = 0; i < 3; i += 1) await stage(volume);
      for (let i = 0; i < 3; i += 1) await publish(volume.volume_id, 'sanity-pod', true);
      const stats = await csi().node.NodeGetVolumeStats({
        volume_id: volume.volume_id,
        volume_path: target('sanity-pod'),
      });
      expect(stats.volume_condition?.abnormal).toBe(false);
      expect(await readdir(join(onHost(target('sanity-pod')), 'tree'))).toHaveLength(5);
      for (let i = 0; i < 3; i += 1) await unpublish(volume.volume_id, 'sanity-pod');
      expect(await pathExists(onHost(target('sanity-pod')))).toBe(false);
      for (let i = 0; i < 3; i += 1) await unstage(volume.volume_id);
      expect(await readdir(onHost(staging(volume.volume_id)))).toEqual([]);
      expect(await mountsLeft()).toEqual([]);
      expect(await recordedClients(stateDir)).toEqual([]);
    });
  });

  describe('datasets through the containers', () => {
    let ro: { volume_id: string; volume_context: Record<string, string> };
    let rw: { volume_id: string; volume_context: Record<string, string> };

    it('stages and publishes a read-only and a writable dataset; the host reads and writes them', async () => {
      ro = await createVolume('ro-data', {
        source: `http://${remoteHost()}:${new URL(roServer.url()).port}/`,
      });
      rw = await createVolume(
        'rw-data',
        { source: `webdav://${remoteHost()}:${new URL(rwServer.url()).port}/` },
        RW,
      );
      await stage(ro);
      await publish(ro.volume_id, 'reader', true);
      await stage(rw, RW);
      await publish(rw.volume_id, 'writer', false, RW);

      const roTarget = onHost(target('reader'));
      const rwTarget = onHost(target('writer'));
      expect(await treeDigest(join(roTarget, 'tree'))).toEqual(treeExpected);
      await expect(writeFile(join(roTarget, 'nope.txt'), 'x')).rejects.toMatchObject({
        code: 'EROFS',
      });
      await writeRandomFile(join(rwTarget, 'written.bin'), 8 * MiB);
      const written = await sha256File(join(rwTarget, 'written.bin'));
      // The write reaches the remote (rclone uploads on close; wait for it, not a fixed time).
      await untilHolds(
        'the written file on the WebDAV remote',
        () => sha256File(join(work, 'remote', 'rw', 'written.bin')).catch(() => ''),
        (digest) => digest === written,
      );
      await mkdir(join(rwTarget, 'sub'));
      await writeFile(join(rwTarget, 'sub', 'note.txt'), 'from the host\n');
      expect(await readFile(join(rwTarget, 'sub', 'note.txt'), 'utf8')).toBe('from the host\n');

      // Both cache clients run in the launcher's container, not the driver's.
      const clients = await liveClients();
      expect(clients).toHaveLength(2);
      for (const c of clients) {
        expect(await inContainer(c.pid, launcherId as string)).toBe(true);
        expect(await inContainer(c.pid, nodeId as string)).toBe(false);
      }
    });

    it('replacing the node plugin container three times while a pod reads: no error, clients adopted', async () => {
      const before = await liveClients();
      let done = false;
      const readMs: number[] = [];
      const reading = streamUntil(join(onHost(target('reader')), 'big.bin'), () => done);
      try {
        for (let round = 0; round < 3; round += 1) {
          const started = Date.now();
          await removeContainer(nodeId as string);
          const readyMs = await startNodePlugin();
          readMs.push(Date.now() - started);
          report(
            `node plugin replaced (${round + 1}/3): ${Date.now() - started} ms, ready ${readyMs} ms after run`,
          );
        }
      } catch (err) {
        // The reader finishes its pass before the failure is reported: nothing left running.
        done = true;
        await reading.catch(() => undefined);
        throw err;
      }
      done = true;
      const seen = await reading;
      report(
        `reader during 3 replacements: ${seen.passes} pass(es), errors ${JSON.stringify(seen.errors)}, longest outage ${seen.longestOutageMs} ms`,
      );
      expect(seen.errors).toEqual([]);
      expect(seen.digests).toEqual([bigDigest]);
      // The same client processes, recorded and alive: adopted by each new driver.
      const after = await liveClients();
      expect(after.map((c) => [c.pid, c.startTime]).sort()).toEqual(
        before.map((c) => [c.pid, c.startTime]).sort(),
      );
      expect(readMs).toHaveLength(3);
      // And the new driver still serves the node: a new publish works.
      await publish(ro.volume_id, 'reader-2', true);
      expect(await sha256File(join(onHost(target('reader-2')), 'big.bin'))).toBe(bigDigest);
      await unpublish(ro.volume_id, 'reader-2');
    }, 300_000);

    it('restarting the launcher container: what pods see, and the driver repairs it', async () => {
      const before = await liveClients();
      const stopped = Date.now();
      await removeContainer(launcherId as string);
      // What the runtime did to the clients of the container it removed.
      const survivors = (
        await Promise.all(before.map((c) => isSameProcess(c.pid, c.startTime)))
      ).filter(Boolean).length;
      const probe = async (path: string) =>
        readdir(path).then(
          () => 'ok',
          (err: NodeJS.ErrnoException) => err.code ?? String(err),
        );
      const whileDown = {
        reader: await probe(join(onHost(target('reader')), 'tree')),
        writer: await probe(onHost(target('writer'))),
      };
      report(
        `launcher container removed: ${survivors}/${before.length} clients survived it; pods see ${JSON.stringify(whileDown)} while it is down`,
      );
      await startLauncher();
      const restarted = Date.now();
      const repaired = await untilHolds(
        'the driver to restart both clients through the new launcher',
        async () => {
          const live = await liveClients();
          const fresh = live.filter((c) => !before.some((b) => b.pid === c.pid));
          const inNew = await Promise.all(
            fresh.map((c) => inContainer(c.pid, launcherId as string)),
          );
          return { live: live.length, inNew: inNew.filter(Boolean).length };
        },
        (s) => s.live === 2 && s.inNew === 2,
        60_000,
      );
      const readable = await until('the pods to read again', async () =>
        (await probe(join(onHost(target('reader')), 'tree'))) === 'ok' &&
        (await probe(onHost(target('writer')))) === 'ok'
          ? Date.now()
          : undefined,
      );
      report(
        `repaired: ${JSON.stringify(repaired)} clients in the new launcher container; pods read again ${readable - restarted} ms after it started (${readable - stopped} ms after the old one was removed)`,
      );
      expect(survivors).toBe(0);
      // The writable dataset's pod has no copy to fall back on: it sees the dead client.
      expect(whileDown.writer).not.toBe('ok');
      expect(await sha256File(join(onHost(target('reader')), 'big.bin'))).toBe(bigDigest);
      expect(await readFile(join(onHost(target('writer')), 'sub', 'note.txt'), 'utf8')).toBe(
        'from the host\n',
      );
    }, 180_000);

    it('kill -9 of a cache client inside the launcher container is repaired within 5 s', async () => {
      // The client behind the reading pod: its dataset mount is where the pod's target comes from.
      const table = await MountTable.read();
      const device = table.at(onHost(target('reader')))?.device;
      const victim = (await liveClients()).find(
        (c) => table.at(hostPathIn(nodeSpec, node, c.mountPoint))?.device === device,
      );
      if (!victim || device === undefined) throw new Error('no client behind the reader');
      const tree = join(onHost(target('reader')), 'tree');
      const killed = Date.now();
      const result = await podman([
        'exec',
        launcherId as string,
        'sh',
        '-c',
        `kill -9 ${victim.pid}`,
      ]);
      expect(result.exitCode).toBe(0);
      const state = await untilHolds(
        'a new client for the killed one, and the pod reading through it',
        async () => {
          const again = (await liveClients()).find(
            (c) => c.key === victim.key && c.pid !== victim.pid,
          );
          if (!again) return 'no new client';
          return treeDigest(tree).then(
            (digest) =>
              JSON.stringify(digest) === JSON.stringify(treeExpected) ? 'repaired' : 'wrong data',
            (err: NodeJS.ErrnoException) => `pod read fails: ${err.code ?? String(err)}`,
          );
        },
        (seen) => seen === 'repaired',
        20_000,
        25,
      );
      const repairMs = Date.now() - killed;
      report(
        `kill -9 of client pid ${victim.pid} in the launcher container: ${state} after ${repairMs} ms`,
      );
      expect(repairMs).toBeLessThan(5000);
      expect(await sha256File(join(onHost(target('reader')), 'big.bin'))).toBe(bigDigest);
    });

    it('after unpublish, unstage and removing the containers, nothing they made is left', async () => {
      const clients = await recordedClients(stateDir);
      await unpublish(ro.volume_id, 'reader');
      await unstage(ro.volume_id);
      await unpublish(rw.volume_id, 'writer');
      await unstage(rw.volume_id);
      expect(await recordedClients(stateDir)).toEqual([]);
      for (const id of [nodeId, launcherId]) await removeContainer(id as string);
      expect(await containersLabelled(node.label)).toEqual([]);
      for (const c of clients) expect(await isSameProcess(c.pid, c.startTime)).toBe(false);
      expect(await mountsLeft()).toEqual([]);
      // The containers' own processes (driver, launcher) are gone with them.
      for (const p of mainProcesses) expect(await isSameProcess(p.pid, p.startTime)).toBe(false);
      expect(
        await readdir(
          join(onHost(kubeletDir()), 'pods', 'reader', 'volumes/kubernetes.io~csi/data'),
        ),
      ).toEqual([]);
      // The written data is on the remote, intact.
      expect(await readFile(join(work, 'remote', 'rw', 'sub', 'note.txt'), 'utf8')).toBe(
        'from the host\n',
      );
    });
  });
});
