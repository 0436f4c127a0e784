// The remotes a transfer reaches: a dataset's own, with its credentials and limits, and folders below one (the cluster tier's).
import type { DatasetSpec } from '../dataset/params.js';
import type { Source } from '../dataset/source.js';

/**
 * A remote a transfer reaches, defined exactly as a cache client gets it: a dataset's remote with
 * its credentials, or the cluster tier's folder of a dataset.
 */
export interface TransferSource {
  source: Source;
  secrets: Record<string, string>;
  /** A private runtime directory (HOME of the transfer). */
  runtimeDir: string;
  /** Bytes per second; undefined means unlimited. */
  bandwidthLimit?: number | undefined;
}

/** A dataset's own remote, as its cache client reaches it. */
export const datasetRemote = (
  spec: DatasetSpec,
  secrets: Record<string, string>,
  runtimeDir: string,
): TransferSource => ({
  source: spec.source,
  secrets,
  runtimeDir,
  bandwidthLimit: spec.bandwidthLimit,
});

/** A folder below a remote (the same remote, credentials and limits). */
export const below = (remote: TransferSource, folder: string): TransferSource => ({
  ...remote,
  source: { ...remote.source, path: `${remote.source.path.replace(/\/+$/, '')}/${folder}` },
});
