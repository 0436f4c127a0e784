import { readdir, readFile } from 'node:fs/promises';

/** PIDs whose command line contains every given word (for counting, never for killing). */
export async function pidsWithArgs(...words: string[]): Promise<number[]> {
  const pids: number[] = [];
  for (const name of await readdir('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const args = (await readFile(`/proc/${name}/cmdline`, 'utf8')).split('\0');
      if (words.every((word) => args.some((arg) => arg.includes(word)))) pids.push(Number(name));
    } catch {
      // exited meanwhile
    }
  }
  return pids;
}
