// Renders the Helm chart without helm, for the subset of Go templates the chart keeps to.
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parse, stringify } from 'yaml';

/**
 * The Helm chart is kept to what this renderer understands, so it can be rendered and checked
 * without helm:
 * - `{{ .Values.a.b }}`, `{{ .Release.Namespace }}`, `{{ .Chart.AppVersion }}`
 * - `{{ .Files.Get "files/x" }}` (a chart file, as it is: never templated) and `{{ toYaml .Values.a }}`
 * - pipes `| quote`, `| indent N`, `| nindent N`
 * - `{{ if .Values.a }}` … `{{ end }}` (Helm's truth: false, 0, "", and empty maps and lists are false)
 * - `{{-` and `-}}` trim the whitespace before and after, as Go templates do.
 * Anything else is an error, never silently left in a manifest.
 */
export interface ChartContext {
  Values: Record<string, unknown>;
  Release: { Namespace: string; Name: string };
  Chart: Record<string, unknown>;
  /** The chart's files outside templates/, by path relative to the chart. */
  Files: Map<string, string>;
}

export class ChartError extends Error {}

function lookup(context: ChartContext, path: string): unknown {
  let value: unknown = context;
  for (const part of path.split('.').slice(1)) {
    value =
      typeof value === 'object' && value !== null
        ? (value as Record<string, unknown>)[part]
        : undefined;
  }
  return value;
}

const scalar = (value: unknown, path: string, where: string): string => {
  if (typeof value === 'string' || typeof value === 'number' || typeof value === 'boolean')
    return String(value);
  throw new ChartError(`${where}: ${path} is ${value === undefined ? 'not set' : 'not a scalar'}`);
};

const truthy = (value: unknown): boolean =>
  Array.isArray(value)
    ? value.length > 0
    : typeof value === 'object' && value !== null
      ? Object.keys(value).length > 0
      : Boolean(value);

const indent = (text: string, width: number): string =>
  text
    .split('\n')
    .map((line) => ' '.repeat(width) + line)
    .join('\n');

const VALUE_PATH = /^\.(?:Values|Release|Chart)(?:\.[A-Za-z0-9_]+)+$/;

/** One pipeline: a value, a chart file or toYaml of a value, then its pipes. */
function evaluate(expression: string, context: ChartContext, where: string): string {
  const unsupported = () =>
    new ChartError(`${where}: unsupported template expression {{ ${expression} }}`);
  const [head = '', ...pipes] = expression.split('|').map((part) => part.trim());
  let text: string;
  const file = /^\.Files\.Get "([^"]+)"$/.exec(head);
  const toYaml = /^toYaml (\S+)$/.exec(head);
  if (file) {
    const content = context.Files.get(file[1] as string);
    if (content === undefined) throw new ChartError(`${where}: no chart file ${file[1]}`);
    text = content.replace(/\n$/, '');
  } else if (toYaml && VALUE_PATH.test(toYaml[1] as string)) {
    const value = lookup(context, toYaml[1] as string);
    if (value === undefined) throw new ChartError(`${where}: ${toYaml[1]} is not set`);
    text = stringify(value).replace(/\n$/, '');
  } else if (VALUE_PATH.test(head)) {
    text = scalar(lookup(context, head), head, where);
  } else throw unsupported();
  for (const pipe of pipes) {
    const width = /^(n?indent) (\d+)$/.exec(pipe);
    if (pipe === 'quote') text = JSON.stringify(text);
    else if (width)
      text = (width[1] === 'nindent' ? '\n' : '') + indent(text, Number(width[2]));
    else throw unsupported();
  }
  return text;
}

export function renderTemplate(text: string, context: ChartContext, where = 'template'): string {
  const action = /\{\{(-?)\s*(.*?)\s*(-?)\}\}/g;
  /** Whether each enclosing `if` holds. */
  const conditions: boolean[] = [];
  let output = '';
  let at = 0;
  let trimNext = false;
  const emit = (piece: string) => {
    if (conditions.every(Boolean)) output += piece;
  };
  for (let match = action.exec(text); match !== null; match = action.exec(text)) {
    const [whole, trimBefore, expression = '', trimAfter] = match;
    let before = text.slice(at, match.index);
    if (trimNext) before = before.replace(/^\s+/, '');
    if (trimBefore) before = before.replace(/\s+$/, '');
    emit(before);
    at = match.index + whole.length;
    trimNext = trimAfter === '-';
    const condition = /^if (\S+)$/.exec(expression);
    if (condition) {
      if (!VALUE_PATH.test(condition[1] as string))
        throw new ChartError(`${where}: unsupported condition {{ ${expression} }}`);
      conditions.push(truthy(lookup(context, condition[1] as string)));
    } else if (expression === 'end') {
      if (conditions.pop() === undefined) throw new ChartError(`${where}: {{ end }} without if`);
    } else if (conditions.every(Boolean)) {
      output += evaluate(expression, context, where);
    }
  }
  if (conditions.length > 0) throw new ChartError(`${where}: {{ if }} without end`);
  const rest = text.slice(at);
  emit(trimNext ? rest.replace(/^\s+/, '') : rest);
  return output;
}

/** Values with the overrides merged in, maps key by key (as `helm --set a.b=c` does). */
function merged(base: Record<string, unknown>, overrides: Record<string, unknown>) {
  const out: Record<string, unknown> = { ...base };
  for (const [key, value] of Object.entries(overrides)) {
    const current = out[key];
    const isMap = (v: unknown): v is Record<string, unknown> =>
      typeof v === 'object' && v !== null && !Array.isArray(v);
    out[key] = isMap(current) && isMap(value) ? merged(current, value) : value;
  }
  return out;
}

async function chartFiles(chartDir: string, dir = 'files'): Promise<Map<string, string>> {
  const files = new Map<string, string>();
  const entries = await readdir(join(chartDir, dir), { withFileTypes: true }).catch(() => []);
  for (const entry of entries) {
    const path = `${dir}/${entry.name}`;
    if (entry.isDirectory()) for (const [p, t] of await chartFiles(chartDir, path)) files.set(p, t);
    else files.set(path, await readFile(join(chartDir, path), 'utf8'));
  }
  return files;
}

/**
 * Every template of a chart rendered with its own values.yaml (and overrides): file name -> text.
 * A template that renders to nothing (a feature switched off) is left out, as helm does.
 */
export async function renderChart(
  chartDir: string,
  namespace: string,
  overrides: Record<string, unknown> = {},
): Promise<Map<string, string>> {
  const values = merged(
    parse(await readFile(join(chartDir, 'values.yaml'), 'utf8')) as Record<string, unknown>,
    overrides,
  );
  const chart = parse(await readFile(join(chartDir, 'Chart.yaml'), 'utf8')) as Record<
    string,
    unknown
  >;
  const context: ChartContext = {
    Values: values,
    Release: { Namespace: namespace, Name: 'dataset-cache-csi' },
    Chart: { ...chart, AppVersion: chart.appVersion, Version: chart.version },
    Files: await chartFiles(chartDir),
  };
  const rendered = new Map<string, string>();
  const templates = join(chartDir, 'templates');
  for (const name of (await readdir(templates)).filter((n) => n.endsWith('.yaml')).sort()) {
    const text = renderTemplate(await readFile(join(templates, name), 'utf8'), context, name);
    if (text.trim() !== '') rendered.set(name, text);
  }
  return rendered;
}
