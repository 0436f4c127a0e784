// A promise-based CSI client on a unix socket, as kubelet and the sidecars call the driver: for the ctl command, the demo and the tests.
import * as grpc from '@grpc/grpc-js';
import type { ControllerClient } from './generated/csi/v1/Controller.js';
import type { IdentityClient } from './generated/csi/v1/Identity.js';
import type { NodeClient } from './generated/csi/v1/Node.js';
import { loadCsiPackage, type CsiPackage } from './proto.js';

type Rpc<F> = F extends (
  argument: infer Req,
  callback: grpc.requestCallback<infer Res>,
) => grpc.ClientUnaryCall
  ? (request: Req, options?: { timeoutMs?: number }) => Promise<Res>
  : never;

/** Promise-returning view of a generated client: only the RPCs (capitalized names). */
export type AsyncClient<C> = {
  [
    K in keyof C as K extends `${Capitalize<string & K>}`
      ? K extends keyof grpc.Client
        ? never
        : K
      : never
  ]: Rpc<C[K]>;
};

function wrap<C extends grpc.Client>(client: C, service: grpc.ServiceDefinition): AsyncClient<C> {
  const wrapped: Record<string, unknown> = {};
  for (const method of Object.keys(service)) {
    const fn = (client as unknown as Record<string, (...args: unknown[]) => grpc.ClientUnaryCall>)[
      method
    ];
    if (!fn) continue;
    wrapped[method] = (request: unknown, options: { timeoutMs?: number } = {}) =>
      new Promise((resolve, reject) => {
        const deadline = new Date(Date.now() + (options.timeoutMs ?? 120_000));
        fn.call(
          client,
          request,
          new grpc.Metadata(),
          { deadline },
          (err: grpc.ServiceError | null, res: unknown) => (err ? reject(err) : resolve(res)),
        );
      });
  }
  return wrapped as AsyncClient<C>;
}

/** A CSI client on a unix socket, as kubelet and the sidecars use it (tests, demo, debugging). */
export class CsiClient {
  readonly identity: AsyncClient<IdentityClient>;
  readonly controller: AsyncClient<ControllerClient>;
  readonly node: AsyncClient<NodeClient>;
  private readonly clients: grpc.Client[];

  constructor(endpoint: string, csi: CsiPackage = loadCsiPackage()) {
    const credentials = grpc.credentials.createInsecure();
    const identity = new csi.Identity(endpoint, credentials) as unknown as IdentityClient;
    const controller = new csi.Controller(endpoint, credentials) as unknown as ControllerClient;
    const node = new csi.Node(endpoint, credentials) as unknown as NodeClient;
    this.clients = [identity, controller, node];
    this.identity = wrap(identity, csi.Identity.service);
    this.controller = wrap(controller, csi.Controller.service);
    this.node = wrap(node, csi.Node.service);
  }

  close(): void {
    for (const client of this.clients) client.close();
  }
}
