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

/** Durable controller state: every change is written (atomic rename) before it is acknowledged. */
export class VolumeStore {
  private doc: StoreDocument = { version: 1, volumes: {} };
  private readonly writeLock = new Mutex();

  constructor(private readonly path: string) {}

  static async open(stateDir: string): Promise<VolumeStore> {
    const dir = join(stateDir, 'controller');
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const store = new VolumeStore(join(dir, 'volumes.json'));
    store.doc = await readJson(store.path, store.doc);
    return store;
  }

  get(volumeId: string): ProvisionedVolume | undefined {
    return this.doc.volumes[volumeId];
  }

  /** Sorted by id, so pagination tokens stay meaningful across changes. */
  list(): ProvisionedVolume[] {
    return Object.values(this.doc.volumes).sort((a, b) =>
      a.volumeId < b.volumeId ? -1 : a.volumeId > b.volumeId ? 1 : 0,
    );
  }

  async put(volume: ProvisionedVolume): Promise<void> {
    await this.writeLock.runExclusive(async () => {
      const next = { ...this.doc, volumes: { ...this.doc.volumes, [volume.volumeId]: volume } };
      await writeJson(this.path, next);
      this.doc = next;
    });
  }

  async delete(volumeId: string): Promise<void> {
    await this.writeLock.runExclusive(async () => {
      if (!this.doc.volumes[volumeId]) return;
      const volumes = { ...this.doc.volumes };
      delete volumes[volumeId];
      const next = { ...this.doc, volumes };
      await writeJson(this.path, next);
      this.doc = next;
    });
  }
}
