// Keeps the docs from drifting: links and anchors resolve, named files exist, the README's example is valid, every parameter, flag and Helm value the code accepts is documented, every alert's runbook exists.
import { existsSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import GithubSlugger from 'github-slugger';
import MarkdownIt, { type Token } from 'markdown-it';
import ts from 'typescript';
import { parse, parseAllDocuments } from 'yaml';
import { PersistentVolumeClaim, Pod } from 'kubernetes-models/v1';
import { StorageClass } from 'kubernetes-models/storage.k8s.io/v1';
import { KNOWN_KEYS, parseVolumeParameters } from '../../src/dataset/params.js';
import { CHART_DIR } from '../../src/deploy/render-manifests.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const DOCS = join(ROOT, 'docs');
const PARAMETERS = join(DOCS, 'parameters.md');
const RULES = join(CHART_DIR, 'files', 'alerts.yaml');
const markdown = new MarkdownIt({ html: true });

/** README.md and every page of docs/, as paths relative to the repository. */
async function pages(): Promise<string[]> {
  const docs = (await readdir(DOCS)).filter((name) => name.endsWith('.md')).sort();
  return ['README.md', ...docs.map((name) => `docs/${name}`)];
}

const tokensOf = async (page: string): Promise<Token[]> =>
  markdown.parse(await readFile(join(ROOT, page), 'utf8'), {});

/** Every token, with the children of inline tokens in their place. */
const flat = (tokens: Token[]): Token[] => tokens.flatMap((t) => [t, ...flat(t.children ?? [])]);

/** A heading's text as GitHub renders it: code spans keep their content, markup is dropped. */
const textOf = (inline: Token | undefined): string =>
  (inline?.children ?? [])
    .filter((child) => child.type === 'text' || child.type === 'code_inline')
    .map((child) => child.content)
    .join('');

/** The anchors GitHub gives a page's headings (github-slugger: the same slugs, -1 for repeats). */
async function anchorsOf(page: string): Promise<Set<string>> {
  const tokens = await tokensOf(page);
  const slugger = new GithubSlugger();
  return new Set(
    tokens.flatMap((token, i) =>
      token.type === 'heading_open' ? [slugger.slug(textOf(tokens[i + 1]))] : [],
    ),
  );
}

/** Links and images of a page that stay in the repository (not http(s), not mailto). */
async function localLinks(page: string): Promise<string[]> {
  return flat(await tokensOf(page))
    .map((t) =>
      t.type === 'link_open' ? t.attrGet('href') : t.type === 'image' ? t.attrGet('src') : null,
    )
    .filter((href): href is string => typeof href === 'string')
    .filter((href) => !/^(https?:|mailto:)/i.test(href));
}

/** Where a link from a page leads, relative to the repository, or why it leads nowhere. */
async function brokenLink(page: string, href: string): Promise<string | undefined> {
  const [path = '', anchor] = href.split('#');
  const target = path === '' ? page : relative(ROOT, resolve(ROOT, dirname(page), path));
  if (target.startsWith('..')) return 'leaves the repository';
  if (!existsSync(join(ROOT, target))) return `${target} does not exist`;
  if (anchor === undefined) return undefined;
  if (!target.endsWith('.md')) return `${target} is not a page with sections`;
  if (!(await anchorsOf(target)).has(anchor)) return `${target} has no section #${anchor}`;
  return undefined;
}

it('every relative link and #anchor in the README and docs/ resolves', async () => {
  const broken: string[] = [];
  let checked = 0;
  for (const page of await pages()) {
    for (const href of await localLinks(page)) {
      checked += 1;
      const why = await brokenLink(page, href);
      if (why) broken.push(`${page}: ${href}: ${why}`);
    }
  }
  expect(broken).toEqual([]);
  expect(checked).toBeGreaterThan(20);
});

it('every page of docs/ is linked from the README', async () => {
  const linked = new Set((await localLinks('README.md')).map((href) => href.split('#')[0]));
  const unlinked = (await pages()).slice(1).filter((page) => !linked.has(page));
  expect(unlinked).toEqual([]);
});

it('every file of the repository the docs name in code exists', async () => {
  // `src/…`, `test/…`, `deploy/…` and the like; patterns, placeholders and commands are not paths.
  const TOP = /^(src|test|deploy|charts|scripts|csi-sanity|proto|bench|docs|\.ci)\//;
  const missing: string[] = [];
  for (const page of await pages()) {
    for (const token of flat(await tokensOf(page))) {
      const path = token.content.replace(/^\.\//, '');
      if (token.type !== 'code_inline' || !TOP.test(path) || /[\s<>*…{}$]/.test(path)) continue;
      if (!existsSync(join(ROOT, path))) missing.push(`${page}: ${path}`);
    }
  }
  expect(missing).toEqual([]);
});

/** The first column of the first table after a heading: the keys a reference table documents. */
async function tableKeys(page: string, heading: string): Promise<string[]> {
  const tokens = await tokensOf(page);
  const at = tokens.findIndex(
    (t, i) => t.type === 'heading_open' && textOf(tokens[i + 1]) === heading,
  );
  expect([heading, at >= 0]).toEqual([heading, true]);
  const keys: string[] = [];
  let firstCell = false;
  for (const token of tokens.slice(at + 1)) {
    if (token.type === 'table_close') break;
    if (token.type === 'tr_open') firstCell = true;
    else if (token.type === 'td_open' || token.type === 'th_open') continue;
    else if (token.type === 'inline' && firstCell) {
      firstCell = false;
      keys.push(
        ...(token.children ?? []).filter((c) => c.type === 'code_inline').map((c) => c.content),
      );
    }
  }
  return keys;
}

it('docs/parameters.md has a row for every parameter the schema accepts, and for no other', async () => {
  const documented = await tableKeys('docs/parameters.md', 'StorageClass and volume parameters');
  expect([...new Set(documented)].sort()).toEqual([...KNOWN_KEYS].sort());
});

it("the README's example is valid Kubernetes, and the driver accepts its StorageClass", async () => {
  const blocks = (await tokensOf('README.md')).filter(
    (t) => t.type === 'fence' && t.info.trim() === 'yaml',
  );
  const objects = blocks.flatMap((block) =>
    parseAllDocuments(block.content).map((d) => d.toJSON() as { kind: string }),
  );
  expect(objects.map((o) => o.kind)).toEqual(['StorageClass', 'PersistentVolumeClaim', 'Pod']);
  const MODELS: Record<string, (o: never) => { validate(): void }> = {
    StorageClass: (o) => new StorageClass(o),
    PersistentVolumeClaim: (o) => new PersistentVolumeClaim(o),
    Pod: (o) => new Pod(o),
  };
  for (const object of objects) MODELS[object.kind]?.(object as never).validate();
  const storageClass = objects[0] as unknown as {
    provisioner: string;
    parameters: Record<string, string>;
  };
  expect(storageClass.provisioner).toBe(
    (parse(await readFile(join(CHART_DIR, 'values.yaml'), 'utf8')) as { driverName: string })
      .driverName,
  );
  expect(() => parseVolumeParameters(storageClass.parameters)).not.toThrow();
});

/** src/**.ts, without generated code. */
async function sources(dir = join(ROOT, 'src')): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true });
  const nested = await Promise.all(
    entries.map((e) =>
      e.isDirectory()
        ? e.name === 'generated'
          ? []
          : sources(join(dir, e.name))
        : e.name.endsWith('.ts')
          ? [join(dir, e.name)]
          : [],
    ),
  );
  return nested.flat();
}

