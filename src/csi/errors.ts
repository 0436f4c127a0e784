// Errors meant for the CSI caller, one per gRPC status, and the one place other failures become INTERNAL.
import * as grpc from '@grpc/grpc-js';

/** An error meant for the CSI caller: its code and message are sent as they are. */
export class CsiError extends Error {
  constructor(
    readonly code: grpc.status,
    message: string,
  ) {
    super(message);
    this.name = 'CsiError';
  }
}

export const invalidArgument = (message: string): CsiError =>
  new CsiError(grpc.status.INVALID_ARGUMENT, message);
export const notFound = (message: string): CsiError => new CsiError(grpc.status.NOT_FOUND, message);
export const alreadyExists = (message: string): CsiError =>
  new CsiError(grpc.status.ALREADY_EXISTS, message);
export const failedPrecondition = (message: string): CsiError =>
  new CsiError(grpc.status.FAILED_PRECONDITION, message);
export const aborted = (message: string): CsiError => new CsiError(grpc.status.ABORTED, message);
export const unavailable = (message: string): CsiError =>
  new CsiError(grpc.status.UNAVAILABLE, message);
export const unimplemented = (message: string): CsiError =>
  new CsiError(grpc.status.UNIMPLEMENTED, message);
export const outOfRange = (message: string): CsiError =>
  new CsiError(grpc.status.OUT_OF_RANGE, message);
export const resourceExhausted = (message: string): CsiError =>
  new CsiError(grpc.status.RESOURCE_EXHAUSTED, message);

export interface ServiceErrorShape {
  code: grpc.status;
  details: string;
}

/**
 * The one place where failures become gRPC statuses. Anything that is not a CsiError is a bug or
 * an unexpected system failure: the caller gets a generic INTERNAL, the stack stays in our log.
 */
export function toServiceError(
  err: unknown,
  onInternal: (err: unknown) => string,
): ServiceErrorShape {
  if (err instanceof CsiError) return { code: err.code, details: err.message };
  const reference = onInternal(err);
  return {
    code: grpc.status.INTERNAL,
    details: `internal error in the driver (log reference ${reference})`,
  };
}
