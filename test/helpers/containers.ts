// The chart's DaemonSet containers run as podman containers, with what kubelet would give them.
import { access, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { parse } from 'yaml';
import { renderChart } from '../../src/deploy/chart.js';
import { CHART_DIR, NAMESPACE } from '../../src/deploy/render-manifests.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: { fieldRef?: { fieldPath: string } };
}

interface VolumeMount {
  name: string;
  mountPath: string;
  mountPropagation?: 'None' | 'HostToContainer' | 'Bidirectional';
  readOnly?: boolean;
}

interface ManifestContainer {
  name: string;
  image: string;
  command?: string[];
  args?: string[];
  env?: EnvVar[];
  securityContext?: { privileged?: boolean };
  volumeMounts?: VolumeMount[];
  resources?: { limits?: { memory?: string } };
}

interface PodSpec {
  hostPID?: boolean;
  hostNetwork?: boolean;
  containers: ManifestContainer[];
  volumes?: { name: string; hostPath?: { path: string; type?: string } }[];
}

/** One container of a DaemonSet of the rendered chart, with its pod's host settings. */
export interface DaemonSetContainer {
  daemonSet: string;
  pod: PodSpec;
  container: ManifestContainer;
}

/** The chart rendered with its default values (what deploy/kubernetes holds), one container. */
export async function manifestContainer(
  file: string,
  containerName: string,
): Promise<DaemonSetContainer> {
  const text = (await renderChart(CHART_DIR, NAMESPACE)).get(file);
  if (!text) throw new Error(`the chart renders no ${file}`);
  const daemonSet = parse(text) as {
    kind: string;
    metadata: { name: string };
    spec: { template: { spec: PodSpec } };
  };
  if (daemonSet.kind !== 'DaemonSet') throw new Error(`${file} is a ${daemonSet.kind}`);
  const pod = daemonSet.spec.template.spec;
  const container = pod.containers.find((c) => c.name === containerName);
  if (!container) throw new Error(`${file} has no container ${containerName}`);
  return { daemonSet: daemonSet.metadata.name, pod, container };
}

/** What the test stands in for: kubelet's host paths and the downward API. */
export interface Node {
  /** Host path prefix -> where it is on this machine (paths that would collide with the host). */
  redirect: Record<string, string>;
  /** spec.nodeName */
  nodeName: string;
  /** Where the podman network is not the host's: the flag for a pod's own network. */
  podNetwork: string;
  /** Added to every container, to find them all at cleanup. */
  label: string;
}

/** The host path as this machine has it: redirected when under one of the node's prefixes. */
export function hostPath(node: Node, path: string): string {
  for (const [from, to] of Object.entries(node.redirect)) {
    if (path === from || path.startsWith(`${from}/`)) return to + path.slice(from.length);
  }
  return path;
}

/** Kubernetes memory quantity -> podman's bytes. */
function bytes(quantity: string): string {
  const match = /^(\d+)(Ki|Mi|Gi)?$/.exec(quantity);
  if (!match) throw new Error(`unsupported memory quantity ${quantity}`);
  const unit = { Ki: 1024, Mi: 1024 ** 2, Gi: 1024 ** 3 }[match[2] ?? ''] ?? 1;
  return String(Number(match[1]) * unit);
}

// How kubelet maps mountPropagation onto the runtime's bind mounts (CRI: PROPAGATION_*).
const PROPAGATION: Record<string, string> = {
  None: 'rprivate',
  HostToContainer: 'rslave',
  Bidirectional: 'rshared',
};

/**
 * podman run flags for a manifest container, as kubelet would set the container up: privileged,
 * host PID and network, hostPath volumes (created when DirectoryOrCreate, checked otherwise) with
 * their propagation, env (fieldRef spec.nodeName from the node) and args with $(VAR) expanded.
 * Anything else a future manifest uses fails here rather than being silently left out.
 */
export async function podmanRunArgs(
  spec: DaemonSetContainer,
  node: Node,
  image: string,
  name: string,
): Promise<string[]> {
  const { pod, container } = spec;
  const flags = ['--name', name, '--label', node.label, '--detach'];
  if (container.securityContext?.privileged) flags.push('--privileged');
  if (pod.hostPID) flags.push('--pid', 'host');
  flags.push('--network', pod.hostNetwork ? 'host' : node.podNetwork);
  const memory = container.resources?.limits?.memory;
  if (memory) flags.push('--memory', bytes(memory));
  const env: Record<string, string> = {};
  for (const variable of container.env ?? []) {
    if (variable.value !== undefined) env[variable.name] = variable.value;
    else if (variable.valueFrom?.fieldRef?.fieldPath === 'spec.nodeName')
      env[variable.name] = node.nodeName;
    else throw new Error(`env ${variable.name}: only values and spec.nodeName are supported`);
  }
  for (const [key, value] of Object.entries(env)) flags.push('--env', `${key}=${value}`);
  for (const mount of container.volumeMounts ?? []) {
    const volume = pod.volumes?.find((v) => v.name === mount.name);
    if (!volume?.hostPath) throw new Error(`volume ${mount.name} is not a hostPath volume`);
    const source = hostPath(node, volume.hostPath.path);
    const type = volume.hostPath.type ?? '';
    if (type === 'DirectoryOrCreate') await mkdir(source, { recursive: true });
    else await access(source); // Directory, CharDevice: kubelet refuses a missing path too
    const options = [PROPAGATION[mount.mountPropagation ?? 'None'] ?? 'rprivate'];
    if (mount.readOnly) options.push('ro');
    flags.push('--volume', `${source}:${mount.mountPath}:${options.join(',')}`);
  }
  // Kubernetes expands $(VAR) in args from the container's env; a missing one stays as written.
  const expand = (arg: string) =>
    arg.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (whole, key: string) => env[key] ?? whole);
  if (container.command) flags.push('--entrypoint', JSON.stringify(container.command));
  return [...flags, image, ...(container.args ?? []).map(expand)];
}

