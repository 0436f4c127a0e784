import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { parseConfig, type Config } from '../../src/config.js';
import { CsiClient } from '../../src/csi/client.js';
import { startDriver, type Driver } from '../../src/driver.js';
import { createLogger } from '../../src/log.js';
import { cleanupUnder } from './cleanup.js';

export interface TestDriver {
  work: string;
  endpoint: string;
  stateDir: string;
  memCacheDir: string;
  logFile: string;
  client: CsiClient;
  config: Config;
  /** Stops the driver process part only (clients keep running, as in production). */
  stopDriver(): Promise<void>;
  /** Starts the driver again on the same state, as after a crash or upgrade. */
  restartDriver(): Promise<void>;
  /** Everything: driver, mounts under the work dir, cache clients, files. */
  dispose(): Promise<void>;
  log(): Promise<string>;
  /** Port of the metrics server (started with metricsAddress). */
  metricsPort(): number | undefined;
}

/** A real driver on a real unix socket in a fresh temporary directory. */
export async function startTestDriver(options: Partial<Config> = {}): Promise<TestDriver> {
  const work = await mkdtemp('/tmp/dcsi-test-');
  const memCacheDir = join('/dev/shm', `dcsi-test-${work.slice(-6)}`);
  const config: Config = {
    ...parseConfig(
      [
        `--endpoint=unix://${work}/csi.sock`,
        '--node-id=test-node',
        `--state-dir=${join(work, 'state')}`,
        `--runtime-dir=${join(work, 'run')}`,
        `--mem-cache-dir=${memCacheDir}`,
        '--log-level=debug',
        '--health-interval=250',
      ],
      {},
    ),
    ...options,
  };
  const logFile = join(work, 'driver.log');
  await mkdir(work, { recursive: true });
  let driver: Driver | undefined = await startDriver(
    config,
    createLogger(config.logLevel, logFile),
  );
  const client = new CsiClient(config.endpoint);
  return {
    work,
    endpoint: config.endpoint,
    stateDir: config.stateDir,
    memCacheDir,
    logFile,
    client,
    config,
    async stopDriver() {
      await driver?.close();
      driver = undefined;
    },
    async restartDriver() {
      await driver?.close();
      driver = await startDriver(config, createLogger(config.logLevel, logFile));
    },
    async dispose() {
      client.close();
      await driver?.close();
      driver = undefined;
      await cleanupUnder(work, config.stateDir, [memCacheDir]);
      await rm(config.runtimeDir, { recursive: true, force: true });
      await rm(memCacheDir, { recursive: true, force: true });
      await rm(work, { recursive: true, force: true });
    },
    log: () => readFile(logFile, 'utf8'),
    metricsPort: () => driver?.metricsPort,
  };
}

export const mountCapability = (mode = 'SINGLE_NODE_WRITER') => ({
  mount: { fs_type: '', mount_flags: [] },
  access_mode: { mode: mode as 'SINGLE_NODE_WRITER' },
});

/** CreateVolume of a dataset volume with one capability; fails when no volume comes back. */
export async function createVolume(
  client: CsiClient,
  name: string,
  parameters: Record<string, string>,
  capability: ReturnType<typeof mountCapability> = mountCapability('MULTI_NODE_READER_ONLY'),
) {
  const { volume } = await client.controller.CreateVolume({
    name,
    volume_capabilities: [capability],
    parameters,
  });
  if (!volume) throw new Error(`CreateVolume ${name} returned no volume`);
  return volume;
}
