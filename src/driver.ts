import { mkdir } from 'node:fs/promises';
import type { Logger } from 'pino';
import type { Config } from './config.js';
import { createControllerService } from './controller/service.js';
import { VolumeStore } from './controller/store.js';
import { loadCsiPackage } from './csi/proto.js';
import { CsiServer, type CsiServices } from './csi/server.js';
import { EngineRegistry } from './engines/engine.js';
import { RcloneEngine } from './engines/rclone.js';
import { createIdentityService } from './identity/service.js';
import { Journal } from './mount/journal.js';
import { MountManager } from './mount/manager.js';
import { SystemMounter } from './mount/mounter.js';
import { createNodeService } from './node/service.js';
import { CacheClients } from './supervisor/clients.js';
import { ExecaRunner, type ProcessRunner } from './supervisor/runner.js';
import { packageVersion } from './version.js';

export interface Driver {
  close(): Promise<void>;
}

export interface DriverDeps {
  runner?: ProcessRunner;
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
  const runner = deps.runner ?? new ExecaRunner();
  const withController = config.mode !== 'node';
  const withNode = config.mode !== 'controller';
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
    });
  }
  let manager: MountManager | undefined;
  if (withNode) {
    const mounter = new SystemMounter(runner);
    const clients = new CacheClients(
      new EngineRegistry([new RcloneEngine(config.rcloneBinary)]),
      runner,
      mounter,
      { stateDir: config.stateDir, memCacheDir: config.memCacheDir },
      log,
    );
    manager = new MountManager(Journal.inStateDir(config.stateDir), clients, mounter, log);
    services.node = createNodeService({ nodeId: config.nodeId, manager });
  }

  const server = new CsiServer(loadCsiPackage(), services, log);
  await server.listen(config.endpoint);
  try {
    await manager?.init();
  } catch (err) {
    await server.close(0);
    throw err;
  }
  ready = true;
  log.info({ mode: config.mode, nodeId: config.nodeId, driver: config.driverName }, 'ready');

  return {
    // Cache clients are left running on purpose: pods keep reading while the driver restarts.
    close: () => server.close(),
  };
}
