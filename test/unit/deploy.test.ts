/**
 * The deployment, checked offline: the chart renders to exactly the plain manifests, every object
 * validates against the Kubernetes schemas (kubernetes-models), and what schemas cannot see is
 * asserted: names, paths and sockets that must agree across objects, propagation, secrets.
 */
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { parseAllDocuments } from 'yaml';
import { parseConfig } from '../../src/config.js';
import { ChartError, renderChart, renderTemplate } from '../../src/deploy/chart.js';
import {
  CHART_DIR,
  GENERATED_HEADER,
  MANIFEST_DIR,
  NAMESPACE,
  ROOT,
} from '../../src/deploy/render-manifests.js';
import { parseVolumeParameters } from '../../src/dataset/params.js';

interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string };
  [key: string]: unknown;
}

interface Container {
  name: string;
  image: string;
  args?: string[];
  ports?: { name: string; containerPort: number }[];
  livenessProbe?: { httpGet: { port: string } };
  volumeMounts?: { name: string; mountPath: string; mountPropagation?: string }[];
}

interface PodSpec {
  hostPID?: boolean;
  containers: Container[];
  volumes: { name: string; hostPath?: { path: string } }[];
}

const docs = (text: string): K8sObject[] =>
  parseAllDocuments(text)
    .map((doc) => doc.toJSON() as K8sObject | null)
    .filter((doc): doc is K8sObject => doc !== null);

async function loadDir(dir: string): Promise<K8sObject[]> {
  const names = (await readdir(dir)).filter((n) => n.endsWith('.yaml')).sort();
  const all = await Promise.all(names.map(async (n) => docs(await readFile(join(dir, n), 'utf8'))));
  return all.flat();
}

const MODELS: Record<string, () => Promise<Record<string, unknown>>> = {
  v1: () => import('kubernetes-models/v1'),
  'apps/v1': () => import('kubernetes-models/apps/v1'),
  'rbac.authorization.k8s.io/v1': () => import('kubernetes-models/rbac.authorization.k8s.io/v1'),
  'storage.k8s.io/v1': () => import('kubernetes-models/storage.k8s.io/v1'),
};

async function validate(object: K8sObject): Promise<void> {
  const load = MODELS[object.apiVersion];
  if (!load) throw new Error(`no schema for ${object.apiVersion}`);
  const Model = (await load())[object.kind] as
    (new (o: unknown) => { validate(): void }) | undefined;
  if (!Model) throw new Error(`no schema for ${object.apiVersion} ${object.kind}`);
  new Model(object).validate();
}

let manifests: K8sObject[];
let examples: K8sObject[];
const find = (list: K8sObject[], kind: string, name: string): K8sObject => {
  const found = list.find((o) => o.kind === kind && o.metadata.name === name);
  if (!found) throw new Error(`no ${kind} ${name}`);
  return found;
};
const podSpec = (o: K8sObject): PodSpec =>
  (o.spec as { template: { spec: PodSpec } }).template.spec;
const container = (o: K8sObject, name: string): Container => {
  const c = podSpec(o).containers.find((x) => x.name === name);
  if (!c) throw new Error(`no container ${name} in ${o.metadata.name}`);
  return c;
};
const flag = (c: Container, name: string): string | undefined =>
  c.args?.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
const hostPathOf = (o: K8sObject, c: Container, mountPath: string): string | undefined => {
  const mount = c.volumeMounts?.find((m) => m.mountPath === mountPath);
  return podSpec(o).volumes.find((v) => v.name === mount?.name)?.hostPath?.path;
};

/** A value both sides of a comparison depend on: missing on both sides must not compare equal. */
const defined = <T>(value: T | undefined, what: string): T => {
  if (value === undefined) throw new Error(`${what} is not set`);
  return value;
};

beforeAll(async () => {
  manifests = await loadDir(MANIFEST_DIR);
  examples = await loadDir(join(ROOT, 'deploy', 'examples'));
});

it('deploy/kubernetes is the chart rendered with its default values', async () => {
  const rendered = await renderChart(CHART_DIR, NAMESPACE);
  expect([...rendered.keys()]).toEqual([
    'controller.yaml',
    'csidriver.yaml',
    'launcher.yaml',
    'node.yaml',
    'rbac.yaml',
  ]);
  for (const [name, text] of rendered) {
    expect(await readFile(join(MANIFEST_DIR, name), 'utf8')).toBe(GENERATED_HEADER + text);
  }
});

