/**
 * The shipped monitoring, checked offline: the alert rules by Prometheus's own promtool (valid,
 * each alert proven by a unit test with firing and silent cases, annotated for an operator with a
 * severity, a summary, a description and a runbook link), the dashboard's structure, every metric
 * either names exported by the driver, and the chart's monitoring objects against the Prometheus
 * Operator's schemas. (test/integration/prometheus.test.ts runs them against a real Prometheus;
 * test/unit/docs.test.ts checks that every runbook link names a section that exists.)
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { parse, parseAllDocuments } from 'yaml';
import {
  PodMonitor,
  PrometheusRule,
} from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1';
import { ConfigMap } from 'kubernetes-models/v1';
import { renderChart } from '../../src/deploy/chart.js';
import { CHART_DIR } from '../../src/deploy/render-manifests.js';
import { DriverMetrics } from '../../src/metrics/metrics.js';
import { dashboardQueries, type Dashboard } from '../helpers/dashboard.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const RULES = join(CHART_DIR, 'files', 'alerts.yaml');
const DASHBOARD = join(CHART_DIR, 'files', 'dashboard.json');
const RULE_TESTS = join(ROOT, 'deploy', 'monitoring', 'alerts.test.yaml');

interface Rule {
  alert: string;
  expr: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
}
const rules = async (): Promise<Rule[]> =>
  (parse(await readFile(RULES, 'utf8')) as { groups: { rules: Rule[] }[] }).groups.flatMap(
    (group) => group.rules,
  );

it('promtool accepts the rules', async () => {
  const check = await execa('promtool', ['check', 'rules', RULES], { reject: false });
  expect([check.exitCode, check.stdout]).toEqual([0, expect.stringContaining('SUCCESS')]);
});

it("promtool's unit tests of every alert pass", async () => {
  const result = await execa('promtool', ['test', 'rules', RULE_TESTS], { reject: false });
  expect([result.exitCode, result.stdout + result.stderr]).toEqual([
    0,
    expect.stringContaining('SUCCESS'),
  ]);
  const tested = new Set(
    (
      parse(await readFile(RULE_TESTS, 'utf8')) as {
        tests: { alert_rule_test: { alertname: string; exp_alerts: unknown[] }[] }[];
      }
    ).tests.flatMap((t) =>
      t.alert_rule_test.filter((a) => a.exp_alerts.length > 0).map((a) => a.alertname),
    ),
  );
  expect((await rules()).map((r) => r.alert).filter((name) => !tested.has(name))).toEqual([]);
});

it('every alert tells an operator what happened, how bad it is and where to read on', async () => {
  for (const rule of await rules()) {
    expect([rule.alert, Object.keys(rule.annotations).sort()]).toEqual([
      rule.alert,
      ['description', 'runbook_url', 'summary'],
    ]);
    expect([rule.alert, rule.labels.severity]).toEqual([
      rule.alert,
      expect.stringMatching(/^(critical|warning|info)$/),
    ]);
    // A page of the docs and one of its sections; that both exist is test/unit/docs.test.ts's job.
    expect([rule.alert, rule.annotations.runbook_url]).toEqual([
      rule.alert,
      expect.stringMatching(/^docs\/[a-z-]+\.md#[a-z0-9-]+$/),
    ]);
  }
});

/** Every metric name the driver's registry exports (histograms with their _bucket series). */
function exportedMetrics(): Set<string> {
  const exported = new Set(
    new DriverMetrics(
      {
        datasets: () => Promise.resolve([]),
        nodeCaches: () => ({
          limits: { memBytes: 0, diskBytes: 0, retentionMs: 0 },
          usedBytes: { mem: 0, disk: 0 },
          kept: [],
          evictions: { budget: 0, retention: 0, replaced: 0 },
        }),
      },
      { node: 'node-1', version: '0.0.0', mode: 'node' },
    ).registry
      .getMetricsAsArray()
      .flatMap((m) => [m.name, `${m.name}_bucket`]),
  );
  exported.add('up'); // Prometheus's own, per scrape target
  return exported;
}

