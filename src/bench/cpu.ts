// CPU seconds from /proc for the benchmarks: process trees, processes of a network namespace, this process, and the machine's busy time over a window.
import { readdir, readFile, readlink, stat } from 'node:fs/promises';
import { execa } from 'execa';

/**
 * What a group of processes is:
 * - `tree`: a process and every process below it (a driver, its clients and transfers);
 * - `process`: that process's own threads only (this harness, whose children are other groups);
 * - `netns`: the processes in a named namespace (`ip netns`) whose command line holds `cmdline`.
 */
export type CpuSelector =
  { tree: number } | { process: number } | { netns: string; cmdline: string };

/** One process as /proc/PID/stat shows it, times in clock ticks. */
interface Proc {
  ppid: number;
  /** utime + stime: its own threads. */
  own: number;
  /** cutime + cstime: the children it reaped (each with what they had reaped). */
  reaped: number;
}

/** CPU seconds over a window; NaN for a group whose process was gone at either end. */
export interface CpuWindow {
  wallSeconds: number;
  /** Online cores (the `cpuN` lines of /proc/stat). */
  cores: number;
  /** Every core's non-idle time (user, nice, system, irq, softirq, steal) from /proc/stat. */
  machineBusySeconds: number;
  /** machineBusySeconds / (wallSeconds × cores): 1 means no core was ever idle. */
  saturation: number;
  /** Per group: utime + stime of its processes, children they reaped included. */
  groups: Record<string, number>;
  /** Kernel threads (kthreadd's): softirq work pushed to ksoftirqd, kworkers. */
  kernelThreadSeconds: number;
  /** Every other process on the machine: other work on it, daemons, this run's short commands. */
  restSeconds: number;
}

let clockTicks: Promise<number> | undefined;
/** USER_HZ: the unit of /proc's CPU times (100 on every Linux this runs on; asked once). */
const ticksPerSecond = (): Promise<number> =>
  (clockTicks ??= execa('getconf', ['CLK_TCK'], { reject: false }).then((r) => {
    const hz = Number(r.stdout);
    return Number.isFinite(hz) && hz > 0 ? hz : 100;
  }));

async function processTable(): Promise<Map<number, Proc>> {
  const table = new Map<number, Proc>();
  const pids = (await readdir('/proc')).filter((name) => /^\d+$/.test(name));
  await Promise.all(
    pids.map(async (name) => {
      const line = await readFile(`/proc/${name}/stat`, 'utf8').catch(() => undefined);
      if (!line) return;
      // The command name (field 2) may hold spaces and parentheses: fields start after the last ')'.
      const f = line.slice(line.lastIndexOf(')') + 2).split(' ');
      const n = (i: number) => Number(f[i] ?? NaN);
      // Fields 4 (ppid), 14-17 (utime, stime, cutime, cstime), counted from field 3 at 0.
      table.set(Number(name), { ppid: n(1), own: n(11) + n(12), reaped: n(13) + n(14) });
    }),
  );
  return table;
}

/** The busy and all ticks of every core, and how many cores, from /proc/stat. */
async function machineTicks(): Promise<{ busy: number; cores: number }> {
  const text = await readFile('/proc/stat', 'utf8');
  const [user, nice, system, , , irq, softirq, steal] = (/^cpu\s+(.*)$/m.exec(text)?.[1] ?? '')
    .split(/\s+/)
    .map(Number);
  // guest and guest_nice are already inside user and nice.
  const busy = [user, nice, system, irq, softirq, steal].reduce<number>((a, b) => a + (b ?? 0), 0);
  return { busy, cores: (text.match(/^cpu\d+ /gm) ?? []).length };
}

const netnsInode = async (name: string): Promise<string | undefined> =>
  stat(`/run/netns/${name}`)
    .then((s) => `net:[${s.ino}]`)
    .catch(() => undefined);