it('every manifest and example validates against the Kubernetes schemas', async () => {
  expect(manifests.length).toBe(11);
  for (const object of [...manifests, ...examples]) {
    await expect(validate(object)).resolves.toBeUndefined();
  }
});

it('the schema check catches a wrong type', async () => {
  const node = structuredClone(find(manifests, 'DaemonSet', 'dataset-cache-csi-node'));
  (podSpec(node).containers[0] as unknown as { ports: unknown }).ports = [{ containerPort: 'x' }];
  await expect(validate(node)).rejects.toThrow(/containerPort must be integer/);
});

it('names, sockets and paths agree across the objects', () => {
  const driverName = find(manifests, 'CSIDriver', 'dataset-cache.csi.dev').metadata.name;
  const node = find(manifests, 'DaemonSet', 'dataset-cache-csi-node');
  const launcher = find(manifests, 'DaemonSet', 'dataset-cache-csi-clients');
  const controller = find(manifests, 'Deployment', 'dataset-cache-csi-controller');
  const driver = container(node, 'driver');
  const registrar = container(node, 'node-driver-registrar');
  const liveness = container(node, 'liveness-probe');
  const kubeletDir = defined(flag(driver, 'kubelet-dir'), "the driver's --kubelet-dir");

  // The socket kubelet is told about is the one the driver listens on.
  expect(flag(driver, 'driver-name')).toBe(driverName);
  expect(flag(driver, 'endpoint')).toBe('unix:///csi/csi.sock');
  for (const c of [registrar, liveness]) expect(flag(c, 'csi-address')).toBe('/csi/csi.sock');
  for (const c of [driver, registrar, liveness]) {
    expect(hostPathOf(node, c, '/csi')).toBe(`${kubeletDir}/plugins/${driverName}`);
  }
  expect(flag(registrar, 'kubelet-registration-path')).toBe(
    `${kubeletDir}/plugins/${driverName}/csi.sock`,
  );
  expect(hostPathOf(node, registrar, '/registration')).toBe(`${kubeletDir}/plugins_registry`);
  const provisioner = container(controller, 'csi-provisioner');
  expect(flag(provisioner, 'csi-address')).toBe('/csi/csi.sock');
  expect(flag(container(controller, 'driver'), 'endpoint')).toBe('unix:///csi/csi.sock');
  expect(provisioner.args).toContain('--extra-create-metadata');

  // Mounts made in one container reach kubelet and the other container.
  const propagation = (o: K8sObject, c: Container, path: string) =>
    c.volumeMounts?.find((m) => m.mountPath === path)?.mountPropagation;
  const stateDir = defined(flag(driver, 'state-dir'), "the driver's --state-dir");
  expect(propagation(node, driver, kubeletDir)).toBe('Bidirectional');
  expect(propagation(node, driver, stateDir)).toBe('Bidirectional');
  expect(propagation(launcher, container(launcher, 'launcher'), stateDir)).toBe('Bidirectional');
  expect(hostPathOf(node, driver, kubeletDir)).toBe(kubeletDir);
  expect(flag(driver, 'mem-cache-dir')?.startsWith(`${stateDir}/`)).toBe(true);

  // The launcher's socket is where the driver looks for it, on a directory both share.
  const runtimeDir = defined(flag(driver, 'runtime-dir'), "the driver's --runtime-dir");
  const launcherArgs = container(launcher, 'launcher').args ?? [];
  expect(launcherArgs[0]).toBe('launcher');
  const socket = defined(flag(driver, 'launcher-socket'), "the driver's --launcher-socket");
  expect(socket).toBe(`${runtimeDir}/launcher.sock`);
  expect(flag(container(launcher, 'launcher'), 'socket')).toBe(socket);
  const runtimeHostPath = defined(
    hostPathOf(node, driver, runtimeDir),
    "the host path of the driver's runtime dir",
  );
  expect(hostPathOf(launcher, container(launcher, 'launcher'), runtimeDir)).toBe(runtimeHostPath);
  expect(podSpec(node).hostPID).toBe(true);
  expect(podSpec(launcher).hostPID).toBe(true);
  expect((launcher.spec as { updateStrategy: { type: string } }).updateStrategy.type).toBe(
    'OnDelete',
  );

  // The liveness sidecar serves the port the driver's probe asks.
  const healthz = defined(
    driver.ports?.find((p) => p.name === driver.livenessProbe?.httpGet.port),
    "the port of the driver's liveness probe",
  );
  expect(flag(liveness, 'http-endpoint')).toBe(`:${healthz.containerPort}`);
  const metrics = defined(
    driver.ports?.find((p) => p.name === 'metrics'),
    "the driver's metrics port",
  );
  expect(flag(driver, 'metrics-address')).toBe(`:${metrics.containerPort}`);
});

