// The driver process: the Identity, Controller and Node services wired for the configured mode, the node's state loaded, CSI (and metrics) served until it is closed.
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { Config } from './config.js';
import { createControllerService } from './controller/service.js';
import { RcloneSourceDirectories } from './controller/source-directories.js';
import { VolumeStore } from './controller/store.js';
import { loadCsiPackage } from './csi/proto.js';
import { VolumeLocks } from './csi/locks.js';
import { CsiServer, type CsiServices } from './csi/server.js';
import { EngineRegistry, type RemoteProbe } from './engines/engine.js';
import { RcloneEngine } from './engines/rclone.js';
import { S3fsEngine } from './engines/s3fs.js';
import { createIdentityService } from './identity/service.js';
import { CredentialIdentity } from './dataset/identity.js';
import { loadNodeKey } from './state/node-key.js';
import { Journal } from './mount/journal.js';
import { MountManager, type FaultHook } from './mount/manager.js';
import { NodeCaches } from './mount/node-caches.js';
import { SystemMounter } from './kernel/mounter.js';
import { SyscallMounter } from './kernel/syscall-mounter.js';
import { DriverMetrics } from './metrics/metrics.js';
import { startMetricsServer, type MetricsServer } from './metrics/server.js';
import { createNodeService } from './node/service.js';
import { InlineVolumes } from './mount/inline-volumes.js';
import { Prefetcher } from './prefetch/prefetcher.js';
import { LocalCopies } from './copy/copies.js';
import { RcloneTransfers } from './engines/rclone-transfer.js';
import { datasetRemote } from './engines/transfer-source.js';
import { ClusterTier } from './tier/cluster-tier.js';
import { readTierSettings, recordTierConfig } from './tier/settings.js';
import { CacheClients } from './supervisor/clients.js';
import { HealthLoop } from './supervisor/health-loop.js';
import { LauncherRunner } from './supervisor/launcher.js';
import { ExecaRunner, type ProcessRunner } from './kernel/runner.js';
import { packageVersion } from './version.js';

/** A direct request to a remote, beside or instead of the client's: answered in this or unreachable. */
const PROBE_TIMEOUT_MS = 5_000;

export interface Driver {
  /** Port of the metrics server, when --metrics-address is set. */
  metricsPort?: number;
  close(): Promise<void>;
}

export interface DriverDeps {
  runner?: ProcessRunner;
}

/** Test-only crash points: at the named point the process dies at once, like kill -9. */
function faultHook(point: string | undefined, log: Logger): FaultHook {
  if (point === undefined) return () => undefined;
  log.warn({ faultPoint: point }, 'fault point armed');
  return (reached) => {
    if (reached === point) process.kill(process.pid, 'SIGKILL');
  };
}

/**
 * Wires the services for the configured mode and starts serving. The socket is bound before the
 * node state is loaded so the sidecars connect at once; Probe says "not ready" until it is.
 */
