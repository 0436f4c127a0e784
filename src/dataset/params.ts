// Dataset and volume parameters: StorageClass, PV and inline-volume keys parsed into a dataset spec, and the dataset key that decides sharing.
import { createHash } from 'node:crypto';
import { posix } from 'node:path';
import { parseDuration, parseQuantity } from './quantity.js';
import { formatSource, parseSource, SourceError, type Source } from './source.js';
import { ParameterError } from './parameter-error.js';
import { parsePrefetch, type PrefetchPattern } from './patterns.js';

export const ENGINES = ['rclone', 's3fs'] as const;
export type EngineName = (typeof ENGINES)[number];
export type CacheMedium = 'MEM' | 'SSD' | 'HDD';
export type Layout = 'shared' | 'subdir';

export const DEFAULT_CACHE_QUOTA_BYTES = 2 * 2 ** 30;

/** What a cache client needs to serve one Dataset on a node. */
export interface DatasetSpec {
  source: Source;
  engine: EngineName;
  readOnly: boolean;
  cache: { medium: CacheMedium; path?: string; quotaBytes: number };
  /**
   * Complete files are kept in a local copy served by the kernel (read-only datasets only): the
   * copy shows files as they were when copied, until a refresh.
   */
  localCopy: boolean;
  /** Bytes per second on the remote link; undefined means unlimited. */
  bandwidthLimit?: number;
  /**
   * Files are taken from the node's cluster tier before the remote, and what the node fetched is
   * shared there (set by administrators only: never on inline volumes). Tuning: not in the key.
   */
  clusterTier?: boolean;
  /** Owner and modes the dataset's files show (unset: root, and the engine's default modes). */
  ownership?: Ownership;
  /**
   * Who the remote is read as: a keyed digest of the credentials and, for inline volumes, the
   * pod's namespace (see CredentialIdentity). It is part of the dataset key, so a volume staged
   * with other credentials never shares a client (and data read with those credentials).
   */
  tenant?: string;
}

/**
 * Who the files of a dataset belong to, for pods that run as a non-root user (FUSE mounts ignore
 * fsGroup). Modes are permission bits only: no setuid, setgid or sticky bit.
 */
export interface Ownership {
  uid?: number;
  gid?: number;
  fileMode?: number;
  dirMode?: number;
}

/** What a volume adds on top of its Dataset. */
export interface VolumeParameters {
  dataset: DatasetSpec;
  layout: Layout;
  onDelete: 'retain' | 'delete';
  /** Directory of the dataset that this volume exposes ('' for the whole dataset). */
  subPath: string;
  /** Warmed into the cache after staging, once per dataset on a node. */
  prefetch: PrefetchPattern[];
  /**
   * Whether pods sweeping a directory on demand get it filled in bulk into the local copy (only
   * without a prefetch list: a list says exactly what to warm). On unless turned off: measured,
   * a first epoch a link's round trip away runs 1.5-2.2x faster with it, one on a LAN about as
   * fast (see docs/operations.md, Sweeps).
   */
  autoPrefetch: boolean;
  /** How long the client and its cache outlive the dataset's last unstage on a node (0: not). */
  keepWarmMs: number;
}

/** Keys an administrator may set on a StorageClass or a PV's volumeAttributes. */
export const KNOWN_KEYS: ReadonlySet<string> = new Set([
  'source',
  'engine',
  'cacheMedium',
  'cachePath',
  'cacheQuota',
  'layout',
  'onDelete',
  'readOnly',
  'prefetch',
  'autoPrefetch',
  'bandwidthLimit',
  'keepWarm',
  'subPath',
  'localCopy',
  'clusterTier',
  'uid',
  'gid',
  'fileMode',
  'dirMode',
]);
/** Added by csi-provisioner (--extra-create-metadata) and by kubelet (podInfoOnMount). */
const KUBERNETES_PREFIX = 'csi.storage.k8s.io/';

function oneOf<T extends string>(
  key: string,
  value: string | undefined,
  allowed: readonly T[],
  fallback: T,
): T {
  if (value === undefined) return fallback;
  if ((allowed as readonly string[]).includes(value)) return value as T;
  throw new ParameterError(
    `parameter ${key}="${value}" is invalid; expected one of ${allowed.join(', ')}`,
  );
}

function parseBool(key: string, value: string | undefined, unset = false): boolean {
  if (value === undefined) return unset;
  if (value === 'true') return true;
  if (value === 'false') return false;
  throw new ParameterError(`parameter ${key}="${value}" is invalid; expected true or false`);
}

/** A relative directory inside the dataset; never escapes it. */
export function normalizeSubPath(key: string, value: string | undefined): string {
  if (value === undefined || value === '' || value === '/') return '';
  if (/[\0\n\r]/.test(value))
    throw new ParameterError(`parameter ${key} contains control characters`);
  if (value.startsWith('/'))
    throw new ParameterError(`parameter ${key}="${value}" must be a relative path`);
  if (value.split('/').includes('..'))
    throw new ParameterError(`parameter ${key}="${value}" must not contain '..'`);
  const normalized = posix.normalize(value).replace(/\/+$/, '');
  return normalized === '.' ? '' : normalized;
}

