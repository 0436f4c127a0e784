// The gRPC server on the CSI unix socket: its path checked, a stale socket replaced, the services registered, calls cut off at close let finish.
import { lstat, mkdir, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import type { ControllerHandlers } from './generated/csi/v1/Controller.js';
import type { IdentityHandlers } from './generated/csi/v1/Identity.js';
import type { NodeHandlers } from './generated/csi/v1/Node.js';
import { toGrpcHandlers, type RpcObserver, type ServiceImpl } from './handlers.js';
import type { CsiPackage } from './proto.js';

/** sun_path holds 108 bytes including the terminating NUL; longer paths are silently cut. */
export const MAX_UNIX_SOCKET_PATH_BYTES = 107;

export interface CsiServices {
  identity: ServiceImpl<IdentityHandlers>;
  controller?: ServiceImpl<ControllerHandlers>;
  node?: ServiceImpl<NodeHandlers>;
}

export function socketPathFromEndpoint(endpoint: string): string {
  if (!endpoint.startsWith('unix://')) {
    throw new Error(`endpoint must be unix:///absolute/path.sock, got ${endpoint}`);
  }
  const path = endpoint.slice('unix://'.length);
  if (!path.startsWith('/')) throw new Error(`endpoint path must be absolute: ${endpoint}`);
  if (Buffer.byteLength(path) > MAX_UNIX_SOCKET_PATH_BYTES) {
    throw new Error(
      `endpoint socket path is ${Buffer.byteLength(path)} bytes; unix sockets allow at most ${MAX_UNIX_SOCKET_PATH_BYTES}`,
    );
  }
  return path;
}

/** A previous instance may have left its socket behind; anything else at that path is not ours. */
export async function removeStaleSocket(path: string): Promise<void> {
  try {
    const stat = await lstat(path);
    if (!stat.isSocket())
      throw new Error(`${path} exists and is not a socket; refusing to remove it`);
    await unlink(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}

/** How long a closing server waits for calls it cut off to finish their work. */
const CUT_CALLS_WAIT_MS = 60_000;

export class CsiServer {
  private readonly server = new grpc.Server();
  /** Work of calls being answered: a call cut off at close still runs to its end (a stage). */
  private readonly inFlight = new Set<Promise<unknown>>();

  constructor(
    private readonly csi: CsiPackage,
    services: CsiServices,
    private readonly log: Logger,
    observe?: RpcObserver,
  ) {
    this.server.addService(
      csi.Identity.service,
      toGrpcHandlers('Identity', services.identity, log, observe, this.track),
    );
    if (services.controller) {
      this.server.addService(
        csi.Controller.service,
        toGrpcHandlers('Controller', services.controller, log, observe, this.track),
      );
    }
    if (services.node) {
      this.server.addService(
        csi.Node.service,
        toGrpcHandlers('Node', services.node, log, observe, this.track),
      );
    }
  }

  async listen(endpoint: string): Promise<void> {
    const path = socketPathFromEndpoint(endpoint);
    await mkdir(dirname(path), { recursive: true });
    await removeStaleSocket(path);
    await new Promise<void>((resolve, reject) => {
      this.server.bindAsync(`unix://${path}`, grpc.ServerCredentials.createInsecure(), (err) =>
        err ? reject(err) : resolve(),
      );
    });
    this.log.info({ endpoint }, 'listening');
  }

  private readonly track = (work: Promise<unknown>): void => {
    this.inFlight.add(work);
    const done = () => this.inFlight.delete(work);
    work.then(done, done);
  };

  /**
   * Lets running calls finish for a while, then cuts them. The work of a cut call (a stage
   * starting a client) still runs: it is waited for, so nothing is mounted after close returns.
   */
  async close(graceMs = 5000): Promise<void> {
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.server.forceShutdown();
        resolve();
      }, graceMs);
      this.server.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
    if (this.inFlight.size === 0) return;
    this.log.info({ calls: this.inFlight.size }, 'waiting for the work of cut-off calls');
    const settled = Promise.allSettled([...this.inFlight]).then(() => undefined);
    await Promise.race([
      settled,
      new Promise((resolve) => setTimeout(resolve, CUT_CALLS_WAIT_MS).unref()),
    ]);
  }
}
