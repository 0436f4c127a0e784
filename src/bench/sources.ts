/**
 * Cold and warm read speed of one big file per source kind and engine, through the real driver,
 * against servers on loopback, with the same file read from tmpfs as the limit. Run: npm run bench.
 */
import { createHash } from 'node:crypto';
import { copyFile, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseConfig } from '../config.js';
import { CsiClient } from '../csi/client.js';
import { LoopbackServer } from '../demo/loopback-server.js';
import { timedRead, writeRandomFile } from '../demo/files.js';
import { S3Server } from '../demo/s3-server.js';
import { startDriver, type Driver } from '../driver.js';
import { createLogger } from '../log.js';

const MiB = 2 ** 20;

interface Row {
  source: string;
  engine: string;
  pageCache: string;
  coldMBps: number;
  warmMBps: number;
  warmToTmpfs: number;
  pod2OverPod1: number;
}

async function main(): Promise<void> {
  const sizeMiB = Number(process.argv[2] ?? '256');
  const size = sizeMiB * MiB;
  const work = await mkdtemp('/tmp/dcsi-bench-');
  const data = join(work, 'data');
  await mkdir(data);
  await writeRandomFile(join(data, 'big.bin'), size);
  await writeFile(join(data, 'MANIFEST'), 'bench\n');
  const cleanups: (() => Promise<unknown>)[] = [];
  const rows: Row[] = [];
  try {
    const tmpfsFile = join('/dev/shm', `dcsi-bench-${process.pid}.bin`);
    await copyFile(join(data, 'big.bin'), tmpfsFile);
    await timedRead(tmpfsFile);
    const tmpfs = await timedRead(tmpfsFile);
    await rm(tmpfsFile);
    const mbps = (seconds: number) => Math.round(size / 1e6 / seconds);

    const webdav = await LoopbackServer.start(data, 'webdav');
    cleanups.unshift(() => webdav.stop());
    const http = await LoopbackServer.start(data, 'http');
    cleanups.unshift(() => http.stop());
    const sftp = await LoopbackServer.start(data, 'sftp', [
      '--user',
      'bench',
      '--pass',
      'bench-pass',
    ]);
    cleanups.unshift(() => sftp.stop());
    await mkdir(join(work, 's3'), { recursive: true });
    const s3 = await S3Server.start(join(work, 's3'), ['bench']);
    cleanups.unshift(() => s3.stop());
    await s3.upload(data, 'bench/set');
    const s3secrets = s3.secrets();
    const scenarios: {
      source: string;
      engine: string;
      params: Record<string, string>;
      secrets?: Record<string, string>;
    }[] = [
      { source: 'local', engine: 'rclone', params: { source: `local://${data}` } },
      { source: 'webdav', engine: 'rclone', params: { source: webdav.url() } },
      { source: 'http', engine: 'rclone', params: { source: http.url() } },
      {
        source: 'sftp',
        engine: 'rclone',
        params: { source: `sftp://127.0.0.1:${sftp.port}/` },
        secrets: { user: 'bench', password: 'bench-pass' },
      },
      { source: 's3', engine: 'rclone', params: { source: 's3://bench/set' }, secrets: s3secrets },
      {
        source: 's3',
        engine: 's3fs',
        params: { source: 's3://bench/set', engine: 's3fs' },
        secrets: s3secrets,
      },
    ];
    for (const pageCache of ['bindfs', 'none'] as const) {
      const name = `node-${pageCache}`;
      const endpoint = `unix://${work}/${name}.sock`;
      const config = parseConfig([
        `--endpoint=${endpoint}`,
        `--node-id=${name}`,
        `--state-dir=${join(work, name, 'state')}`,
        `--runtime-dir=${join(work, name, 'run')}`,
        `--mem-cache-dir=/dev/shm/dcsi-bench-${process.pid}-${pageCache}`,
        `--page-cache=${pageCache}`,
      ]);
      const driver: Driver = await startDriver(
        config,
        createLogger('info', join(work, `${name}.log`)),
      );
      cleanups.push(() => rm(config.memCacheDir, { recursive: true, force: true }));
      const csi = new CsiClient(endpoint);
      try {
        for (const scenario of scenarios) {
          if (pageCache === 'none' && scenario.engine === 's3fs') continue;
          const cap = { mount: {}, access_mode: { mode: 'MULTI_NODE_READER_ONLY' as const } };
          const id = createHash('sha256')
            .update(`${pageCache}${scenario.source}${scenario.engine}`)
            .digest('hex')
            .slice(0, 8);
          const { volume } = await csi.controller.CreateVolume({
            name: id,
            volume_capabilities: [cap],
            parameters: { ...scenario.params, cacheQuota: `${sizeMiB * 2}Mi`, readOnly: 'true' },
          });
          if (!volume) throw new Error('no volume');
          const staging = join(work, name, 'staging', id);
          await csi.node.NodeStageVolume({
            volume_id: volume.volume_id,
            staging_target_path: staging,
            volume_capability: cap,
            volume_context: volume.volume_context,
            secrets: scenario.secrets ?? {},
          });
          const targets = ['pod-1', 'pod-2'].map((pod) => join(work, name, 'pods', id, pod));
          for (const target of targets) {
            await csi.node.NodePublishVolume({
              volume_id: volume.volume_id,
              staging_target_path: staging,
              target_path: target,
              volume_capability: cap,
              readonly: true,
            });
          }
          const cold = await timedRead(join(targets[0] as string, 'big.bin'));
          const warm = await timedRead(join(targets[1] as string, 'big.bin'));
          rows.push({
            source: scenario.source,
            engine: scenario.engine,
            pageCache: scenario.engine === 's3fs' ? 'own kernel_cache' : pageCache,
            coldMBps: mbps(cold),
            warmMBps: mbps(warm),
            warmToTmpfs: Number((tmpfs / warm).toFixed(2)),
            pod2OverPod1: Number((cold / warm).toFixed(1)),
          });
          for (const target of targets)
            await csi.node.NodeUnpublishVolume({
              volume_id: volume.volume_id,
              target_path: target,
            });
          await csi.node.NodeUnstageVolume({
            volume_id: volume.volume_id,
            staging_target_path: staging,
          });
          await csi.controller.DeleteVolume({ volume_id: volume.volume_id });
        }
      } finally {
        csi.close();
        await driver.close();
      }
    }
    process.stdout.write(
      `\n${sizeMiB} MiB file, servers on loopback; tmpfs read: ${mbps(tmpfs)} MB/s\n`,
    );
    process.stdout.write(
      'source  engine  page cache        cold MB/s  warm MB/s  warm/tmpfs  pod2/pod1\n',
    );
    for (const r of rows) {
      process.stdout.write(
        `${r.source.padEnd(8)}${r.engine.padEnd(8)}${r.pageCache.padEnd(18)}${String(r.coldMBps).padStart(9)}  ${String(r.warmMBps).padStart(9)}  ${String(r.warmToTmpfs).padStart(10)}  ${String(r.pod2OverPod1).padStart(9)}\n`,
      );
    }
    const result = { date: new Date().toISOString(), sizeMiB, tmpfsMBps: mbps(tmpfs), rows };
    await mkdir('bench/results', { recursive: true });
    await writeFile(
      `bench/results/sources-${result.date.slice(0, 10)}.json`,
      `${JSON.stringify(result, null, 2)}\n`,
    );
    const best = rows.find((r) => r.source === 'webdav' && r.pageCache === 'bindfs');
    process.stdout.write(
      `${JSON.stringify({ warmToTmpfs: best?.warmToTmpfs, pod2OverPod1: best?.pod2OverPod1 })}\n`,
    );
  } finally {
    for (const cleanup of cleanups) await cleanup().catch(() => undefined);
    await rm(work, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exitCode = 1;
});