export async function startDriver(
  config: Config,
  log: Logger,
  deps: DriverDeps = {},
): Promise<Driver> {
  await mkdir(config.stateDir, { recursive: true, mode: 0o700 });
  const runner =
    deps.runner ??
    (config.launcherSocket ? new LauncherRunner(config.launcherSocket) : new ExecaRunner());
  const withController = config.mode !== 'node';
  const withNode = config.mode !== 'controller';
  // Read before anything starts: a tier without its keys stops the driver here, naming them.
  const tierSettings =
    withNode && config.clusterTier
      ? await readTierSettings(config.clusterTier, config.runtimeDir, config.nodeId)
      : undefined;
  if (withNode) await recordTierConfig(config.stateDir, config.clusterTier, config.nodeId);
  let ready = false;

  const services: CsiServices = {
    identity: createIdentityService({
      name: config.driverName,
      version: packageVersion(),
      controller: withController,
      isReady: () => ready,
    }),
  };
  if (withController) {
    services.controller = createControllerService({
      store: await VolumeStore.open(config.stateDir),
      directories: new RcloneSourceDirectories(runner, config.rcloneBinary),
    });
  }
  let manager: MountManager | undefined;
  let prefetcher: Prefetcher | undefined;
  let copies: LocalCopies | undefined;
  let tier: ClusterTier | undefined;
  let closeMounter: () => void = () => undefined;
  let healthLoop: HealthLoop | undefined;
  if (withNode) {
    const mounter = await SyscallMounter.orFallback(new SystemMounter(runner));
    closeMounter = () => (mounter as Partial<SyscallMounter>).close?.();
    const locks = new VolumeLocks();
    const transfers = new RcloneTransfers(config.rcloneBinary);
    const probe: RemoteProbe = async (client) =>
      transfers.probe(
        datasetRemote(client.spec, await client.credentials(), client.runtimeDir),
        PROBE_TIMEOUT_MS,
      );
    const clients = new CacheClients(
      new EngineRegistry([new RcloneEngine(config.rcloneBinary, probe), new S3fsEngine(probe)]),
      runner,
      mounter,
      {
        stateDir: config.stateDir,
        memCacheDir: config.memCacheDir,
        runtimeDir: config.runtimeDir,
        pageCache: config.pageCache,
      },
      log,
      { flushTimeoutMs: config.flushTimeoutMs },
      () => healthLoop?.trigger(),
    );
    const journal = Journal.inStateDir(config.stateDir);
    prefetcher = new Prefetcher(log, config.prefetchConcurrency, transfers);
    copies = new LocalCopies(mounter, runner, log, transfers);
    if (tierSettings) tier = new ClusterTier(tierSettings, transfers, log);
    const nodeManager = new MountManager(
      journal,
      clients,
      mounter,
      locks,
      log,
      {
        caches: new NodeCaches(
          journal,
          {
            memBytes: config.memCacheLimitBytes,
            diskBytes: config.diskCacheLimitBytes,
            retentionMs: config.cacheRetentionMs,
          },
          (medium, cacheDir) => clients.discardCache(medium, cacheDir),
          log,
        ),
        prefetcher,
        copies,
        ...(tier ? { tier } : {}),
      },
      faultHook(config.faultPoint, log),
    );
    manager = nodeManager;
    healthLoop = new HealthLoop(() => nodeManager.superviseAll(), config.healthIntervalMs, log);
    services.node = createNodeService({
      nodeId: config.nodeId,
      manager,
      inline: new InlineVolumes(nodeManager, join(config.stateDir, 'ephemeral'), log),
      locks,
      kubeletDir: config.kubeletDir,
      ephemeralCacheQuotaLimitBytes: config.ephemeralCacheQuotaLimitBytes,
      identity: new CredentialIdentity(await loadNodeKey(config.stateDir)),
    });
  }

  const metrics = new DriverMetrics(manager, {
    node: config.nodeId,
    version: packageVersion(),
    mode: config.mode,
  });
  const server = new CsiServer(loadCsiPackage(), services, log, (rpc, code, seconds) =>
    metrics.observeRpc(rpc, code, seconds),
  );
  await server.listen(config.endpoint);
  let metricsServer: MetricsServer | undefined;
  try {
    await manager?.init();
    if (config.metricsAddress !== undefined) {
      metricsServer = await startMetricsServer(config.metricsAddress, metrics, log);
    }
  } catch (err) {
    await server.close(0);
    throw err;
  }
  healthLoop?.start();
  copies?.start();
  ready = true;
  log.info({ mode: config.mode, nodeId: config.nodeId, driver: config.driverName }, 'ready');

  return {
    metricsPort: metricsServer?.port,
    // Cache clients are left running on purpose: pods keep reading while the driver restarts.
    close: async () => {
      await healthLoop?.stop();
      await copies?.stop();
      prefetcher?.close();
      await tier?.close();
      await metricsServer?.close();
      await server.close();
      closeMounter();
    },
  };
}
