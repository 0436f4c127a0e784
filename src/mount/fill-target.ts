// Where a dataset's fills go: its engine mount, and for a client with a copy layer the local copy (kept from now on, its sweeps filled), the remote and the tier.
import type { LocalCopies } from '../copy/copies.js';
import { datasetRemote } from '../engines/transfer-source.js';
import type { Prefetcher, PrefetchTarget } from '../prefetch/prefetcher.js';
import { copyRoot } from '../supervisor/cache-volume.js';
import { engineMountOf, type ClientRecord } from '../supervisor/client-record.js';
import type { ClusterTier } from '../tier/cluster-tier.js';

/**
 * A client with a copy layer gets its copy kept (promotion and visibility) from the first call on,
 * whether or not anything is prefetched.
 */
export async function fillTarget(
  client: ClientRecord,
  node: {
    copies?: LocalCopies;
    prefetcher?: Prefetcher | undefined;
    tier?: ClusterTier;
    credentials(client: ClientRecord): Promise<Record<string, string>>;
  },
): Promise<PrefetchTarget> {
  const target: PrefetchTarget = { key: client.key, engineMount: engineMountOf(client) };
  const { copies } = node;
  if (client.copy && copies) {
    const tier = client.spec.clusterTier
      ? node.tier?.accessFor(client.key, client.spec, copyRoot(client.cacheDir))
      : undefined;
    const source = datasetRemote(client.spec, await node.credentials(client), client.runtimeDir);
    const copy = await copies.attach({
      key: client.key,
      spec: client.spec,
      cacheDir: client.cacheDir,
      overlay: client.mountPoint,
      fuseMount: client.copy.fuseMount,
      tier,
      // Pods sweeping a directory on demand: fill it while they read (the target is whole by then).
      onSweep: (sweep) => node.prefetcher?.sweep(target, sweep),
      source,
    });
    target.copy = {
      copy,
      source,
      tier,
      openedOnDemand: (relative) => copies.openedOnDemand(client.key, relative),
      forgetSweep: (directory) => copies.forgetSweep(client.key, directory),
      withoutSweeps: () => copies.completeByPromotion(client.key),
    };
  }
  return target;
}