/** Per group, the PIDs it holds now (a set each; groups are meant not to overlap). */
async function members(
  table: Map<number, Proc>,
  selectors: Record<string, CpuSelector>,
): Promise<Map<string, Set<number> | undefined>> {
  const children = new Map<number, number[]>();
  for (const [pid, proc] of table) {
    children.set(proc.ppid, [...(children.get(proc.ppid) ?? []), pid]);
  }
  const out = new Map<string, Set<number> | undefined>();
  for (const [name, selector] of Object.entries(selectors)) {
    if ('tree' in selector) {
      if (!table.has(selector.tree)) {
        out.set(name, undefined);
        continue;
      }
      const tree = new Set<number>();
      const queue = [selector.tree];
      for (let pid = queue.pop(); pid !== undefined; pid = queue.pop()) {
        tree.add(pid);
        queue.push(...(children.get(pid) ?? []));
      }
      out.set(name, tree);
    } else if ('process' in selector) {
      out.set(name, table.has(selector.process) ? new Set([selector.process]) : undefined);
    } else {
      const inode = await netnsInode(selector.netns);
      const found = new Set<number>();
      for (const pid of table.keys()) {
        if (
          inode === undefined ||
          (await readlink(`/proc/${pid}/ns/net`).catch(() => '')) !== inode
        )
          continue;
        const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
        if (cmdline.includes(selector.cmdline)) found.add(pid);
      }
      out.set(name, found.size > 0 ? found : undefined);
    }
  }
  return out;
}

interface Sample {
  at: bigint;
  busy: number;
  cores: number;
  /** Ticks per group; undefined when its process is gone (or none matched). */
  groups: Map<string, number | undefined>;
  kernel: number;
  rest: number;
}

async function sample(selectors: Record<string, CpuSelector>, machineFirst: boolean) {
  // The machine's reading sits inside the processes' one at both ends (start: last, stop: first),
  // so the window's wall and busy time do not include the scan of /proc.
  const machine = async () => ({ at: process.hrtime.bigint(), ...(await machineTicks()) });
  const early = machineFirst ? await machine() : undefined;
  const table = await processTable();
  const groupsOf = await members(table, selectors);
  const counted = new Set<number>();
  const groups = new Map<string, number | undefined>();
  // A `process` group holds that process's own threads only: the children it reaped (short
  // commands; the other groups are below it, but live) are the rest's.
  let rest = 0;
  for (const [name, pids] of groupsOf) {
    const ownOnly = 'process' in (selectors[name] as CpuSelector);
    let ticks = 0;
    for (const pid of pids ?? []) {
      const proc = table.get(pid) as Proc;
      counted.add(pid);
      ticks += proc.own + (ownOnly ? 0 : proc.reaped);
      if (ownOnly) rest += proc.reaped;
    }
    groups.set(name, pids ? ticks : undefined);
  }
  let kernel = 0;
  for (const [pid, proc] of table) {
    if (pid === 2 || proc.ppid === 2) kernel += proc.own;
    else if (!counted.has(pid)) rest += proc.own + proc.reaped;
  }
  const late = early ?? (await machine());
  return { ...late, groups, kernel, rest } satisfies Sample;
}

/**
 * Starts a window over the groups `selectors` names; `stop()` ends it. Each live process's own
 * time and its reaped children's (cutime/cstime) are summed, so a process that exits inside the
 * window still counts, in the ancestor that reaped it. A process orphaned out of a tree (its
 * parent died first) counts in the rest from then on.
 */
export async function cpuWindow(
  selectors: Record<string, CpuSelector>,
): Promise<{ stop: () => Promise<CpuWindow> }> {
  const hz = await ticksPerSecond();
  const start = await sample(selectors, false);
  return {
    stop: async () => {
      const end = await sample(selectors, true);
      const wallSeconds = Number(end.at - start.at) / 1e9;
      const machineBusySeconds = (end.busy - start.busy) / hz;
      const groups: Record<string, number> = {};
      for (const name of Object.keys(selectors)) {
        const [a, b] = [start.groups.get(name), end.groups.get(name)];
        groups[name] = a === undefined || b === undefined ? NaN : (b - a) / hz;
      }
      return {
        wallSeconds,
        cores: end.cores,
        machineBusySeconds,
        saturation: machineBusySeconds / (wallSeconds * end.cores),
        groups,
        kernelThreadSeconds: (end.kernel - start.kernel) / hz,
        restSeconds: (end.rest - start.rest) / hz,
      };
    },
  };
}
