// Per-volume try-locks: a conflicting CSI call gets ABORTED; stage and unstage own the whole volume, publish and unpublish one target of it.
import { Mutex } from 'async-mutex';
import { aborted } from './errors.js';

/**
 * Try-locks per volume, as the CSI spec asks (a conflicting call gets ABORTED, the caller retries).
 * Stage and unstage own the whole volume; publish and unpublish own one target of it, so pods
 * starting together on one node do not refuse each other, while a stage or unstage excludes them.
 */
export class VolumeLocks {
  private readonly exclusive = new Set<string>();
  private readonly targets = new Map<string, Set<string>>();

  /** Whole-volume work (stage, unstage, repair). */
  async runExclusive<T>(volumeId: string, work: () => Promise<T>): Promise<T> {
    if (this.exclusive.has(volumeId) || (this.targets.get(volumeId)?.size ?? 0) > 0) {
      throw aborted(`an operation on volume ${volumeId} is already in progress; retry later`);
    }
    this.exclusive.add(volumeId);
    try {
      return await work();
    } finally {
      this.exclusive.delete(volumeId);
    }
  }

  /** Work on one target path of a volume (publish, unpublish). */
  async runForTarget<T>(volumeId: string, target: string, work: () => Promise<T>): Promise<T> {
    const busy = this.targets.get(volumeId) ?? new Set<string>();
    if (this.exclusive.has(volumeId) || busy.has(target)) {
      throw aborted(
        `an operation on volume ${volumeId} at ${target} is already in progress; retry later`,
      );
    }
    busy.add(target);
    this.targets.set(volumeId, busy);
    try {
      return await work();
    } finally {
      busy.delete(target);
      if (busy.size === 0) this.targets.delete(volumeId);
    }
  }

  isBusy(volumeId: string): boolean {
    return this.exclusive.has(volumeId) || this.targets.has(volumeId);
  }
}

/** Queued (not refused) serialization per key, for work several volumes share, like a dataset. */
export class KeyedMutex {
  private readonly mutexes = new Map<string, { mutex: Mutex; users: number }>();

  async run<T>(key: string, work: () => Promise<T>): Promise<T> {
    let entry = this.mutexes.get(key);
    if (!entry) {
      entry = { mutex: new Mutex(), users: 0 };
      this.mutexes.set(key, entry);
    }
    entry.users += 1;
    try {
      return await entry.mutex.runExclusive(work);
    } finally {
      entry.users -= 1;
      if (entry.users === 0) this.mutexes.delete(key);
    }
  }
}