it('the driver accepts every flag the manifests give it', () => {
  const node = find(manifests, 'DaemonSet', 'dataset-cache-csi-node');
  const controller = find(manifests, 'Deployment', 'dataset-cache-csi-controller');
  for (const c of [container(node, 'driver'), container(controller, 'driver')]) {
    const args = (c.args ?? []).map((a) => a.replace('$(KUBE_NODE_NAME)', 'node-1'));
    expect(() => parseConfig(args, {})).not.toThrow();
  }
});

it('the CSIDriver supports persistent and inline volumes without attach', () => {
  expect(find(manifests, 'CSIDriver', 'dataset-cache.csi.dev').spec).toEqual({
    attachRequired: false,
    podInfoOnMount: true,
    fsGroupPolicy: 'None',
    volumeLifecycleModes: ['Persistent', 'Ephemeral'],
  });
});

it('examples name this driver, use valid parameters and reference secrets they define', () => {
  const driverName = 'dataset-cache.csi.dev';
  const secrets = new Set(
    examples
      .filter((o) => o.kind === 'Secret')
      .map((o) => `${o.metadata.namespace ?? 'default'}/${o.metadata.name}`),
  );
  const classes = examples.filter((o) => o.kind === 'StorageClass');
  expect(classes.length).toBeGreaterThanOrEqual(4);
  const sources = new Set<string>();
  const media = new Set<string>();
  for (const sc of classes) {
    expect((sc as unknown as { provisioner: string }).provisioner).toBe(driverName);
    const parameters = (sc as unknown as { parameters: Record<string, string> }).parameters;
    const parsed = parseVolumeParameters(parameters);
    sources.add(parsed.dataset.source.kind);
    media.add(parsed.dataset.cache.medium);
    for (const [key, value] of Object.entries(parameters)) {
      const kind = /^csi\.storage\.k8s\.io\/(.+)-secret-name$/.exec(key)?.[1];
      if (!kind) continue;
      const namespace = parameters[`csi.storage.k8s.io/${kind}-secret-namespace`];
      expect(secrets).toContain(`${namespace}/${value}`);
    }
  }
  expect([...sources].sort()).toEqual(['local', 's3', 'sftp', 'webdav']);
  expect([...media].sort()).toEqual(['MEM', 'SSD']);

  const pv = find(examples, 'PersistentVolume', 'coco-static');
  expect((pv.spec as { csi: { driver: string } }).csi.driver).toBe(driverName);
  const pod = find(examples, 'Pod', 'notebook');
  const volume = (
    pod.spec as {
      volumes: { csi: { driver: string; nodePublishSecretRef: { name: string } } }[];
    }
  ).volumes[0];
  expect(volume?.csi.driver).toBe(driverName);
  expect(secrets).toContain(`${pod.metadata.namespace}/${volume?.csi.nodePublishSecretRef.name}`);
  const statefulSet = find(examples, 'StatefulSet', 'trainer');
  expect((statefulSet.spec as { replicas: number }).replicas).toBe(2);
});

it('the chart gives the node plugin a cluster tier: flags the driver accepts, keys from a read-only Secret', async () => {
  const rendered = await renderChart(CHART_DIR, 'storage', {
    clusterTier: {
      location: 's3://datasets-cache/tier',
      endpoint: 'http://minio.storage:9000',
      region: 'us-east-1',
      secretName: 'cluster-tier-keys',
      uploadLimit: '100M',
      memberRefresh: '3s',
    },
  });
  const node = docs(rendered.get('node.yaml') as string)[0] as K8sObject;
  await expect(validate(node)).resolves.toBeUndefined();
  const driver = container(node, 'driver');
  const args = (driver.args ?? []).map((a) => a.replace('$(KUBE_NODE_NAME)', 'node-1'));
  const tier = parseConfig(args, {}).clusterTier;
  expect(tier).toEqual({
    location: 's3://datasets-cache/tier',
    endpoint: 'http://minio.storage:9000',
    region: 'us-east-1',
    credentialsDir: '/etc/dataset-cache-csi/cluster-tier',
    transfers: 8,
    uploadBandwidth: 100e6,
    memberRefreshMs: 3000,
  });
  const mount = driver.volumeMounts?.find((m) => m.mountPath === tier?.credentialsDir) as {
    name: string;
    readOnly?: boolean;
  };
  expect(mount.readOnly).toBe(true);
  const volume = podSpec(node).volumes.find((v) => v.name === mount.name) as {
    secret?: { secretName: string; defaultMode: number };
  };
  expect(volume.secret).toEqual({ secretName: 'cluster-tier-keys', defaultMode: 0o400 });
  // Off by default: the plain manifests name no tier.
  const plain = container(find(manifests, 'DaemonSet', 'dataset-cache-csi-node'), 'driver');
  expect(plain.args?.some((a) => a.startsWith('--cluster-tier'))).toBe(false);
});

