import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parse } from 'yaml';

/**
 * The Helm chart is kept to what this renderer understands, so it can be rendered and checked
 * without helm: `{{ .Values.a.b }}`, `{{ .Release.Namespace }}`, `{{ .Chart.AppVersion }}`, each
 * optionally `| quote`. Anything else is an error, never silently left in a manifest.
 */
export interface ChartContext {
  Values: Record<string, unknown>;
  Release: { Namespace: string; Name: string };
  Chart: Record<string, unknown>;
}

export class ChartError extends Error {}

function lookup(context: ChartContext, path: string, where: string): string {
  let value: unknown = context;
  for (const part of path.split('.').slice(1)) {
    value = typeof value === 'object' && value !== null ? (value as Record<string, unknown>)[part] : undefined;
  }
  if (typeof value === 'string' || typeof value === 'number' || typeof value === 'boolean') return String(value);
  throw new ChartError(`${where}: ${path} is ${value === undefined ? 'not set' : 'not a scalar'}`);
}

export function renderTemplate(text: string, context: ChartContext, where = 'template'): string {
  return text.replace(/\{\{-?\s*(.*?)\s*-?\}\}/g, (_match, expression: string) => {
    const found = /^(\.(?:Values|Release|Chart)(?:\.[A-Za-z0-9_]+)+)(\s*\|\s*quote)?$/.exec(expression);
    if (!found) throw new ChartError(`${where}: unsupported template expression {{ ${expression} }}`);
    const value = lookup(context, found[1] as string, where);
    return found[2] ? JSON.stringify(value) : value;
  });
}

/** Every template of a chart rendered with its own values.yaml (and overrides): file name -> text. */
export async function renderChart(
  chartDir: string,
  namespace: string,
  overrides: Record<string, unknown> = {},
): Promise<Map<string, string>> {
  const values = { ...(parse(await readFile(join(chartDir, 'values.yaml'), 'utf8')) as Record<string, unknown>), ...overrides };
  const chart = parse(await readFile(join(chartDir, 'Chart.yaml'), 'utf8')) as Record<string, unknown>;
  const context: ChartContext = {
    Values: values,
    Release: { Namespace: namespace, Name: 'dataset-cache-csi' },
    Chart: { ...chart, AppVersion: chart.appVersion, Version: chart.version },
  };
  const rendered = new Map<string, string>();
  const templates = join(chartDir, 'templates');
  for (const name of (await readdir(templates)).filter((n) => n.endsWith('.yaml')).sort()) {
    rendered.set(name, renderTemplate(await readFile(join(templates, name), 'utf8'), context, name));
  }
  return rendered;
}
