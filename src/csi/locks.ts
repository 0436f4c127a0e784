import { Mutex } from 'async-mutex';
import { aborted } from './errors.js';

/**
 * One operation at a time per volume id. A second call while one runs gets ABORTED, as the CSI
 * spec asks; kubelet and the sidecars retry with backoff.
 */
export class VolumeLocks {
  private readonly busy = new Set<string>();

  async run<T>(volumeId: string, work: () => Promise<T>): Promise<T> {
    if (this.busy.has(volumeId)) {
      throw aborted(`an operation on volume ${volumeId} is already in progress; retry later`);
    }
    this.busy.add(volumeId);
    try {
      return await work();
    } finally {
      this.busy.delete(volumeId);
    }
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