it('the chart renders other values coherently and refuses what it cannot render', async () => {
  const rendered = await renderChart(CHART_DIR, 'storage', {
    driverName: 'cache.example.com',
    kubeletDir: '/var/data/kubelet',
  });
  const node = docs(rendered.get('node.yaml') as string)[0] as K8sObject;
  expect(node.metadata.namespace).toBe('storage');
  expect(flag(container(node, 'node-driver-registrar'), 'kubelet-registration-path')).toBe(
    '/var/data/kubelet/plugins/cache.example.com/csi.sock',
  );
  expect(flag(container(node, 'driver'), 'kubelet-dir')).toBe('/var/data/kubelet');
  const context = {
    Values: { a: { b: 'x' }, on: true, off: false, none: {} },
    Release: { Namespace: 'n', Name: 'r' },
    Chart: {},
    Files: new Map([['files/f.yaml', 'k: "{{ $labels.x }}"\nl: 1\n']]),
  };
  expect(renderTemplate('v: {{ .Values.a.b | quote }}', context)).toBe('v: "x"');
  expect(() => renderTemplate('{{ range .Values.a }}', context)).toThrow(ChartError);
  expect(() => renderTemplate('{{ .Values.missing }}', context)).toThrow(/not set/);
  expect(() => renderTemplate('{{ .Values.a }}', context)).toThrow(/not a scalar/);
  // Conditions with Go's whitespace trimming; chart files come in as they are, never templated.
  expect(renderTemplate('a\n{{- if .Values.on }}\nb\n{{- end }}\nc', context)).toBe('a\nb\nc');
  expect(renderTemplate('a\n{{- if .Values.off }}\nb\n{{- end }}\nc', context)).toBe('a\nc');
  expect(renderTemplate('{{- if .Values.none }}x{{ end }}', context)).toBe('');
  expect(renderTemplate('s:\n{{ .Files.Get "files/f.yaml" | indent 2 }}', context)).toBe(
    's:\n  k: "{{ $labels.x }}"\n  l: 1',
  );
  expect(renderTemplate('m: {{ toYaml .Values.a | nindent 2 }}', context)).toBe('m: \n  b: x');
  expect(() => renderTemplate('{{ if .Values.on }}', context)).toThrow(/without end/);
  expect(() => renderTemplate('{{ end }}', context)).toThrow(/without if/);
  expect(() => renderTemplate('{{ .Files.Get "nope" }}', context)).toThrow(/no chart file/);
  expect(() => renderTemplate('{{ .Values.a.b | upper }}', context)).toThrow(ChartError);
});

it('the Dockerfile passes dockerfilelint and installs what the driver needs at run time (linted, not built: no docker here)', async () => {
  const dockerfile = join(ROOT, 'Dockerfile');
  const lint = await execa(join(ROOT, 'node_modules', '.bin', 'dockerfilelint'), [dockerfile], {
    reject: false,
  });
  expect(lint.stdout).toContain('Issues: None found');
  expect(lint.exitCode).toBe(0);
  const text = await readFile(dockerfile, 'utf8');
  const stages = text.split('\n').filter((l) => l.startsWith('FROM '));
  expect(stages).toHaveLength(2);
  // Both stages on one base, pinned by default to an exact node release (a local build may name
  // a stand-in through the build arguments).
  for (const stage of stages) expect(stage).toMatch(/^FROM \$\{BASE_IMAGE\}:\$\{BASE_TAG\}( |$)/);
  expect(text).toMatch(/^ARG BASE_IMAGE=node$/m);
  expect(text).toMatch(/^ARG BASE_TAG=\d+\.\d+\.\d+-bookworm-slim$/m);
  for (const tool of ['rclone', 's3fs', 'fuse3', 'bindfs', 'util-linux', 'e2fsprogs']) {
    expect(text).toMatch(new RegExp(`apt-get install[^\\n]*\\b${tool}\\b`));
  }
  expect(text).toContain('npm prune --omit=dev');
  expect(text).toContain('ENTRYPOINT ["node", "/app/dist/main.js"]');
});