/**
 * podman as this machine runs it: runc (crun refuses hybrid cgroup layouts), cgroupfs (no systemd),
 * explicit rlimits (podman's defaults cannot be set without CAP_SYS_RESOURCE in a container).
 */
export const PODMAN_GLOBAL = ['--runtime', 'runc', '--cgroup-manager', 'cgroupfs'];
export const PODMAN_RUN_LIMITS = [
  '--ulimit',
  'nofile=20000:20000',
  '--ulimit',
  'nproc=32768:32768',
];

export const podman = (args: string[], timeoutMs = 120_000) =>
  execa('podman', [...PODMAN_GLOBAL, ...args], { reject: false, timeout: timeoutMs });

export async function podmanAvailable(): Promise<boolean> {
  return (await execa('podman', ['--version'], { reject: false })).exitCode === 0;
}

/** Builds the image through scripts/image.sh (as `npm run image` does); returns its name. */
export async function buildImage(): Promise<{ image: string; log: string }> {
  const result = await execa('bash', [join(ROOT, 'scripts', 'image.sh')], {
    reject: false,
    all: true,
    timeout: 9 * 60_000,
  });
  const lines = String(result.stdout).trim().split('\n');
  const image = lines[lines.length - 1];
  if (result.exitCode !== 0 || !image)
    throw new Error(`scripts/image.sh failed (${result.exitCode}):\n${String(result.all)}`);
  return { image, log: String(result.stderr) };
}

/** Starts a container; returns its id. */
export async function runContainer(flags: string[]): Promise<string> {
  const result = await podman(['run', ...PODMAN_RUN_LIMITS, ...flags]);
  if (result.exitCode !== 0)
    throw new Error(`podman run failed (${result.exitCode}): ${String(result.stderr)}`);
  return String(result.stdout).trim();
}

/** What kubelet does when a pod goes away: SIGTERM, the grace period, SIGKILL, then removal. */
export async function removeContainer(id: string, graceSeconds = 30): Promise<void> {
  await podman(['stop', '--time', String(graceSeconds), id], (graceSeconds + 60) * 1000);
  const result = await podman(['rm', '--force', id]);
  if (result.exitCode !== 0 && !/no such container/i.test(String(result.stderr)))
    throw new Error(`podman rm ${id} failed: ${String(result.stderr)}`);
}

/** Ids of every container, running or not, with the label. */
export async function containersLabelled(label: string): Promise<string[]> {
  const result = await podman([
    'ps',
    '--all',
    '--quiet',
    '--no-trunc',
    '--filter',
    `label=${label}`,
  ]);
  return String(result.stdout)
    .split('\n')
    .map((line) => line.trim())
    .filter(Boolean);
}

/** The host PID of a container's main process (0 when it is not running). */
export async function containerPid(id: string): Promise<number> {
  const result = await podman(['inspect', '--format', '{{.State.Pid}}', id]);
  return Number(String(result.stdout).trim()) || 0;
}

export async function containerLogs(id: string): Promise<string> {
  const result = await podman(['logs', id]);
  return `${String(result.stdout)}${String(result.stderr)}`;
}

/** The host path behind a path inside a manifest container (through its hostPath mounts). */
export function hostPathIn(spec: DaemonSetContainer, node: Node, containerPath: string): string {
  const mounts = [...(spec.container.volumeMounts ?? [])].sort(
    (a, b) => b.mountPath.length - a.mountPath.length,
  );
  for (const mount of mounts) {
    if (containerPath !== mount.mountPath && !containerPath.startsWith(`${mount.mountPath}/`))
      continue;
    const volume = spec.pod.volumes?.find((v) => v.name === mount.name);
    if (!volume?.hostPath) break;
    return hostPath(node, volume.hostPath.path) + containerPath.slice(mount.mountPath.length);
  }
  throw new Error(`${containerPath} is on no hostPath volume of ${spec.container.name}`);
}

/** The value of a --flag=value argument of a manifest container. */
export function argValue(spec: DaemonSetContainer, flag: string): string {
  const prefix = `--${flag}=`;
  const arg = spec.container.args?.find((a) => a.startsWith(prefix));
  if (!arg) throw new Error(`${spec.container.name} has no ${prefix}`);
  return arg.slice(prefix.length);
}
