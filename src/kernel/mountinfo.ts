// The mount table as /proc/self/mountinfo gives it: its entries parsed, and looked up by mount point.
import { readFile } from 'node:fs/promises';

export interface MountEntry {
  id: number;
  parentId: number;
  /** major:minor of the filesystem; bind mounts of one mount share it. */
  device: string;
  /** Directory of the filesystem that is mounted here ("/" or a sub-directory for binds). */
  root: string;
  mountPoint: string;
  options: string[];
  fsType: string;
  source: string;
}

/** mountinfo escapes space, tab, newline and backslash as octal. */
function unescape(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, octal: string) =>
    String.fromCharCode(parseInt(octal, 8)),
  );
}

export function parseMountInfo(text: string): MountEntry[] {
  const entries: MountEntry[] = [];
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const fields = line.split(' ');
    const separator = fields.indexOf('-', 6);
    if (separator < 0 || fields.length < separator + 3) continue;
    entries.push({
      id: Number(fields[0]),
      parentId: Number(fields[1]),
      device: fields[2] as string,
      root: unescape(fields[3] as string),
      mountPoint: unescape(fields[4] as string),
      options: (fields[5] as string).split(','),
      fsType: fields[separator + 1] as string,
      source: unescape(fields[separator + 2] as string),
    });
  }
  return entries;
}

export class MountTable {
  constructor(readonly entries: MountEntry[]) {}

  static async read(path = '/proc/self/mountinfo'): Promise<MountTable> {
    return new MountTable(parseMountInfo(await readFile(path, 'utf8')));
  }

  /** The mount visible at a path: the last one mounted there hides the others. */
  at(mountPoint: string): MountEntry | undefined {
    for (let i = this.entries.length - 1; i >= 0; i -= 1) {
      const entry = this.entries[i] as MountEntry;
      if (entry.mountPoint === mountPoint) return entry;
    }
    return undefined;
  }

  countAt(mountPoint: string): number {
    return this.entries.filter((entry) => entry.mountPoint === mountPoint).length;
  }

  under(prefix: string): MountEntry[] {
    return this.entries.filter(
      (entry) => entry.mountPoint === prefix || entry.mountPoint.startsWith(`${prefix}/`),
    );
  }
}
