// Polling until a condition holds, for tests that wait on background work (prefetch, repair).
import { sleep } from '../../src/kernel/proc.js';

/** Polls `probe` until it returns a value; fails naming `what` after `ms`. */
export async function until<T>(
  what: string,
  probe: () => Promise<T | undefined>,
  ms = 60_000,
  intervalMs = 100,
): Promise<T> {
  return (await untilHolds(what, probe, (value) => value !== undefined, ms, intervalMs)) as T;
}

/**
 * Polls `probe` until `holds` accepts its value; fails after `ms` naming `what` and the last value
 * seen, so that a timeout says how far from the condition the system stayed.
 */
export async function untilHolds<T>(
  what: string,
  probe: () => Promise<T>,
  holds: (value: T) => boolean,
  ms = 60_000,
  intervalMs = 100,
): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await probe();
    if (holds(value)) return value;
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting for ${what}; last seen: ${JSON.stringify(value)}`);
    }
    await sleep(intervalMs);
  }
}
