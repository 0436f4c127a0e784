// The node's journal: datasets' clients, volumes with their staging and target paths, and kept caches, written atomically.
import { join } from 'node:path';
import type { CacheMedium } from '../dataset/params.js';
import type { PrefetchPattern } from '../dataset/patterns.js';
import type { ClientRecord } from '../supervisor/client-record.js';
import { readJson, writeJson } from '../state/json-file.js';

export interface VolumeRecord {
  volumeId: string;
  datasetKey: string;
  subPath: string;
  stagingPath: string;
  readOnly: boolean;
  targets: Record<string, { readOnly: boolean }>;
  /** keepWarm of the volume: how long its client outlives it when it is the dataset's last. */
  keepWarmMs?: number;
  /** An inline volume: staged by the driver at its own path, unstaged with its last target. */
  ephemeral?: boolean;
  /** The volume's prefetch patterns: a restarted driver resumes them. */
  prefetch?: PrefetchPattern[];
  /**
   * Set when the volume has sweep fills (autoPrefetch, on unless "false"). Records of drivers from
   * before it was the default lack it for volumes staged with sweeps off: resumed as they were.
   */
  autoPrefetch?: true;
}

/** A dataset's cache that outlived its client on this node (warm for the next one). */
export interface KeptCache {
  key: string;
  medium: CacheMedium;
  cacheDir: string;
  quotaBytes: number;
  /** When its last client stopped: retention and least-recently-used eviction count from here. */
  keptAt: string;
  /** It may hold writes that never reached the remote: it is never removed by the driver. */
  pendingWrites: boolean;
}

interface JournalDocument {
  version: 1;
  datasets: Record<string, ClientRecord>;
  volumes: Record<string, VolumeRecord>;
  /** Absent in journals of versions before caches were collected. */
  caches?: Record<string, KeptCache>;
}

/**
 * The node's durable record of clients, staged volumes and published targets. Changes are made
 * in memory and then saved whole; saves are chained so the file always holds the latest state.
 * Records live in Maps: volume ids are chosen by callers, and one named `__proto__` or
 * `constructor` must be a volume like any other, not a property of every object.
 */
export class Journal {
  private datasets = new Map<string, ClientRecord>();
  private volumeRecords = new Map<string, VolumeRecord>();
  private keptCaches = new Map<string, KeptCache>();
  private writing: Promise<void> = Promise.resolve();
  private next: Promise<void> | undefined;

  constructor(private readonly path: string) {}

  static inStateDir(stateDir: string): Journal {
    return new Journal(join(stateDir, 'journal.json'));
  }

  async load(): Promise<void> {
    const doc = await readJson<JournalDocument>(this.path, {
      version: 1,
      datasets: {},
      volumes: {},
    });
    if (doc.version !== 1)
      throw new Error(`${this.path}: unsupported journal version ${String(doc.version)}`);
    this.datasets = new Map(Object.entries(doc.datasets));
    this.volumeRecords = new Map(Object.entries(doc.volumes));
    this.keptCaches = new Map(Object.entries(doc.caches ?? {}));
  }

  /**
   * Resolves once a write that started after this call is on disk. Callers arriving while a write
   * runs share the next one (group commit): under a storm of publishes the journal is written a
   * few times, not once per call in a queue.
   */
  save(): Promise<void> {
    this.next ??= this.writing
      .catch(() => undefined)
      .then(() => {
        this.next = undefined;
        const doc: JournalDocument = {
          version: 1,
          datasets: Object.fromEntries(this.datasets),
          volumes: Object.fromEntries(this.volumeRecords),
          caches: Object.fromEntries(this.keptCaches),
        };
        return writeJson(this.path, doc);
      });
    this.writing = this.next;
    return this.next;
  }

  client(key: string): ClientRecord | undefined {
    return this.datasets.get(key);
  }

  clients(): ClientRecord[] {
    return [...this.datasets.values()];
  }

  setClient(record: ClientRecord): void {
    this.datasets.set(record.key, record);
  }

  deleteClient(key: string): void {
    this.datasets.delete(key);
  }

  volume(volumeId: string): VolumeRecord | undefined {
    return this.volumeRecords.get(volumeId);
  }

  volumes(): VolumeRecord[] {
    return [...this.volumeRecords.values()];
  }

  volumesOf(datasetKey: string): VolumeRecord[] {
    return this.volumes().filter((volume) => volume.datasetKey === datasetKey);
  }

  setVolume(record: VolumeRecord): void {
    this.volumeRecords.set(record.volumeId, record);
  }

  deleteVolume(volumeId: string): void {
    this.volumeRecords.delete(volumeId);
  }

  keptCache(key: string): KeptCache | undefined {
    return this.keptCaches.get(key);
  }

  allKeptCaches(): KeptCache[] {
    return [...this.keptCaches.values()];
  }

  setKeptCache(record: KeptCache): void {
    this.keptCaches.set(record.key, record);
  }

  deleteKeptCache(key: string): void {
    this.keptCaches.delete(key);
  }
}
