// A real Prometheus on loopback for tests: scrapes given targets, evaluates given rules, answers its HTTP API.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { parse, stringify } from 'yaml';
import { terminateChild } from '../../src/kernel/proc.js';
import { freePort } from '../../src/util/net.js';
import { until } from './wait.js';

export interface ActiveAlert {
  labels: Record<string, string>;
  state: 'pending' | 'firing';
}

export interface Series {
  metric: Record<string, string>;
  value: [number, string];
}

interface ApiAnswer<T> {
  status: string;
  data: T;
  error?: string;
}

const UNIT_SECONDS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86400 };

/** A duration of the rules (one number and unit, as they are written) divided by `factor`. */
export function shortened(duration: string, factor: number): string {
  const match = /^(\d+)([smhd])$/.exec(duration);
  if (!match) throw new Error(`unexpected duration ${duration}`);
  const seconds = (Number(match[1]) * (UNIT_SECONDS[match[2] as string] as number)) / factor;
  return `${Math.max(1, Math.round(seconds))}s`;
}

/**
 * A rule file with every duration (`for` and range windows) divided by `factor`: the same rules
 * on a faster clock, so a test sees in seconds what an operator sees in minutes.
 */
export function rulesOnFastClock(rulesYaml: string, factor: number): string {
  const rules = parse(rulesYaml) as {
    groups: { rules: { expr: string; for?: string }[] }[];
  };
  for (const rule of rules.groups.flatMap((group) => group.rules)) {
    if (rule.for !== undefined) rule.for = shortened(rule.for, factor);
    rule.expr = rule.expr.replace(/\[(\w+)\]/g, (_, d: string) => `[${shortened(d, factor)}]`);
  }
  return stringify(rules);
}

export class TestPrometheus {
  private constructor(
    private readonly child: ResultPromise,
    private readonly dir: string,
    readonly port: number,
  ) {}

  /** Starts Prometheus scraping `job` at `targets` (with `labels`) every second, with `rules`. */
  static async start(options: {
    job: string;
    targets: string[];
    labels: Record<string, string>;
    rules: string;
  }): Promise<TestPrometheus> {
    const dir = await mkdtemp(join(tmpdir(), 'dcsi-prometheus-'));
    await writeFile(join(dir, 'rules.yaml'), options.rules);
    await writeFile(
      join(dir, 'prometheus.yaml'),
      stringify({
        global: { scrape_interval: '1s', evaluation_interval: '1s', scrape_timeout: '900ms' },
        rule_files: ['rules.yaml'],
        scrape_configs: [
          {
            job_name: options.job,
            static_configs: [{ targets: options.targets, labels: options.labels }],
          },
        ],
      }),
    );
    const port = await freePort();
    const child = execa(
      'prometheus',
      [
        `--config.file=${join(dir, 'prometheus.yaml')}`,
        `--storage.tsdb.path=${join(dir, 'data')}`,
        `--web.listen-address=127.0.0.1:${port}`,
        '--log.level=warn',
      ],
      { reject: false, stdin: 'ignore', stdout: 'ignore', stderr: 'pipe', cwd: dir },
    );
    const prometheus = new TestPrometheus(child, dir, port);
    try {
      await until(
        'Prometheus to be ready',
        async () =>
          (await fetch(`http://127.0.0.1:${port}/-/ready`).catch(() => undefined))?.ok
            ? true
            : undefined,
        30_000,
      );
    } catch (err) {
      await prometheus.stop();
      throw err;
    }
    return prometheus;
  }

  private async api<T>(path: string): Promise<T> {
    const response = await fetch(`http://127.0.0.1:${this.port}/api/v1/${path}`);
    const answer = (await response.json()) as ApiAnswer<T>;
    if (answer.status !== 'success') throw new Error(`Prometheus: ${path}: ${answer.error}`);
    return answer.data;
  }

  /** An instant query, evaluated now. */
  async query(expr: string): Promise<Series[]> {
    const data = await this.api<{ resultType: string; result: Series[] }>(
      `query?query=${encodeURIComponent(expr)}`,
    );
    return data.result;
  }

  async labelValues(label: string, match: string): Promise<string[]> {
    return this.api<string[]>(`label/${label}/values?match[]=${encodeURIComponent(match)}`);
  }

  async alerts(): Promise<ActiveAlert[]> {
    return (await this.api<{ alerts: ActiveAlert[] }>('alerts')).alerts;
  }

  /** Waits until alert `name` is firing (with these labels, when given); returns it. */
  async untilFiring(
    name: string,
    labels: Record<string, string> = {},
    ms = 90_000,
  ): Promise<ActiveAlert> {
    return until(
      `alert ${name} to fire`,
      async () =>
        (await this.alerts()).find(
          (alert) =>
            alert.labels.alertname === name &&
            alert.state === 'firing' &&
            Object.entries(labels).every(([k, v]) => alert.labels[k] === v),
        ),
      ms,
      250,
    );
  }

  /** Waits until no alert named `name` is pending or firing. */
  async untilResolved(name: string, ms = 90_000): Promise<void> {
    await until(
      `alert ${name} to resolve`,
      async () =>
        (await this.alerts()).some((alert) => alert.labels.alertname === name) ? undefined : true,
      ms,
      250,
    );
  }

  async stop(): Promise<void> {
    await terminateChild(this.child);
    await rm(this.dir, { recursive: true, force: true });
  }
}
