// Volume conditions: what NodeGetVolumeStats reports about a volume's dataset, in words an operator can act on.
import type { LocalCopies } from '../copy/copies.js';
import { ENGINE_CACHE_LIMIT_FRACTION } from '../engines/engine.js';
import type { Mounter } from '../kernel/mounter.js';
import type { ClusterTier } from '../tier/cluster-tier.js';
import type { ClientRecord, ClientState, RemoteProblem } from '../supervisor/client-record.js';
import type { CacheClients } from '../supervisor/clients.js';
import type { DatasetBinds } from './binds.js';
import type { Journal, VolumeRecord } from './journal.js';

export interface VolumeHealth {
  abnormal: boolean;
  message: string;
}

/** How an unhealthy client state reads in a volume condition. */
const CLIENT_PROBLEM: Record<Exclude<ClientState, 'healthy'>, string> = {
  dead: 'is not running',
  unmounted: 'lost its mount',
  hung: 'does not answer',
};
/**
 * A cache this full is at its engine's limit, evicting (or reading through) whatever it fetches
 * next: worth an abnormal volume condition. (Measured under eviction: 92-96 % used.)
 */
const CACHE_FULL_FRACTION = ENGINE_CACHE_LIMIT_FRACTION;
const REMOTE_CHECK_TTL_MS = 10_000;

/**
 * Checks a volume's client, binds, remote, local copy and cache, cheapest first. Nothing here
 * touches the FUSE mount from the driver's own threads.
 */
export class VolumeHealthReporter {
  private readonly remoteChecks = new Map<string, { at: number; problem?: RemoteProblem }>();
  private readonly runningChecks = new Map<string, Promise<RemoteProblem | undefined>>();

  constructor(
    private readonly journal: Journal,
    private readonly clients: CacheClients,
    private readonly mounter: Mounter,
    private readonly binds: DatasetBinds,
    private readonly copies?: LocalCopies,
    private readonly tier?: ClusterTier,
  ) {}

  async health(volume: VolumeRecord, path: string): Promise<VolumeHealth> {
    const dataset = volume.datasetKey;
    const client = this.journal.client(dataset);
    const state = client ? await this.clients.state(client) : 'dead';
    if (!client || state !== 'healthy') {
      return {
        abnormal: true,
        message: `cache client of dataset ${dataset} ${CLIENT_PROBLEM[state === 'healthy' ? 'dead' : state]}; the node is restarting it`,
      };
    }
    if (!this.binds.isBindOf(await this.mounter.table(), path, client)) {
      return {
        abnormal: true,
        message: `${path} is not a live mount of dataset ${dataset}; the node is repairing it`,
      };
    }
    const remote = await this.remoteProblem(client);
    if (remote?.clientSilent) {
      return {
        abnormal: true,
        message: `cache client of dataset ${dataset} does not answer (${remote.reason}); the node is checking it`,
      };
    }
    if (remote) {
      const cached = this.clients.engineOf(client.spec).opensCachedFilesOffline
        ? 'files already cached are still served'
        : `engine ${client.spec.engine} cannot open files until it is back, cached or not`;
      return {
        abnormal: true,
        message: `remote of dataset ${dataset} is unreachable (${remote.reason}); ${cached}`,
      };
    }
    const copy = this.copyProblem(client);
    if (copy) return { abnormal: true, message: copy };
    const tier = client.spec.clusterTier ? this.tier?.problem() : undefined;
    if (tier !== undefined) {
      return {
        abnormal: true,
        message: `cluster tier of dataset ${dataset} is unreachable (${tier}): files come from the remote, and the tier is tried again every 30s`,
      };
    }
    const { cacheUsedBytes: used, cacheCapacityBytes: capacity } =
      await this.clients.cacheUsage(client);
    if (used !== undefined && capacity !== undefined && used >= capacity * CACHE_FULL_FRACTION) {
      const mib = (bytes: number) => (bytes / 2 ** 20).toFixed(0);
      return {
        abnormal: true,
        message: `cache of dataset ${dataset} is full (${mib(used)} of ${mib(capacity)} MiB): files are evicted and fetched again; raise cacheQuota`,
      };
    }
    return { abnormal: false, message: 'cache client running, mount live, remote reachable' };
  }

  /** Why the local copy stopped growing, when it did for want of room. */
  private copyProblem(client: ClientRecord): string | undefined {
    const figures = this.copies?.get(client.key)?.current();
    if (!figures || figures.refusedForRoom === 0) return undefined;
    const mib = (bytes: number) => (bytes / 2 ** 20).toFixed(0);
    return `local copy of dataset ${client.key} is incomplete: ${figures.files} files (${mib(figures.bytes)} MiB) copied, ${figures.refusedForRoom} left out for want of room in cacheQuota; they are still served through the cache client; raise cacheQuota`;
  }

  /**
   * Whether the remote answered the last check, for metrics: never waits (a check still running
   * gives no answer yet), renews a stale answer in the background.
   */
  remoteReachable(client: ClientRecord): boolean | undefined {
    const cached = this.remoteChecks.get(client.key);
    void this.remoteProblem(client);
    return cached === undefined ? undefined : cached.problem === undefined;
  }

  /**
   * The remote check costs a request (a process, for engines without a control API): its answer
   * is reused for a while per dataset, and a stale one is renewed in the background while the
   * call answers with it, so a slow remote never holds up NodeGetVolumeStats twice.
   */
  private async remoteProblem(client: ClientRecord): Promise<RemoteProblem | undefined> {
    const cached = this.remoteChecks.get(client.key);
    if (cached && Date.now() - cached.at < REMOTE_CHECK_TTL_MS) return cached.problem;
    let running = this.runningChecks.get(client.key);
    if (!running) {
      running = this.clients.remoteProblem(client).then((problem) => {
        this.runningChecks.delete(client.key);
        // A silent client is not cached: the next call must see it recover at once.
        if (problem?.clientSilent) this.remoteChecks.delete(client.key);
        else this.remoteChecks.set(client.key, { at: Date.now(), problem });
        return problem;
      });
      this.runningChecks.set(client.key, running);
    }
    return cached && !cached.problem?.clientSilent ? cached.problem : running;
  }
}
