// The node's cache budgets: MEM and disk caches sized up front, kept caches retained for a while and evicted least recently used.
import { Mutex } from 'async-mutex';
import type { Logger } from 'pino';
import { resourceExhausted } from '../csi/errors.js';
import type { CacheMedium, DatasetSpec } from '../dataset/params.js';
import type { ClientRecord, StoppedClient } from '../supervisor/client-record.js';
import type { Journal, KeptCache } from './journal.js';

export interface CacheLimits {
  /** Sum of MEM cache quotas: running clients and kept tmpfs caches. */
  memBytes: number;
  /** Sum of SSD/HDD cache quotas: running clients and kept images. */
  diskBytes: number;
  /** How long a kept cache (without pending writes) stays after its last client stopped. */
  retentionMs: number;
}

/** Removes a kept cache's file system and files (CacheClients.discardCache). */
export type DiscardCache = (medium: CacheMedium, cacheDir: string) => Promise<void>;

export interface NodeCacheFigures {
  limits: CacheLimits;
  usedBytes: Record<'mem' | 'disk', number>;
  kept: KeptCache[];
  evictions: Record<EvictionReason, number>;
}

type EvictionReason = 'budget' | 'retention' | 'replaced';
type Budget = 'mem' | 'disk';
const budgetOf = (medium: CacheMedium): Budget => (medium === 'MEM' ? 'mem' : 'disk');
const size = (bytes: number): string =>
  bytes >= 2 ** 30 ? `${(bytes / 2 ** 30).toFixed(1)}Gi` : `${Math.round(bytes / 2 ** 20)}Mi`;

/**
 * Decides whether a new cache fits the node. Quotas are the unit (a cache's file system is exactly
 * its quota): running clients and kept caches count. When a stage needs room, kept caches of other
 * datasets go first, least recently used first; one that may hold writes the remote lacks is never
 * removed. Starts in flight hold a reservation, so two stages never spend the same room.
 */
export class NodeCaches {
  private readonly decisions = new Mutex();
  /** Quotas of clients being started (not yet in the journal), by dataset key. */
  private readonly reserved = new Map<string, DatasetSpec>();
  private readonly evictions: Record<EvictionReason, number> = {
    budget: 0,
    retention: 0,
    replaced: 0,
  };

  constructor(
    private readonly journal: Journal,
    private readonly limits: CacheLimits,
    private readonly discard: DiscardCache,
    private readonly log: Logger,
  ) {}

  /**
   * Makes room for a client of `key` and reserves it until `settle` is called with the outcome.
   * Its own kept cache is taken over (not evicted); RESOURCE_EXHAUSTED when nothing can give way.
   */
  async reserve(
    key: string,
    spec: DatasetSpec,
    cacheDir: string,
  ): Promise<(started: boolean) => Promise<void>> {
    const reclaimed = await this.decisions.runExclusive(async () => {
      const budget = budgetOf(spec.cache.medium);
      let own = this.journal.keptCache(key);
      // Kept elsewhere (another medium or cachePath): the new client cannot use it.
      if (own && own.cacheDir !== cacheDir) {
        if (!own.pendingWrites) await this.evict(own, 'replaced');
        own = undefined;
      }
      const need = spec.cache.quotaBytes;
      const others = () => this.used(budget, key);
      const victims = this.evictable(budget, key);
      // Nothing is evicted for a stage that would not fit even with every kept cache gone.
      const freeable = victims.reduce((sum, k) => sum + k.quotaBytes, 0);
      if (others() - freeable + need > this.limit(budget)) throw this.exhausted(budget, key, need);
      for (const victim of victims) {
        if (others() + need <= this.limit(budget)) break;
        await this.evict(victim, 'budget');
      }
      this.reserved.set(key, spec);
      if (own) this.journal.deleteKeptCache(key);
      await this.journal.save();
      return own;
    });
    return async (started) => {
      this.reserved.delete(key);
      // A client that failed to start leaves a kept cache where it found one.
      if (!started && reclaimed && !this.journal.client(key)) {
        this.journal.setKeptCache(reclaimed);
        await this.journal.save();
      }
    };
  }