/** The metric names a PromQL expression selects (at least one). */
function metricsIn(expr: string): string[] {
  const names = expr.match(/\b[a-z_]+(?=[{[\s)]|$)/g) ?? [];
  const metrics = names.filter((n) => n.startsWith('dataset_cache') || n === 'up');
  expect([expr, metrics.length > 0]).toEqual([expr, true]);
  return metrics;
}

it('every metric the rules and the dashboard use is one the driver exports', async () => {
  const exported = exportedMetrics();
  const dashboard = JSON.parse(await readFile(DASHBOARD, 'utf8')) as Dashboard;
  const exprs = [
    ...(await rules()).map((rule) => [rule.alert, rule.expr]),
    ...dashboardQueries(dashboard).map((q) => [q.panel, q.expr]),
  ];
  for (const [where, expr] of exprs) {
    for (const name of metricsIn(expr as string))
      expect([where, name, exported.has(name)]).toEqual([where, name, true]);
  }
});

it('the dashboard: a datasource variable, node and dataset filters on every query, units', async () => {
  const dashboard = JSON.parse(await readFile(DASHBOARD, 'utf8')) as Dashboard;
  const variables = dashboard.templating.list.map((v) => [v.name, v.type]);
  expect(variables).toEqual([
    ['datasource', 'datasource'],
    ['node', 'query'],
    ['dataset', 'query'],
  ]);
  const queries = dashboardQueries(dashboard);
  expect(queries.length).toBeGreaterThanOrEqual(20);
  for (const query of queries) {
    expect([query.panel, query.datasource]).toEqual([query.panel, '${datasource}']);
    // Per node everywhere; per dataset wherever the series has a dataset.
    expect([query.panel, query.expr]).toEqual([
      query.panel,
      expect.stringContaining('node=~"$node"'),
    ]);
    if (/dataset_cache_(?!csi_|node_)/.test(query.expr))
      expect([query.panel, query.expr]).toEqual([
        query.panel,
        expect.stringContaining('dataset=~"$dataset"'),
      ]);
  }
  const panels = dashboard.panels.filter((p) => p.type !== 'row');
  for (const panel of panels) {
    expect([panel.title, typeof panel.description, panel.fieldConfig?.defaults.unit]).toEqual([
      panel.title,
      'string',
      expect.any(String),
    ]);
  }
  // Panels do not overlap on Grafana's 24-column grid.
  const cells = new Set<string>();
  for (const { gridPos } of dashboard.panels) {
    for (let x = gridPos.x; x < gridPos.x + gridPos.w; x += 1)
      for (let y = gridPos.y; y < gridPos.y + gridPos.h; y += 1) {
        expect(cells.has(`${x},${y}`)).toBe(false);
        cells.add(`${x},${y}`);
      }
    expect(gridPos.x + gridPos.w).toBeLessThanOrEqual(24);
  }
});

/** The chart's monitoring objects: each value that asks for one, and the file it renders to. */
const MONITORING = {
  podMonitor: 'podmonitor.yaml',
  prometheusRule: 'prometheusrule.yaml',
  dashboard: 'dashboard.yaml',
} as const;
const monitoringIn = (rendered: Map<string, string>): string[] =>
  Object.values(MONITORING).filter((name) => rendered.has(name));

it('the chart installs the monitoring only when asked, and what it installs is valid and the same', async () => {
  // Off by default: none of the three objects.
  expect(monitoringIn(await renderChart(CHART_DIR, 'ns'))).toEqual([]);
  // Each value installs its own object and no other.
  for (const [value, file] of Object.entries(MONITORING)) {
    const alone = await renderChart(CHART_DIR, 'ns', {
      monitoring: { [value]: { enabled: true } },
    });
    expect([value, monitoringIn(alone)]).toEqual([value, [file]]);
  }
  const rendered = await renderChart(CHART_DIR, 'storage', {
    monitoring: {
      labels: { release: 'prometheus' },
      podMonitor: { enabled: true },
      prometheusRule: { enabled: true },
      dashboard: { enabled: true },
    },
  });
  const one = (name: string) => {
    const docs = parseAllDocuments(rendered.get(name) ?? '').map((d) => d.toJSON() as unknown);
    expect(docs.length).toBe(1);
    return docs[0] as { metadata: { namespace: string; labels: Record<string, string> } };
  };
  const rule = one('prometheusrule.yaml') as ReturnType<typeof one> & { spec: unknown };
  new PrometheusRule(rule as never).validate();
  expect(rule.metadata).toMatchObject({ namespace: 'storage', labels: { release: 'prometheus' } });
  // The rules are the plain file's, with Prometheus's own templates ({{ $labels.x }}) intact.
  expect(rule.spec).toEqual(parse(await readFile(RULES, 'utf8')));

  const monitor = one('podmonitor.yaml') as ReturnType<typeof one> & {
    spec: { selector: unknown; podMetricsEndpoints: { port: string; relabelings: unknown[] }[] };
  };
  new PodMonitor(monitor as never).validate();
  expect(monitor.metadata).toMatchObject({
    namespace: 'storage',
    labels: { release: 'prometheus' },
  });
  const node = parseAllDocuments(rendered.get('node.yaml') ?? '')[0]?.toJSON() as {
    spec: {
      selector: unknown;
      template: { spec: { containers: { ports?: { name: string }[] }[] } };
    };
  };
  expect(monitor.spec.selector).toEqual(node.spec.selector);
  const ports = node.spec.template.spec.containers.flatMap((c) => c.ports ?? []).map((p) => p.name);
  expect(ports).toContain(monitor.spec.podMetricsEndpoints[0]?.port);
  expect(monitor.spec.podMetricsEndpoints[0]?.relabelings).toEqual([
    { targetLabel: 'job', replacement: 'dataset-cache-csi' },
    { sourceLabels: ['__meta_kubernetes_pod_node_name'], targetLabel: 'node' },
  ]);

  const dashboard = one('dashboard.yaml') as ReturnType<typeof one> & {
    data: Record<string, string>;
  };
  new ConfigMap(dashboard as never).validate();
  expect(dashboard.metadata.namespace).toBe('storage');
  expect(dashboard.metadata.labels).toEqual({ grafana_dashboard: '1' });
  expect(JSON.parse(dashboard.data['dataset-cache-csi.json'] ?? '')).toEqual(
    JSON.parse(await readFile(DASHBOARD, 'utf8')),
  );
});
