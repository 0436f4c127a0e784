// The code's layering: dependencies between the folders of src/ only point down (no folder reaches back to one that imports it), and no module grows past one concept's size.
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

const SRC = resolve(dirname(fileURLToPath(import.meta.url)), '../../src');
/** Generated code and the benchmark programs are not modules of the driver. */
const isExempt = (path: string): boolean =>
  path.split('/').includes('generated') || path.startsWith('bench/');
const MAX_LINES = 500;

function sources(dir = SRC): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return sources(path);
    return entry.name.endsWith('.ts') ? [path] : [];
  });
}

/** A module's place in the layering: its folder of src/, or itself for a file at the top. */
const unitOf = (file: string): string => {
  const path = relative(SRC, file);
  return path.includes('/') ? path.slice(0, path.indexOf('/')) : path;
};

/** Edges between units, from each file's relative imports (type-only imports count too). */
function unitGraph(files: string[]): Map<string, Set<string>> {
  const graph = new Map<string, Set<string>>();
  for (const file of files) {
    const from = unitOf(file);
    const edges = graph.get(from) ?? new Set<string>();
    graph.set(from, edges);
    for (const imported of ts.preProcessFile(readFileSync(file, 'utf8'), true, true)
      .importedFiles) {
      if (!imported.fileName.startsWith('.')) continue;
      const target = resolve(dirname(file), imported.fileName.replace(/\.js$/, '.ts'));
      if (!target.startsWith(`${SRC}/`)) continue;
      const to = unitOf(target);
      if (to !== from) edges.add(to);
    }
  }
  return graph;
}

/** The groups of units that reach each other (Tarjan's strongly connected components, size > 1). */
function cycles(graph: Map<string, Set<string>>): string[][] {
  let counter = 0;
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const found: string[][] = [];
  const visit = (node: string): void => {
    index.set(node, counter);
    low.set(node, counter);
    counter += 1;
    stack.push(node);
    onStack.add(node);
    for (const next of graph.get(node) ?? []) {
      if (!index.has(next)) {
        visit(next);
        low.set(node, Math.min(low.get(node)!, low.get(next)!));
      } else if (onStack.has(next)) {
        low.set(node, Math.min(low.get(node)!, index.get(next)!));
      }
    }
    if (low.get(node) === index.get(node)) {
      const group: string[] = [];
      let member: string;
      do {
        member = stack.pop()!;
        onStack.delete(member);
        group.push(member);
      } while (member !== node);
      if (group.length > 1) found.push(group.sort());
    }
  };
  for (const node of graph.keys()) if (!index.has(node)) visit(node);
  return found;
}

describe('layering of src/', () => {
  const files = sources().filter((file) => !isExempt(relative(SRC, file)));

  it('finds the folders it checks', () => {
    const units = [...unitGraph(files).keys()];
    for (const folder of ['csi', 'mount', 'copy', 'tier', 'supervisor', 'engines', 'kernel'])
      expect(units).toContain(folder);
  });

  it('has no folder that imports a folder importing it back, directly or through others', () => {
    expect(cycles(unitGraph(files))).toEqual([]);
  });

  it('would see a cycle: the check itself on a made-up graph', () => {
    const graph = new Map([
      ['mount', new Set(['copy'])],
      ['copy', new Set(['tier'])],
      ['tier', new Set(['copy', 'kernel'])],
      ['kernel', new Set<string>()],
    ]);
    expect(cycles(graph)).toEqual([['copy', 'tier']]);
  });

  it(`keeps every module under ${MAX_LINES} lines`, () => {
    const long = files
      .map((file) => ({
        file: relative(SRC, file),
        lines: readFileSync(file, 'utf8').split('\n').length,
      }))
      .filter(({ lines }) => lines > MAX_LINES);
    expect(long).toEqual([]);
  });
});
