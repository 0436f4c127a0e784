/**
 * The shipped monitoring against a real Prometheus on loopback scraping a real driver. The alert
 * rules run on a clock 60 times faster (a minute of the rules is a second here): they fire when a
 * cache client is killed over and over, when the remote stops and a killed client cannot come
 * back, when a cache is full while it is read and when the driver stops answering, and they
 * resolve after the repair. Every query of the dashboard returns series.
 */
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { LoopbackServer } from '../../src/demo/loopback-server.js';
import { CHART_DIR } from '../../src/deploy/render-manifests.js';
import { isSameProcess, sleep } from '../../src/kernel/proc.js';
import { freePort } from '../../src/util/net.js';
import { recordedClients, type RecordedClient } from '../helpers/cleanup.js';
import { dashboardQueries, type Dashboard } from '../helpers/dashboard.js';
import {
  createVolume,
  mountCapability,
  startTestDriver,
  type TestDriver,
} from '../helpers/driver.js';
import { writeRandomFile, writeTree } from '../helpers/files.js';
import { Kubelet } from '../helpers/kubelet.js';
import { Scrape } from '../helpers/metrics.js';
import { rulesOnFastClock, TestPrometheus } from '../helpers/prometheus.js';
import { until } from '../helpers/wait.js';

const FASTER = 60;
const KiB = 1024;
const FILES = 800;
const cap = mountCapability('MULTI_NODE_READER_ONLY');
let driver: TestDriver;
let kubelet: Kubelet;
let data: string;
let server: LoopbackServer;
let prometheus: TestPrometheus;
let metricsPort: number;
/** The names of the alerts the chart ships. */
let shippedAlerts: string[];
/** The dataset read through the FUSE path (no local copy), with a small MEM cache. */
let fuse: { volumeId: string; key: string };
/** The dataset with a local copy filled by prefetch. */
let copy: { volumeId: string; key: string };

const clientOf = async (key: string): Promise<RecordedClient> => {
  const client = (await recordedClients(driver.stateDir)).find((c) => c.key === key);
  if (!client) throw new Error(`no client recorded for ${key}`);
  return client;
};

/** Kills a dataset's client with SIGKILL and waits for the driver to start a new one. */
async function killAndAwaitRepair(key: string): Promise<void> {
  const killed = await clientOf(key);
  process.kill(killed.pid, 'SIGKILL');
  await until(
    'the client to be replaced',
    async () => {
      const now = await clientOf(key);
      return now.pid !== killed.pid && (await isSameProcess(now.pid, now.startTime))
        ? true
        : undefined;
    },
    30_000,
  );
}

async function stageAndPublish(name: string, parameters: Record<string, string>, pod: string) {
  const before = new Set((await recordedClients(driver.stateDir)).map((c) => c.key));
  const volume = await createVolume(driver.client, name, parameters, cap);
  await kubelet.run(volume, [pod]);
  const added = (await recordedClients(driver.stateDir)).find((c) => !before.has(c.key));
  if (!added) throw new Error(`no new client for ${name}`);
  return { volumeId: volume.volume_id, key: added.key };
}

interface AlertRule {
  name: string;
  health: string;
  lastError?: string;
  lastEvaluation: string;
}

/** The alerting rules Prometheus loaded, with when it last evaluated each. */
async function alertRules(): Promise<AlertRule[]> {
  const response = await fetch(`http://127.0.0.1:${prometheus.port}/api/v1/rules?type=alert`);
  const answer = (await response.json()) as {
    status: string;
    data: { groups: { rules: AlertRule[] }[] };
  };
  if (answer.status !== 'success') throw new Error(`Prometheus rules: ${answer.status}`);
  return answer.data.groups.flatMap((group) => group.rules);
}

beforeAll(async () => {
  metricsPort = await freePort();
  driver = await startTestDriver({ metricsAddress: `127.0.0.1:${metricsPort}` });
  kubelet = new Kubelet(driver.work, () => driver.client, cap);
  data = join(driver.work, 'data');
  await mkdir(join(data, 'files'), { recursive: true });
  for (let i = 0; i < FILES; i += 1) {
    await writeRandomFile(join(data, 'files', `${i}.bin`), 128 * KiB);
  }
  await writeTree(join(data, 'small'), 4, 25);
  server = await LoopbackServer.start(data, 'http');
  const alertsYaml = await readFile(join(CHART_DIR, 'files', 'alerts.yaml'), 'utf8');
  shippedAlerts = [...alertsYaml.matchAll(/^\s*- alert: (\w+)$/gm)].map((m) => m[1] as string);
  prometheus = await TestPrometheus.start({
    job: 'dataset-cache-csi',
    targets: [`127.0.0.1:${metricsPort}`],
    // What docs/operations.md's relabelling (and the chart's PodMonitor) adds: the node's name.
    labels: { node: 'test-node' },
    rules: rulesOnFastClock(alertsYaml, FASTER),
  });
  const url = `http://127.0.0.1:${server.port}`;
  fuse = await stageAndPublish(
    'fuse',
    { source: `${url}/files/`, localCopy: 'false', cacheQuota: '16Mi' },
    'reader',
  );
  copy = await stageAndPublish('copy', { source: `${url}/`, prefetch: 'small/**' }, 'trainer');
}, 120_000);

afterAll(async () => {
  await prometheus?.stop();
  for (const [volume, pod] of [
    [fuse, 'reader'],
    [copy, 'trainer'],
  ] as const) {
    if (volume) await kubelet.stop(volume.volumeId, [pod]).catch(() => undefined);
  }
  await server?.stop();
  await driver?.dispose();
});

