import { mkdir, readFile, rmdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { sleep } from '../../src/kernel/proc.js';

async function cgroup2Root(): Promise<string> {
  const mounts = await readFile('/proc/self/mounts', 'utf8');
  const line = mounts.split('\n').find((l) => l.split(' ')[2] === 'cgroup2');
  if (!line) throw new Error('no cgroup2 hierarchy mounted: cannot model a container');
  return line.split(' ')[1] as string;
}

/**
 * A cgroup v2 group standing in for a container: what the container runtime does when a pod is
 * replaced is, in the end, killing every process of the container's cgroup (cgroup.kill).
 */
export class ContainerCgroup {
  private constructor(readonly path: string) {}

  static async create(name: string): Promise<ContainerCgroup> {
    const path = join(await cgroup2Root(), `dcsi-${name}-${process.pid}-${Date.now()}`);
    await mkdir(path);
    return new ContainerCgroup(path);
  }

  async add(pid: number): Promise<void> {
    await writeFile(join(this.path, 'cgroup.procs'), String(pid));
  }

  async pids(): Promise<number[]> {
    const text = await readFile(join(this.path, 'cgroup.procs'), 'utf8').catch(() => '');
    return text.split('\n').filter(Boolean).map(Number);
  }

  /** Kills every process in the group and waits until it is empty. */
  async kill(): Promise<void> {
    await writeFile(join(this.path, 'cgroup.kill'), '1');
    for (let i = 0; i < 500 && (await this.pids()).length > 0; i += 1) await sleep(10);
  }

  async remove(): Promise<void> {
    if ((await this.pids()).length > 0) await this.kill();
    await rmdir(this.path).catch(() => undefined);
  }
}
