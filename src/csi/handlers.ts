// The CSI services as typed async functions, adapted to grpc-js: one log line per call, failures mapped to statuses, each call observed for metrics.
import { randomBytes } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { toServiceError } from './errors.js';

type UnaryImpl<H> =
  H extends grpc.handleUnaryCall<infer Req, infer Res> ? (request: Req) => Promise<Res> : never;

/**
 * The async implementation of a generated `*Handlers` interface: one typed function per RPC,
 * request in, response out. The generated interfaces carry a string index signature from grpc-js;
 * it is dropped here so that a missing or misspelt RPC is a compile error.
 */
export type ServiceImpl<Handlers> = {
  [K in keyof Handlers as string extends K ? never : K]: UnaryImpl<Handlers[K]>;
};

export interface RequestSummary {
  volumeId?: string;
  name?: string;
}

/** Log fields worth a line per call; secrets are never read from the request here. */
function summarize(request: unknown): RequestSummary {
  if (typeof request !== 'object' || request === null) return {};
  const r = request as Record<string, unknown>;
  const summary: RequestSummary = {};
  if (typeof r.volume_id === 'string' && r.volume_id !== '') summary.volumeId = r.volume_id;
  if (typeof r.name === 'string' && r.name !== '') summary.name = r.name;
  return summary;
}

/** Told of every finished call (for metrics): "Node/NodePublishVolume", "OK", seconds. */
export type RpcObserver = (rpc: string, code: string, seconds: number) => void;

/** Adapts async implementations to grpc-js callbacks, with one log line per call and error mapping. */
export function toGrpcHandlers<Handlers>(
  service: string,
  impl: ServiceImpl<Handlers>,
  log: Logger,
  observe: RpcObserver = () => undefined,
  /** Told of every call's work, so a closing server can wait for what it started. */
  track: (work: Promise<unknown>) => void = () => undefined,
): grpc.UntypedServiceImplementation {
  const handlers: grpc.UntypedServiceImplementation = {};
  for (const [method, fn] of Object.entries(impl) as [
    string,
    (req: unknown) => Promise<unknown>,
  ][]) {
    const handler: grpc.handleUnaryCall<unknown, unknown> = (call, callback) => {
      const started = process.hrtime.bigint();
      const fields = { rpc: `${service}/${method}`, ...summarize(call.request) };
      const work = fn.call(impl, call.request);
      track(work);
      work.then(
        (response) => {
          const durationMs = Number(process.hrtime.bigint() - started) / 1e6;
          log.info({ ...fields, code: 'OK', durationMs }, 'rpc');
          observe(fields.rpc, 'OK', durationMs / 1000);
          callback(null, response);
        },
        (err: unknown) => {
          const durationMs = Number(process.hrtime.bigint() - started) / 1e6;
          const shaped = toServiceError(err, (internal) => {
            const reference = randomBytes(4).toString('hex');
            log.error({ ...fields, err: internal, reference }, 'unexpected error');
            return reference;
          });
          const code = grpc.status[shaped.code];
          log.info({ ...fields, code, durationMs, message: shaped.details }, 'rpc');
          observe(fields.rpc, code, durationMs / 1000);
          callback({ code: shaped.code, details: shaped.details, metadata: new grpc.Metadata() });
        },
      );
    };
    handlers[method] = handler;
  }
  return handlers;
}
