/**
 * The soak (npm run soak [-- --publishes N --stages N]): one driver runs long, 20,000 publish and
 * unpublish cycles and 200 stage and unstage cycles over several datasets, and what it holds is
 * compared between the start (after a warm-up) and the end, with nothing staged both times: RSS
 * after a full collection, open file descriptors, journal size, mounts. They must end flat (RSS
 * within 10 %, the rest equal). Writes bench/results/<date>-soak.json; exits 1 when not flat.
 */
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { MountTable } from '../kernel/mountinfo.js';
import { sleep } from '../kernel/proc.js';
import { Bench, log, MiB } from './harness.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const DATASETS = 4;
const CONCURRENCY = 16;

interface Footprint {
  rssMiB: number;
  heapUsedMiB: number;
  fds: number;
  journalBytes: number;
  controllerBytes: number;
  mounts: number;
  mountsOfTheRun: number;
}

/** What the driver holds now, after a full collection (SIGUSR2 with --expose-gc). */
async function footprint(bench: Bench, pid: number): Promise<Footprint> {
  process.kill(pid, 'SIGUSR2');
  await sleep(1_000);
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const kib = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+)`, 'm').exec(status)?.[1]);
  const table = await MountTable.read();
  const sizeOf = (path: string) =>
    stat(path).then(
      (s) => s.size,
      () => 0,
    );
  return {
    rssMiB: kib('VmRSS') / 1024,
    heapUsedMiB: await heapUsed(bench),
    fds: (await readdir(`/proc/${pid}/fd`)).length,
    journalBytes: await sizeOf(join(bench.stateDir, 'journal.json')),
    controllerBytes: await sizeOf(join(bench.stateDir, 'controller', 'volumes.json')),
    mounts: table.entries.length,
    mountsOfTheRun: table.under(bench.work).length + table.under(bench.memCacheDir).length,
  };
}

/** The heap the driver logged at the last SIGUSR2 (its 'memory' line). */
async function heapUsed(bench: Bench): Promise<number> {
  const lines = (await readFile(join(bench.work, 'driver.log'), 'utf8')).trim().split('\n');
  const last = lines.filter((line) => line.includes('"msg":"memory"')).pop();
  return last ? (JSON.parse(last) as { heapUsed: number }).heapUsed / MiB : NaN;
}

/** `count` cycles of `cycle(i)`, `concurrency` at a time. */
async function cycles(
  count: number,
  concurrency: number,
  cycle: (i: number) => Promise<void>,
): Promise<number> {
  const started = Date.now();
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < count) await cycle(next++);
    }),
  );
  return (Date.now() - started) / 1000;
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      publishes: { type: 'string', default: '20000' },
      stages: { type: 'string', default: '200' },
    },
  });
  const publishes = Number(values.publishes);
  const stages = Number(values.stages);
  const work = await mkdtemp('/tmp/dcsi-soak-');
  const bench = new Bench(work);
  bench.defer(() => rm(work, { recursive: true, force: true }), 'removing the work directory');
  bench.defer(
    () => rm(bench.memCacheDir, { recursive: true, force: true }),
    'removing the MEM cache directory',
  );
  try {
    const sources = await Promise.all(
      Array.from({ length: DATASETS }, async (_, d) => {
        const dir = join(work, 'sources', `dataset-${d}`);
        await mkdir(dir, { recursive: true });
        await writeFile(join(dir, 'sample.txt'), `dataset ${d}\n`);
        return `local://${dir}`;
      }),
    );
    // info: the driver's 'memory' line at each SIGUSR2 tells the heap apart from the RSS.
    const { pid } = await bench.startDriver(['--log-level=info'], ['--expose-gc']);
    const stageCycle = async (i: number): Promise<void> => {
      const volume = await bench.stageWith({ source: sources[i % DATASETS] as string });
      const target = await bench.publish(volume, `stage-${i}`);
      const text = await readFile(join(target, 'sample.txt'), 'utf8');
      if (text !== `dataset ${i % DATASETS}\n`) throw new Error(`read ${JSON.stringify(text)}`);
      await bench.unpublish(volume, `stage-${i}`);
      await bench.unstage(volume);
    };
    const publishPhase = async (count: number): Promise<number> => {
      const volumes = await Promise.all(sources.map((source) => bench.stageWith({ source })));
      const seconds = await cycles(count, CONCURRENCY, async (i) => {
        const volume = volumes[i % DATASETS] as string;
        await bench.publish(volume, `pod-${i % (CONCURRENCY * 4)}-${i % DATASETS}`);
        await bench.unpublish(volume, `pod-${i % (CONCURRENCY * 4)}-${i % DATASETS}`);
      });
      for (const volume of volumes) await bench.unstage(volume);
      return seconds;
    };

    log('warm-up: 20 stage cycles, 1,000 publish cycles');
    await cycles(20, DATASETS, stageCycle);
    await publishPhase(1_000);
    const start = await footprint(bench, pid);
    log(`start: ${JSON.stringify(start)}`);

    log(`${stages} stage/unstage cycles over ${DATASETS} datasets (${DATASETS} at a time)`);
    const stageSeconds = await cycles(stages, DATASETS, stageCycle);
    const middle = await footprint(bench, pid);
    log(`after the stage cycles (${stageSeconds.toFixed(0)} s): ${JSON.stringify(middle)}`);
    log(`${publishes} publish/unpublish cycles, ${CONCURRENCY} at a time`);
    const publishSeconds = await publishPhase(publishes);
    const end = await footprint(bench, pid);
    log(`end (${publishSeconds.toFixed(0)} s): ${JSON.stringify(end)}`);

    const flat = {
      rss: end.rssMiB <= start.rssMiB * 1.1,
      fds: end.fds === start.fds,
      journal: end.journalBytes === start.journalBytes,
      controller: end.controllerBytes === start.controllerBytes,
      mounts: end.mounts === start.mounts && end.mountsOfTheRun === 0,
    };
    const result = {
      date: new Date().toISOString(),
      mode: 'soak',
      cycles: { stages, publishes, stageSeconds, publishSeconds },
      start,
      afterStages: middle,
      end,
      flat,
      passed: Object.values(flat).every(Boolean),
    };
    const outDir = join(ROOT, 'bench', 'results');
    await mkdir(outDir, { recursive: true });
    const stamp = result.date.slice(0, 19).replace(/[:T]/g, '-');
    await writeFile(join(outDir, `${stamp}-soak.json`), `${JSON.stringify(result, null, 2)}\n`);
    process.stdout.write(`${JSON.stringify(result)}\n`);
    return result.passed ? 0 : 1;
  } finally {
    await bench.cleanup();
  }
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    log(`failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    process.exitCode = 1;
  },
);
