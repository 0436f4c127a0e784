// What a fill lists for its globs, and which directories its listing proves the copy holds whole.
import { globBase } from '../dataset/patterns.js';

/** A directory to list for the globs, and how deep below it they can match (undefined: any depth). */
export interface Listing {
  base: string;
  maxDepth?: number;
}

/** How many directory levels below its base a glob can match; undefined when any (`**`, braces). */
function globDepth(glob: string): number | undefined {
  const base = globBase(glob);
  const rest = base === '' ? glob : glob.slice(base.length + 1);
  return /\*\*|\{/.test(rest) ? undefined : rest.split('/').length;
}

/**
 * What to list for the globs: each base once, as deep as its deepest glob needs (a literal path
 * lists one directory, not the dataset), without the bases another listing already covers.
 */
export function listingsFor(globs: string[]): Listing[] {
  const byBase = new Map<string, Listing>();
  for (const glob of globs) {
    const base = globBase(glob);
    const depth = globDepth(glob);
    const known = byBase.get(base);
    const maxDepth =
      known === undefined
        ? depth
        : known.maxDepth === undefined || depth === undefined
          ? undefined
          : Math.max(known.maxDepth, depth);
    byBase.set(base, { base, ...(maxDepth === undefined ? {} : { maxDepth }) });
  }
  const listings = [...byBase.values()].sort((a, b) => a.base.localeCompare(b.base));
  const levels = (dir: string) => (dir === '' ? 0 : dir.split('/').length);
  const covers = (outer: Listing, inner: Listing): boolean => {
    if (outer === inner) return false;
    if (outer.base !== '' && !inner.base.startsWith(`${outer.base}/`)) return false;
    if (outer.maxDepth === undefined) return true;
    return (
      inner.maxDepth !== undefined &&
      outer.maxDepth >= levels(inner.base) - levels(outer.base) + inner.maxDepth
    );
  };
  return listings.filter((inner) => !listings.some((outer) => covers(outer, inner)));
}

/**
 * The outermost directories below a listing base whose every listed file the copy holds: the
 * overlay need not look below the copy there. (A remote directory with no file in it is not in a
 * files-only listing: inside a complete directory it is not shown.)
 */
export function completeDirectories(
  bases: string[],
  listed: string[],
  held: Set<string>,
): string[] {
  const incomplete = new Set<string>();
  const known = new Set<string>();
  for (const file of listed) {
    const base = bases.find((b) => b === '' || file.startsWith(`${b}/`));
    if (base === undefined) continue;
    const parts = file.split('/');
    const first = base === '' ? 1 : base.split('/').length;
    for (let depth = first; depth < parts.length; depth += 1) {
      const dir = parts.slice(0, depth).join('/');
      known.add(dir);
      if (!held.has(file)) incomplete.add(dir);
    }
  }
  const complete = [...known].filter((dir) => !incomplete.has(dir));
  const completeSet = new Set(complete);
  return complete.filter((dir) => !completeSet.has(dir.split('/').slice(0, -1).join('/'))).sort();
}
