/**
 * The shipped alert rules, checked by Prometheus's own promtool: valid, each alert proven by a
 * unit test (firing and silent cases), each annotated for an operator with a runbook anchor that
 * exists in the README, and each metric it names exported by the driver.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { parse } from 'yaml';
import { DriverMetrics } from '../../src/metrics/metrics.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const RULES = join(ROOT, 'deploy', 'monitoring', 'alerts.yaml');
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

/** GitHub's anchors of the README's headings. */
async function readmeAnchors(): Promise<Set<string>> {
  const readme = await readFile(join(ROOT, 'README.md'), 'utf8');
  return new Set(
    readme
      .split('\n')
      .filter((line) => /^#{1,4} /.test(line))
      .map((line) =>
        line
          .replace(/^#+ /, '')
          .toLowerCase()
          .replace(/[^a-z0-9 _-]/g, '')
          .replace(/ /g, '-'),
      ),
  );
}

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
  const anchors = await readmeAnchors();
  for (const rule of await rules()) {
    expect([rule.alert, Object.keys(rule.annotations).sort()]).toEqual([
      rule.alert,
      ['description', 'runbook_url', 'summary'],
    ]);
    expect([rule.alert, rule.labels.severity]).toEqual([
      rule.alert,
      expect.stringMatching(/^(critical|warning|info)$/),
    ]);
    const anchor = rule.annotations.runbook_url?.replace(/^README\.md#/, '') ?? '';
    expect([rule.alert, anchors.has(anchor)]).toEqual([rule.alert, true]);
  }
});

it('every metric the rules use is one the driver exports', async () => {
  const exported = new Set(
    new DriverMetrics({
      datasets: () => Promise.resolve([]),
      nodeCaches: () => ({
        limits: { memBytes: 0, diskBytes: 0, retentionMs: 0 },
        usedBytes: { mem: 0, disk: 0 },
        kept: [],
        evictions: { budget: 0, retention: 0, replaced: 0 },
      }),
    }).registry
      .getMetricsAsArray()
      .flatMap((m) => [m.name, `${m.name}_bucket`]),
  );
  exported.add('up'); // Prometheus's own, per scrape target
  for (const rule of await rules()) {
    const names = rule.expr.match(/\b[a-z_]+(?=[{[\s)]|$)/g) ?? [];
    const metrics = names.filter((n) => n.startsWith('dataset_cache') || n === 'up');
    expect(metrics.length).toBeGreaterThan(0);
    for (const name of metrics)
      expect([rule.alert, name, exported.has(name)]).toEqual([rule.alert, name, true]);
  }
});
