// A dataset file's fingerprint as a remote listing gives it (size, time) and how a local file is compared with it.

/** File times within a millisecond are the same time (remotes differ in precision below that). */
export const sameTime = (a: number, b: number): boolean => Math.abs(a - b) < 1;

/**
 * Whether a local time matches a listed one; a listing without times (NaN) cannot tell, and the
 * size alone decides.
 */
export const sameTimeOrUnlisted = (localMs: number, listedMs: number): boolean =>
  Number.isNaN(listedMs) || sameTime(localMs, listedMs);