  /** Records what a stopped client left behind. */
  async stopped(client: ClientRecord, outcome: StoppedClient): Promise<void> {
    if (!outcome.cacheKept && outcome.flushed) return;
    const kept: KeptCache = {
      key: client.key,
      medium: client.spec.cache.medium,
      cacheDir: client.cacheDir,
      quotaBytes: client.spec.cache.quotaBytes,
      keptAt: new Date().toISOString(),
      pendingWrites: !outcome.flushed,
    };
    this.journal.setKeptCache(kept);
    await this.journal.save();
    this.log.info(
      {
        dataset: kept.key,
        medium: kept.medium,
        quotaBytes: kept.quotaBytes,
        pendingWrites: kept.pendingWrites,
      },
      kept.pendingWrites ? 'cache kept: it may hold writes the remote lacks' : 'cache kept warm',
    );
  }

  /** Removes kept caches past their retention (never one with pending writes). */
  async sweep(now = Date.now()): Promise<void> {
    await this.decisions.runExclusive(async () => {
      for (const kept of this.journal.allKeptCaches()) {
        if (kept.pendingWrites || this.reserved.has(kept.key)) continue;
        if (now - Date.parse(kept.keptAt) >= this.limits.retentionMs) {
          await this.evict(kept, 'retention');
        }
      }
    });
  }

  figures(): NodeCacheFigures {
    return {
      limits: this.limits,
      usedBytes: { mem: this.used('mem'), disk: this.used('disk') },
      kept: this.journal.allKeptCaches(),
      evictions: { ...this.evictions },
    };
  }

  private limit(budget: Budget): number {
    return budget === 'mem' ? this.limits.memBytes : this.limits.diskBytes;
  }

  /** Quota bytes the budget holds now, leaving out dataset `except` (its own cache is reused). */
  private used(budget: Budget, except?: string): number {
    const quotas = [
      ...this.journal.clients().map((c) => ({ key: c.key, spec: c.spec.cache })),
      ...[...this.reserved].map(([key, spec]) => ({ key, spec: spec.cache })),
      ...this.journal
        .allKeptCaches()
        .map((k) => ({ key: k.key, spec: { medium: k.medium, quotaBytes: k.quotaBytes } })),
    ];
    return quotas
      .filter((q) => q.key !== except && budgetOf(q.spec.medium) === budget)
      .reduce((sum, q) => sum + q.spec.quotaBytes, 0);
  }

  /** Kept caches of other datasets that may go, least recently used first. */
  private evictable(budget: Budget, except: string): KeptCache[] {
    return this.journal
      .allKeptCaches()
      .filter((k) => k.key !== except && !k.pendingWrites && budgetOf(k.medium) === budget)
      .sort((a, b) => Date.parse(a.keptAt) - Date.parse(b.keptAt));
  }

  private async evict(kept: KeptCache, reason: EvictionReason): Promise<void> {
    const started = Date.now();
    await this.discard(kept.medium, kept.cacheDir);
    this.journal.deleteKeptCache(kept.key);
    await this.journal.save();
    this.evictions[reason] += 1;
    this.log.info(
      {
        dataset: kept.key,
        medium: kept.medium,
        quotaBytes: kept.quotaBytes,
        keptAt: kept.keptAt,
        reason,
        durationMs: Date.now() - started,
      },
      'kept cache evicted',
    );
  }

  private exhausted(budget: Budget, key: string, need: number): Error {
    const pending = this.journal
      .allKeptCaches()
      .filter((k) => k.pendingWrites && budgetOf(k.medium) === budget);
    const flag = budget === 'mem' ? '--mem-cache-limit' : '--disk-cache-limit';
    const held =
      pending.length > 0
        ? `; ${pending.length} kept caches (${size(pending.reduce((s, k) => s + k.quotaBytes, 0))}) hold writes not yet on the remote and are never removed`
        : '';
    return resourceExhausted(
      `${budget === 'mem' ? 'MEM' : 'SSD/HDD'} cache of ${size(need)} for dataset ${key} does not fit: this node allows ${size(this.limit(budget))} (${flag}) and ${size(this.used(budget, key))} is in use by running clients and kept caches${held}; use a smaller cacheQuota${budget === 'mem' ? ' or cacheMedium SSD' : ''}, or stop datasets on this node`,
    );
  }
}
