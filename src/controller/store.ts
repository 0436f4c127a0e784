// The controller's durable state: every provisioned volume, written atomically before a call is acknowledged.
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { Mutex } from 'async-mutex';
import { readJson, writeJson } from '../state/json-file.js';

export interface ProvisionedVolume {
  volumeId: string;
  name: string;
  requiredBytes: string;
  limitBytes: string;
  capacityBytes: string;
  /** StorageClass parameters as given (minus Kubernetes metadata keys). */
  parameters: Record<string, string>;
  /** What the node receives as volume_context. */
  context: Record<string, string>;
  createdAt: string;
}

interface StoreDocument {
  version: 1;
  volumes: Record<string, ProvisionedVolume>;
}

/**
 * Durable controller state: every change is written (atomic rename) before it is acknowledged.
 * A Map, not an object: a caller's volume id such as `__proto__` must never resolve to a property.
 */
export class VolumeStore {
  private volumes = new Map<string, ProvisionedVolume>();
  private readonly writeLock = new Mutex();

  constructor(private readonly path: string) {}

  static async open(stateDir: string): Promise<VolumeStore> {
    const dir = join(stateDir, 'controller');
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const store = new VolumeStore(join(dir, 'volumes.json'));
    const doc = await readJson<StoreDocument>(store.path, { version: 1, volumes: {} });
    store.volumes = new Map(Object.entries(doc.volumes));
    return store;
  }

  get(volumeId: string): ProvisionedVolume | undefined {
    return this.volumes.get(volumeId);
  }

  /** Sorted by id, so pagination tokens stay meaningful across changes. */
  list(): ProvisionedVolume[] {
    return [...this.volumes.values()].sort((a, b) =>
      a.volumeId < b.volumeId ? -1 : a.volumeId > b.volumeId ? 1 : 0,
    );
  }

  async put(volume: ProvisionedVolume): Promise<void> {
    await this.write((volumes) => volumes.set(volume.volumeId, volume));
  }

  async delete(volumeId: string): Promise<void> {
    if (this.volumes.has(volumeId)) await this.write((volumes) => volumes.delete(volumeId));
  }

  /** The change is applied to a copy, written, and only then made current. */
  private async write(change: (volumes: Map<string, ProvisionedVolume>) => void): Promise<void> {
    await this.writeLock.runExclusive(async () => {
      const next = new Map(this.volumes);
      change(next);
      const doc: StoreDocument = { version: 1, volumes: Object.fromEntries(next) };
      await writeJson(this.path, doc);
      this.volumes = next;
    });
  }
}