/** On by default where it can work: read-only datasets served by rclone. */
function parseLocalCopy(value: string | undefined, readOnly: boolean, engine: EngineName): boolean {
  if (value === undefined) return readOnly && engine === 'rclone';
  const wanted = parseBool('localCopy', value);
  if (wanted && !readOnly) {
    throw new ParameterError(
      'parameter localCopy=true needs readOnly: true (a local copy is never written back to the remote)',
    );
  }
  if (wanted && engine !== 'rclone') {
    throw new ParameterError(`parameter localCopy=true needs engine rclone, not ${engine}`);
  }
  return wanted;
}

/** Largest id a Linux user or group can have ((uid_t)-1 means "unchanged" to chown). */
const MAX_ID = 2 ** 32 - 2;

function parseId(key: string, value: string): number {
  const id = /^\d{1,10}$/.test(value) ? Number(value) : NaN;
  if (!(id <= MAX_ID)) {
    throw new ParameterError(
      `parameter ${key}="${value}" is not a numeric id between 0 and ${MAX_ID}`,
    );
  }
  return id;
}

function parseMode(key: string, value: string): number {
  if (!/^0?[0-7]{3}$/.test(value)) {
    throw new ParameterError(
      `parameter ${key}="${value}" is not an octal mode such as 0775 (permission bits only)`,
    );
  }
  return parseInt(value, 8);
}

function parseOwnership(params: Record<string, string>, engine: EngineName): Ownership | undefined {
  const ownership: Ownership = {};
  if (params.uid !== undefined) ownership.uid = parseId('uid', params.uid);
  if (params.gid !== undefined) ownership.gid = parseId('gid', params.gid);
  if (params.fileMode !== undefined) ownership.fileMode = parseMode('fileMode', params.fileMode);
  if (params.dirMode !== undefined) ownership.dirMode = parseMode('dirMode', params.dirMode);
  if (engine === 's3fs' && ownership.fileMode !== undefined) {
    throw new ParameterError(
      'parameter fileMode needs engine rclone: s3fs has one mode for files and directories (set dirMode)',
    );
  }
  return Object.keys(ownership).length === 0 ? undefined : ownership;
}

const MAX_KEEP_WARM_MS = 7 * 24 * 3600 * 1000;

/** Generous for any real URL or path, small enough that nothing oversized reaches a command line. */
const MAX_VALUE_BYTES = 4096;

export function parseVolumeParameters(params: Record<string, string>): VolumeParameters {
  for (const [key, value] of Object.entries(params)) {
    if (Buffer.byteLength(value) > MAX_VALUE_BYTES) {
      throw new ParameterError(`parameter ${key} is longer than ${MAX_VALUE_BYTES} bytes`);
    }
    if (key.startsWith(KUBERNETES_PREFIX)) continue;
    if (!KNOWN_KEYS.has(key)) {
      throw new ParameterError(
        `unknown parameter ${JSON.stringify(key.slice(0, 64))}; known parameters: ${[...KNOWN_KEYS].join(', ')}`,
      );
    }
  }
  const rawSource = params.source;
  if (rawSource === undefined || rawSource === '')
    throw new ParameterError('parameter source is required');
  let source: Source;
  try {
    source = parseSource(rawSource);
  } catch (err) {
    if (err instanceof SourceError) throw new ParameterError(`parameter ${err.message}`);
    throw err;
  }
  const engine = oneOf('engine', params.engine, ENGINES, 'rclone');
  if (engine === 's3fs' && source.kind !== 's3') {
    throw new ParameterError(
      `parameter engine=s3fs serves only s3:// sources, not ${source.kind}://`,
    );
  }
  const medium = oneOf('cacheMedium', params.cacheMedium, ['MEM', 'SSD', 'HDD'] as const, 'MEM');
  let quotaBytes = DEFAULT_CACHE_QUOTA_BYTES;
  if (params.cacheQuota !== undefined) {
    const parsed = parseQuantity(params.cacheQuota);
    if (parsed === undefined || parsed <= 0) {
      throw new ParameterError(
        `parameter cacheQuota="${params.cacheQuota}" is not a size such as 15Gi or 500Mi`,
      );
    }
    quotaBytes = parsed;
  }
  const cache: DatasetSpec['cache'] = { medium, quotaBytes };
  if (params.cachePath !== undefined) {
    if (medium === 'MEM')
      throw new ParameterError('parameter cachePath applies only to cacheMedium SSD or HDD');
    const path = params.cachePath;
    if (!path.startsWith('/') || /[\0\n\r]/.test(path) || path.split('/').includes('..')) {
      throw new ParameterError(
        `parameter cachePath="${path}" must be an absolute path without '..'`,
      );
    }
    cache.path = posix.normalize(path).replace(/(.)\/+$/, '$1');
  }
  // An HTTP source cannot take writes, whatever was asked.
  const readOnly = parseBool('readOnly', params.readOnly) || source.kind === 'http';
  const dataset: DatasetSpec = {
    source,
    engine,
    readOnly,
    cache,
    localCopy: parseLocalCopy(params.localCopy, readOnly, engine),
  };
  const ownership = parseOwnership(params, engine);
  if (ownership) dataset.ownership = ownership;
  if (parseBool('clusterTier', params.clusterTier)) {
    if (!dataset.localCopy) {
      throw new ParameterError(
        'parameter clusterTier=true needs a local copy: readOnly: true, engine rclone and localCopy not false (the tier shares complete files of read-only datasets)',
      );
    }
    dataset.clusterTier = true;
  }
  if (params.bandwidthLimit !== undefined) {
    if (engine !== 'rclone') {
      throw new ParameterError(
        `parameter bandwidthLimit needs engine rclone; ${engine} cannot limit its rate`,
      );
    }
    const limit = parseQuantity(params.bandwidthLimit);
    if (limit === undefined || limit <= 0) {
      throw new ParameterError(
        `parameter bandwidthLimit="${params.bandwidthLimit}" is not a rate in bytes/s such as 100M`,
      );
    }
    dataset.bandwidthLimit = limit;
  }
  const keepWarmMs = params.keepWarm === undefined ? 0 : parseDuration(params.keepWarm);
  if (keepWarmMs === undefined || keepWarmMs > MAX_KEEP_WARM_MS) {
    throw new ParameterError(
      `parameter keepWarm="${params.keepWarm}" is not a duration of at most 168h such as 10m or 2h`,
    );
  }
  return {
    prefetch: parsePrefetch(params.prefetch),
    autoPrefetch: parseBool('autoPrefetch', params.autoPrefetch, true),
    keepWarmMs,
    dataset,
    layout: oneOf('layout', params.layout, ['shared', 'subdir'] as const, 'shared'),
    onDelete: oneOf('onDelete', params.onDelete, ['retain', 'delete'] as const, 'retain'),
    subPath: normalizeSubPath('subPath', params.subPath),
  };
}

