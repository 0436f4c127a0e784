// The figures of every dataset client on the node, gathered for metrics: client, cache, prefetch, local copy, cluster tier and remote.
import type { LocalCopies } from '../copy/copies.js';
import type { CopyFigures } from '../copy/local-copy.js';
import type { PrefetchStatus } from '../prefetch/jobs.js';
import type { Prefetcher } from '../prefetch/prefetcher.js';
import type { ClientRecord, ClientState, ClientStats } from '../supervisor/client-record.js';
import type { CacheClients } from '../supervisor/clients.js';
import type { ClusterTier, TierFigures } from '../tier/cluster-tier.js';
import type { Journal } from './journal.js';

export interface DatasetStatus {
  key: string;
  /** The client process: engine totals start again with a new one. */
  pid: number;
  engine: string;
  medium: string;
  quotaBytes: number;
  up: boolean;
  volumes: number;
  /** Serving no volume, kept for keepWarm. */
  warm: boolean;
  /** Restarts of the client by this driver process. */
  restarts: number;
  stats: ClientStats;
  prefetch?: PrefetchStatus;
  /** The local copy of a read-only dataset, when it has one. */
  copy?: CopyFigures;
  /** Whether the remote answered the last check (undefined: not checked yet). */
  remoteReachable?: boolean;
  /** What the cluster tier did for the dataset, when it uses one. */
  tier?: TierFigures & { reachable: boolean };
}

/** Where the figures come from. */
export interface StatusSources {
  journal: Journal;
  clients: CacheClients;
  /** The health loop's last look at a client, when it is recent. */
  recentState(key: string): ClientState | undefined;
  restartsOf(key: string): number;
  remoteReachable(client: ClientRecord): boolean | undefined;
  prefetcher?: Prefetcher;
  copies?: LocalCopies;
  tier?: ClusterTier;
}

export function datasetStatuses(sources: StatusSources): Promise<DatasetStatus[]> {
  const { journal, clients, prefetcher, copies, tier } = sources;
  return Promise.all(
    journal.clients().map(async (client) => ({
      key: client.key,
      pid: client.pid,
      engine: client.spec.engine,
      medium: client.spec.cache.medium,
      quotaBytes: client.spec.cache.quotaBytes,
      up: (sources.recentState(client.key) ?? (await clients.state(client))) === 'healthy',
      volumes: journal.volumesOf(client.key).length,
      warm: client.warmUntil !== undefined,
      restarts: sources.restartsOf(client.key),
      stats: await clients.stats(client),
      prefetch: prefetcher?.status(client.key),
      copy: copies?.get(client.key)?.current(),
      ...(client.spec.clusterTier && tier
        ? { tier: { ...tier.figuresOf(client.key), reachable: tier.problem() === undefined } }
        : {}),
      remoteReachable: sources.remoteReachable(client),
    })),
  );
}
