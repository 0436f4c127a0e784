// Files a sweep fill left to the pods reading them: the engine fetches those and the copy keeper promotes them; the fill waits for them a little, and fetches those the engine let go before they were promoted.
import { setTimeout as sleep } from 'node:timers/promises';
import type { RemoteEntry } from '../engines/rclone-transfer.js';
import type { Room } from '../tier/layout.js';
import { QUIET_INTERVAL_MS } from './copies.js';

export interface LeftToPods {
  /** Whether the copy holds the file as listed (promoted since). */
  holds: (entry: RemoteEntry) => boolean;
  /** Whether the engine still has the file (a pod opened it and the keeper may promote it). */
  withEngine: (relative: string) => boolean;
  room: Room;
  /** Fetches files like the fill's batches; those pods opened meanwhile go to `leftBehind`. */
  fetch: (admitted: Map<string, RemoteEntry>, leftBehind: RemoteEntry[]) => Promise<void>;
  /** The file is in the copy: its directory may be complete. */
  onHeld: (entry: RemoteEntry) => void;
  /** The engine let the file go and it is fetched now (or the room had none for it). */
  onTakenBack: (entry: RemoteEntry, admitted: boolean) => void;
  signal?: AbortSignal | undefined;
}

/**
 * How long files still with the engine are waited for after the last one was promoted: two
 * rounds of a copy keeper at rest. Files that a pod reads in part never complete: the wait ends.
 */
const PATIENCE_MS = 2 * QUIET_INTERVAL_MS;
/** How often they are looked at again (two file-system calls each). */
const LOOK_MS = 1000;

/**
 * Settles the files a fill left to the pods. The engine's share of the cache is small next to the
 * copy's, and it evicts by its own count (promoted files included), so a file read early in an
 * epoch may be gone from it before the keeper promoted it: without a second look it would be
 * missing from the copy, and read from the remote again at the next epoch.
 */
export async function settleLeftToPods(entries: RemoteEntry[], how: LeftToPods): Promise<void> {
  let waiting = entries;
  let lastSettled = performance.now();
  while (waiting.length > 0 && !how.signal?.aborted) {
    const still: RemoteEntry[] = [];
    const lost = new Map<string, RemoteEntry>();
    for (const entry of waiting) {
      if (how.holds(entry)) {
        how.onHeld(entry);
      } else if (how.withEngine(entry.relative)) {
        still.push(entry);
      } else {
        const admitted = how.room.take(entry);
        if (admitted) lost.set(entry.relative, entry);
        how.onTakenBack(entry, admitted);
      }
    }
    if (lost.size > 0) await how.fetch(lost, still);
    if (still.length < waiting.length) lastSettled = performance.now();
    waiting = still;
    if (waiting.length === 0 || performance.now() - lastSettled > PATIENCE_MS) return;
    await sleep(LOOK_MS, undefined, { signal: how.signal }).catch(() => undefined);
  }
}
