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

/**
 * The entries of each directory below `root` that could be read (those missing or unreadable are
 * left out), by their names relative to it.
 * One `find` for them all, at the lowest priority: a FUSE directory whose listing hangs blocks that
 * process only, which the timeout ends. Names are NUL-separated, so any name a file can have is
 * read as it is.
 */
export async function readDirectories(
  runner: ProcessRunner,
  root: string,
  directories: string[],
  timeoutMs = 30_000,
): Promise<Map<string, DirectoryEntries>> {
  const found = new Map<string, DirectoryEntries>();
  if (directories.length === 0) return found;
  const byArgument = new Map(directories.map((dir) => [argument(join(root, dir)), dir]));
  const result = await runner.run(
    'nice',
    ['-n', '19', 'find', ...byArgument.keys(), '-maxdepth', '1', '-printf', '%H\\0%d\\0%y\\0%f\\0'],
    timeoutMs,
  );
  // Killed (timed out) or worse: any directory's entries may be cut short.
  if (result.exitCode !== 0 && result.exitCode !== 1) return found;
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
  // A directory find could not read (missing, or failing midway) is named in its error output.
  for (const [path, dir] of byArgument) {
    if (result.stderr.includes(`'${path}`)) found.delete(dir);
  }
  return found;
}
