// Where a dataset's fills go: its engine mount, and for a client with a copy layer the local copy (kept from now on), the remote and the tier.
import type { LocalCopies } from '../copy/copies.js';
import { datasetRemote } from '../engines/rclone-transfer.js';
import type { PrefetchTarget } from '../prefetch/prefetcher.js';
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
    tier?: ClusterTier;
    credentials(client: ClientRecord): Promise<Record<string, string>>;
  },
): Promise<PrefetchTarget> {
  const target: PrefetchTarget = { key: client.key, engineMount: engineMountOf(client) };
  if (client.copy && node.copies) {
    const tier = client.spec.clusterTier
      ? node.tier?.accessFor(client.key, client.spec, copyRoot(client.cacheDir))
      : undefined;
    const copy = await node.copies.attach({
      key: client.key,
      spec: client.spec,
      cacheDir: client.cacheDir,
      overlay: client.mountPoint,
      fuseMount: client.copy.fuseMount,
      tier,
    });
    target.copy = {
      copy,
      source: datasetRemote(client.spec, await node.credentials(client), client.runtimeDir),
      tier,
    };
  }
  return target;
}