const nameOf = (name: ts.PropertyName): string | undefined =>
  ts.isIdentifier(name) || ts.isStringLiteral(name) ? name.text : undefined;

/** The options of every parseArgs({ options: { … } }) call in src/: each flag -> where it is read. */
async function flagsInCode(): Promise<Map<string, string>> {
  const flags = new Map<string, string>();
  for (const file of await sources()) {
    const text = await readFile(file, 'utf8');
    if (!text.includes('parseArgs(')) continue;
    const visit = (node: ts.Node): void => {
      const options =
        ts.isCallExpression(node) &&
        ts.isIdentifier(node.expression) &&
        node.expression.text === 'parseArgs' &&
        node.arguments[0] !== undefined &&
        ts.isObjectLiteralExpression(node.arguments[0])
          ? node.arguments[0].properties.find(
              (p): p is ts.PropertyAssignment =>
                ts.isPropertyAssignment(p) && nameOf(p.name) === 'options',
            )?.initializer
          : undefined;
      if (options && ts.isObjectLiteralExpression(options)) {
        for (const option of options.properties) {
          const flag = ts.isPropertyAssignment(option) ? nameOf(option.name) : undefined;
          if (flag) flags.set(flag, relative(ROOT, file));
        }
      }
      ts.forEachChild(node, visit);
    };
    visit(ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true));
  }
  return flags;
}

it('docs/parameters.md names every flag of every command', async () => {
  const page = await readFile(PARAMETERS, 'utf8');
  const flags = await flagsInCode();
  // The driver's own flags and those of its subcommands are all found (the scan itself works).
  expect([...flags.keys()]).toEqual(
    expect.arrayContaining([
      'endpoint',
      'cluster-tier',
      'dataset',
      'socket',
      'secrets-file',
      'quick',
    ]),
  );
  const escape = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const missing = [...flags]
    .filter(([flag]) => !new RegExp(`--${escape(flag)}(?![\\w-])`).test(page))
    .map(([flag, file]) => `--${flag} (${file})`);
  expect(missing).toEqual([]);
});

/** Dotted paths of a values file's leaves (scalars, lists and empty maps such as labels: {}). */
function leaves(values: unknown, prefix = ''): string[] {
  if (typeof values !== 'object' || values === null || Array.isArray(values)) return [prefix];
  const entries = Object.entries(values);
  if (entries.length === 0) return [prefix];
  return entries.flatMap(([key, value]) => leaves(value, prefix ? `${prefix}.${key}` : key));
}

it('docs/parameters.md names every Helm value of the chart', async () => {
  const page = await readFile(PARAMETERS, 'utf8');
  const values = leaves(parse(await readFile(join(CHART_DIR, 'values.yaml'), 'utf8')));
  expect(values.length).toBeGreaterThan(20);
  expect(values.filter((path) => !page.includes(`\`${path}\``))).toEqual([]);
});

it("every alert's runbook_url names a page and a section of it that exist", async () => {
  const rules = (
    parse(await readFile(RULES, 'utf8')) as {
      groups: { rules: { alert: string; annotations: { runbook_url?: string } }[] }[];
    }
  ).groups.flatMap((group) => group.rules);
  expect(rules.length).toBeGreaterThan(0);
  const broken: string[] = [];
  for (const rule of rules) {
    const url = rule.annotations.runbook_url ?? '';
    // Relative to the repository's root, where the docs' pages are.
    const why = url.includes('#') ? await brokenLink('README.md', url) : 'has no #section';
    if (why) broken.push(`${rule.alert}: ${url}: ${why}`);
  }
  expect(broken).toEqual([]);
});
