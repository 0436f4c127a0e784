// Reading the names in directories of a mount that may hang (FUSE), from a short-lived child process.
import { join } from 'node:path';
import type { ProcessRunner } from './runner.js';

/** The names right below one directory: its directories, and everything else. */
export interface DirectoryEntries {
  directories: string[];
  others: string[];
}

/** `./` before a relative path keeps a name starting with `-` from being read as an option. */
const argument = (path: string) => (path.startsWith('/') ? path : `./${path}`);

/** Directories read alone, at most, after a read of several failed for one of them. */
const ALONE_AT_MOST = 16;

/**
 * The entries of each directory below `root` that could be read whole (those missing, unreadable
 * or failing midway are left out), by their names relative to it. One `find` for them all, at the
 * lowest priority: a FUSE directory whose listing hangs blocks that process only, which the
 * timeout ends. Names are NUL-separated, so any name a file can have is read as it is. find tells
 * a directory before it reads it, and its error messages escape odd names: only a read that ended
 * without any error is taken; after one that failed for some directory, each is read alone.
 */
export async function readDirectories(
  runner: ProcessRunner,
  root: string,
  directories: string[],
  timeoutMs = 30_000,
): Promise<Map<string, DirectoryEntries>> {
  const found = new Map<string, DirectoryEntries>();
  if (directories.length === 0) return found;
  const deadline = Date.now() + timeoutMs;
  const byArgument = new Map(directories.map((dir) => [argument(join(root, dir)), dir]));
  const result = await runner.run(
    'nice',
    ['-n', '19', 'find', ...byArgument.keys(), '-maxdepth', '1', '-printf', '%H\\0%d\\0%y\\0%f\\0'],
    timeoutMs,
  );
  if (result.exitCode === 1 && directories.length > 1) {
    // find went on past the failure (a directory missing or unreadable): the others may be whole.
    // Within the one deadline: a caller waits no longer for a failure than for a success.
    for (const dir of directories.slice(0, ALONE_AT_MOST)) {
      const left = deadline - Date.now();
      if (left <= 0) break;
      const alone = await readDirectories(runner, root, [dir], left);
      for (const [name, entries] of alone) found.set(name, entries);
    }
    return found;
  }
  // Killed (timed out), or a directory that could not be read whole.
  if (result.exitCode !== 0) return found;
  const fields = result.stdout.split('\0');
  for (let i = 0; i + 3 < fields.length; i += 4) {
    const dir = byArgument.get(fields[i]!);
    if (dir === undefined) continue;
    if (fields[i + 1] === '0') {
      // The directory itself, told before its entries.
      if (fields[i + 2] === 'd') found.set(dir, { directories: [], others: [] });
      continue;
    }
    const entries = found.get(dir);
    entries?.[fields[i + 2] === 'd' ? 'directories' : 'others'].push(fields[i + 3]!);
  }
  return found;
}