it('a healthy node fires nothing, and every query of the dashboard returns series', async () => {
  for (let i = 0; i < 20; i += 1) {
    await readFile(join(kubelet.target('reader'), `${i}.bin`));
  }
  await until('the prefetch to fill the copy', async () =>
    ((await Scrape.of(metricsPort)).dataset('prefetch_completed', copy.key) ?? 0) >= 1
      ? true
      : undefined,
  );
  await readFile(join(kubelet.target('trainer'), 'small', 'd0', 'f0.txt'));
  await until('Prometheus to hold both datasets', async () =>
    (await prometheus.query('dataset_cache_client_up == 1')).length === 2 ? true : undefined,
  );
  // Every rule evaluated 10 minutes of the rules' clock (10 s here) after the node was whole: a
  // rule true since then is pending by now, and firing if its `for` is at most 10 minutes.
  const evaluatedAfter = Date.now() + (10 * 60_000) / FASTER;
  const rules = await until(
    'Prometheus to evaluate every rule 10 minutes (of the rules) after set-up',
    async () => {
      const all = await alertRules();
      return all.every((r) => Date.parse(r.lastEvaluation) >= evaluatedAfter) ? all : undefined;
    },
    60_000,
    250,
  );
  // Every shipped rule loaded and evaluated without error: a rule that fails never fires.
  expect(rules.map((r) => r.name).sort()).toEqual(shippedAlerts.sort());
  expect(rules.filter((r) => r.health !== 'ok')).toEqual([]);
  expect(await prometheus.alerts()).toEqual([]);

  const dashboard = JSON.parse(
    await readFile(join(CHART_DIR, 'files', 'dashboard.json'), 'utf8'),
  ) as Dashboard;
  const empty: string[] = [];
  for (const { panel, expr } of dashboardQueries(dashboard)) {
    const query = expr
      .replaceAll('$node', '.*')
      .replaceAll('$dataset', '.*')
      .replaceAll('$__rate_interval', '1m');
    if ((await prometheus.query(query)).length === 0) empty.push(`${panel}: ${expr}`);
  }
  expect(empty).toEqual([]);
  // The dashboard's variables: nodes from the driver's info series, datasets per node.
  expect(await prometheus.labelValues('node', 'dataset_cache_csi_info')).toEqual(['test-node']);
  expect(
    (await prometheus.labelValues('dataset', 'dataset_cache_client_up{node=~"test-node"}')).sort(),
  ).toEqual([copy.key, fuse.key].sort());
}, 120_000);

it('a client killed over and over fires DatasetCacheClientRestarting, which resolves once it stays up', async () => {
  for (let kill = 0; kill < 5; kill += 1) await killAndAwaitRepair(fuse.key);
  const alert = await prometheus.untilFiring('DatasetCacheClientRestarting', {
    dataset: fuse.key,
  });
  expect(alert.labels).toMatchObject({ severity: 'warning', node: 'test-node' });
  await prometheus.untilResolved('DatasetCacheClientRestarting');
  expect((await readFile(join(kubelet.target('reader'), '0.bin'))).length).toBe(128 * KiB);
}, 180_000);

it('a stopped remote fires DatasetCacheRemoteUnreachable, a client that cannot come back DatasetCacheClientDown; both resolve when the remote is back', async () => {
  const port = server.port;
  await server.stop();
  await prometheus.untilFiring('DatasetCacheRemoteUnreachable', { dataset: fuse.key });
  const killed = await clientOf(fuse.key);
  process.kill(killed.pid, 'SIGKILL');
  const down = await prometheus.untilFiring('DatasetCacheClientDown', { dataset: fuse.key });
  expect(down.labels.severity).toBe('critical');
  server = await LoopbackServer.start(data, 'http', [], port);
  await prometheus.untilResolved('DatasetCacheClientDown');
  await prometheus.untilResolved('DatasetCacheRemoteUnreachable');
  expect((await readFile(join(kubelet.target('reader'), '1.bin'))).length).toBe(128 * KiB);
}, 240_000);

it('a cache full while it is read fires DatasetCacheFull, which is silent again once reading stops', async () => {
  // A working set three times the quota, read file after file: the engine evicts all along.
  let reading = true;
  const reader = (async () => {
    for (let i = 100; reading && i < FILES; i += 1) {
      await readFile(join(kubelet.target('reader'), `${i}.bin`));
      await sleep(50);
    }
  })();
  try {
    await prometheus.untilFiring('DatasetCacheFull', { dataset: fuse.key });
    const [full] = await prometheus.query(
      `dataset_cache_used_bytes{dataset="${fuse.key}"} / dataset_cache_capacity_bytes`,
    );
    process.stdout.write(`DatasetCacheFull fired at ${full?.value[1]} of the cache used\n`);
  } finally {
    reading = false;
    await reader;
  }
  await prometheus.untilResolved('DatasetCacheFull');
}, 180_000);

it('a driver that stops answering fires DatasetCacheDriverDown, which resolves when it is back', async () => {
  await driver.stopDriver();
  try {
    const alert = await prometheus.untilFiring('DatasetCacheDriverDown');
    expect(alert.labels).toMatchObject({ severity: 'critical', node: 'test-node' });
  } finally {
    await driver.restartDriver();
  }
  await prometheus.untilResolved('DatasetCacheDriverDown');
}, 120_000);