/** Keys a pod spec may set on an inline volume; the rest reach host resources or outlive the pod. */
const INLINE_KEYS = new Set([
  'source',
  'engine',
  'readOnly',
  'localCopy',
  'subPath',
  'cacheQuota',
  'prefetch',
  'autoPrefetch',
  'bandwidthLimit',
  // The driver cannot see the pod's securityContext (kubelet passes its name, namespace, uid and
  // service account); these only change how the pod's own client shows its files.
  'uid',
  'gid',
  'fileMode',
  'dirMode',
]);
export const EPHEMERAL_CONTEXT_KEY = 'csi.storage.k8s.io/ephemeral';
export const POD_NAMESPACE_KEY = 'csi.storage.k8s.io/pod.namespace';

/**
 * Parameters of an inline ephemeral volume, written by any user who can create a pod: only remote
 * sources and a MEM cache of bounded size (the caller adds the tenant: namespace and credentials).
 */
export function parseInlineVolumeParameters(
  context: Record<string, string>,
  maxCacheQuotaBytes: number,
): VolumeParameters {
  for (const key of Object.keys(context)) {
    if (key.startsWith(KUBERNETES_PREFIX) || INLINE_KEYS.has(key)) continue;
    throw new ParameterError(
      `inline volumes cannot set ${JSON.stringify(key.slice(0, 64))}; allowed: ${[...INLINE_KEYS].join(', ')} (other settings need a StorageClass or PersistentVolume)`,
    );
  }
  const params = parseVolumeParameters(context);
  if (context.cacheQuota === undefined) {
    params.dataset.cache.quotaBytes = Math.min(params.dataset.cache.quotaBytes, maxCacheQuotaBytes);
  }
  if (params.dataset.source.kind === 'local') {
    throw new ParameterError('inline volumes cannot use local:// sources (paths on the node)');
  }
  if (params.dataset.cache.quotaBytes > maxCacheQuotaBytes) {
    throw new ParameterError(
      `cacheQuota of an inline volume may be at most ${maxCacheQuotaBytes} bytes on this node`,
    );
  }
  return params;
}

/**
 * The sharing key of a Dataset: what decides the bytes a reader sees (source, engine, writability,
 * a local copy turned off, the tenant, owner and modes), never tuning. Equal keys share one cache client on a node.
 */
export function datasetKey(spec: DatasetSpec): string {
  const identity = JSON.stringify([
    formatSource(spec.source),
    spec.engine,
    spec.readOnly,
    ...(spec.tenant === undefined ? [] : [spec.tenant]),
    ...(spec.ownership === undefined ? [] : [['ownership', spec.ownership]]),
    // What a reader sees differs (a copy is a snapshot until refreshed); keys of datasets with the
    // default stay as they were.
    ...(spec.localCopy === (spec.readOnly && spec.engine === 'rclone') ? [] : ['no-copy']),
  ]);
  return `ds-${createHash('sha256').update(identity).digest('hex').slice(0, 16)}`;
}
