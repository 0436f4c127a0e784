// The health loop's work: clients that died, lost their mount or hung are restarted, and their binds re-made.
import type { Logger } from 'pino';
import type { KeyedMutex, VolumeLocks } from '../csi/locks.js';
import type { Mounter } from '../kernel/mounter.js';
import type { MountTable } from '../kernel/mountinfo.js';
import type { ClientRecord, ClientState } from '../supervisor/client-record.js';
import type { CacheClients } from '../supervisor/clients.js';
import type { DatasetBinds } from './binds.js';
import type { Journal, VolumeRecord } from './journal.js';

interface RestartBackoff {
  failures: number;
  notBefore: number;
}

const MAX_BACKOFF_MS = 30_000;
/** Consecutive hung probes after which a client is killed and restarted. */
const HUNG_PROBES_BEFORE_KILL = 3;

/**
 * Keeps every dataset with staged volumes served: restarts unhealthy clients (with backoff),
 * repairs their staging and target binds, and stops clients nobody uses any more.
 */
export class DatasetSupervisor {
  private readonly backoff = new Map<string, RestartBackoff>();
  private readonly hungProbes = new Map<string, number>();
  private readonly restarts = new Map<string, number>();
  /** The last state each dataset's client was found in by a health round, and when. */
  private readonly observed = new Map<string, { state: ClientState; at: number }>();

  constructor(
    private readonly journal: Journal,
    private readonly clients: CacheClients,
    private readonly mounter: Mounter,
    private readonly locks: VolumeLocks,
    private readonly binds: DatasetBinds,
    private readonly datasetLocks: KeyedMutex,
    private readonly log: Logger,
    /** Stops a client without volumes (flush, unmount, release its cache). */
    private readonly stopIdle: (client: ClientRecord) => Promise<void>,
  ) {}

  /** Restarts of a dataset's client by this driver process. */
  restartsOf(key: string): number {
    return this.restarts.get(key) ?? 0;
  }

  /**
   * The state the health loop found a client in, when it looked within `maxAgeMs`: a metrics
   * scrape reads it instead of probing the mount again (a probe is a process per dataset).
   */
  recentState(key: string, maxAgeMs: number): ClientState | undefined {
    const seen = this.observed.get(key);
    return seen && Date.now() - seen.at <= maxAgeMs ? seen.state : undefined;
  }

  countRestart(key: string): void {
    this.restarts.set(key, (this.restarts.get(key) ?? 0) + 1);
  }

  /**
   * One round of the health loop: every dataset with staged volumes gets a healthy client and
   * live binds. A client that is dead, lost its mount or stopped answering is restarted (with
   * backoff on failure) and every staging and target bind that pointed at it is made again.
   */
  async superviseAll(): Promise<void> {
    const keys = new Set(this.journal.volumes().map((volume) => volume.datasetKey));
    for (const key of keys) {
      try {
        await this.superviseDataset(key);
      } catch (err) {
        this.log.error({ dataset: key, err }, 'repair failed');
      }
    }
    await this.stopExpiredClients();
  }

  /** Stops clients whose keepWarm ran out (and any without volumes that was not kept warm). */
  private async stopExpiredClients(): Promise<void> {
    const idle = (client: ClientRecord): boolean =>
      this.journal.volumesOf(client.key).length === 0 &&
      (client.warmUntil === undefined || Date.parse(client.warmUntil) <= Date.now());
    for (const candidate of this.journal.clients().filter(idle)) {
      await this.datasetLocks.run(candidate.key, async () => {
        const client = this.journal.client(candidate.key);
        if (!client || !idle(client)) return;
        const started = Date.now();
        await this.stopIdle(client);
        this.event('idle cache client stopped', started, {
          dataset: client.key,
          warmUntil: client.warmUntil,
        });
      });
    }
  }

  private async superviseDataset(key: string): Promise<void> {
    const backoff = this.backoff.get(key);
    if (backoff && Date.now() < backoff.notBefore) return;
    await this.datasetLocks.run(key, async () => {
      const started = Date.now();
      let client = this.journal.client(key);
      if (!client) return;
      const table = await this.mounter.table();
      const state = await this.clients.state(client, table);
      this.observed.set(key, { state, at: Date.now() });
      this.binds.noteAnswer(key, state === 'healthy');
      if (state === 'hung') {
        const count = (this.hungProbes.get(key) ?? 0) + 1;
        this.hungProbes.set(key, count);
        if (count < HUNG_PROBES_BEFORE_KILL) return;
      }
      this.hungProbes.delete(key);
      let restarted = false;
      if (state !== 'healthy') {
        try {
          client = await this.clients.restart(client);
        } catch (err) {
          const failures = (backoff?.failures ?? 0) + 1;
          const delay = Math.min(MAX_BACKOFF_MS, 500 * 2 ** failures);
          this.backoff.set(key, { failures, notBefore: Date.now() + delay });
          this.log.error(
            { dataset: key, failures, retryInMs: delay, err: String(err) },
            'client restart failed',
          );
          return;
        }
        this.backoff.delete(key);
        this.observed.set(key, { state: 'healthy', at: Date.now() });
        this.countRestart(key);
        this.journal.setClient(client);
        await this.journal.save();
        restarted = true;
      }
      const repaired = await this.repairBinds(client);
      if (restarted || repaired > 0) {
        this.event('dataset repaired', started, {
          dataset: key,
          pid: client.pid,
          restarted,
          repaired,
        });
      }
    });
  }

  /** Makes every staging and target bind of a dataset's volumes live again; returns how many. */
  private async repairBinds(client: ClientRecord): Promise<number> {
    let repaired = 0;
    const intact = (table: MountTable, volume: VolumeRecord): boolean =>
      this.binds.isBindOf(table, volume.stagingPath, client) &&
      Object.keys(volume.targets).every((target) => this.binds.isBindOf(table, target, client));
    const before = await this.mounter.table();
    for (const volume of this.journal.volumesOf(client.key)) {
      // Locks are taken only for real repairs, so that kubelet's calls are not refused in steady state.
      if (intact(before, volume) || this.locks.isBusy(volume.volumeId)) continue;
      await this.locks.runExclusive(volume.volumeId, async () => {
        let table = await this.mounter.table();
        if (!this.binds.isBindOf(table, volume.stagingPath, client)) {
          await this.binds.rebindStaging(
            client,
            volume.subPath,
            volume.stagingPath,
            volume.readOnly,
          );
          repaired += 1;
          table = await this.mounter.table();
        }
        for (const [target, { readOnly }] of Object.entries(volume.targets)) {
          if (this.binds.isBindOf(table, target, client)) continue;
          await this.binds.rebindTarget(client, volume.stagingPath, target, readOnly);
          repaired += 1;
        }
      });
    }
    return repaired;
  }

  private event(message: string, started: number, fields: Record<string, unknown>): void {
    this.log.info({ ...fields, durationMs: Date.now() - started }, message);
  }
}
