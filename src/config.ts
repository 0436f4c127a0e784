// The driver's configuration: its flags, their defaults and usage text, and the checks that turn them into a Config.
import { parseArgs } from 'node:util';
import { z } from 'zod';
import { totalmem } from 'node:os';
import { parseDuration, parseQuantity } from './dataset/quantity.js';
import { parseSource } from './dataset/source.js';
import { messageOf } from './util/errors.js';

const DRIVER_NAME = /^[a-zA-Z][A-Za-z0-9-._]{0,61}[a-zA-Z]$/;

const isS3Location = (value: string): boolean => {
  try {
    return parseSource(value).kind === 's3';
  } catch {
    return false;
  }
};

/** The cluster tier: an S3-compatible store the nodes share (set by the administrator). */
export const ClusterTierSchema = z.object({
  location: z
    .string()
    .refine(isS3Location, 'cluster-tier must be s3://bucket[/prefix] (no port, no "..")'),
  endpoint: z
    .string()
    .url('cluster-tier-endpoint must be a URL such as http://minio:9000')
    .optional(),
  region: z
    .string()
    .regex(/^[a-z0-9-]{1,64}$/, 'cluster-tier-region must be a region name')
    .optional(),
  /** A directory holding the keys accessKeyId and secretAccessKey (a mounted Secret). */
  credentialsDir: z
    .string()
    .startsWith('/', 'cluster-tier-credentials must be an absolute path')
    .optional(),
  transfers: z.number().int().min(1).max(64),
  uploadBandwidth: z
    .number()
    .int()
    .positive('cluster-tier-upload-limit must be a rate in bytes/s such as 100M')
    .optional(),
  /**
   * How often a node filling a dataset with others says so in the tier; a member silent for twice
   * this long, or a share that made no progress for as long, is taken over by the others.
   */
  memberRefreshMs: z
    .number()
    .int()
    .min(200, 'cluster-tier-member-refresh must be a duration such as 5s (200ms at least)')
    .max(600_000, 'cluster-tier-member-refresh must be 10m at most')
    .optional(),
});

export const ConfigSchema = z.object({
  endpoint: z.string().startsWith('unix:///', 'endpoint must be unix:///absolute/path.sock'),
  nodeId: z.string().min(1).max(128),
  stateDir: z.string().startsWith('/', 'state-dir must be an absolute path'),
  mode: z.enum(['all', 'controller', 'node']),
  logLevel: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']),
  driverName: z
    .string()
    .regex(DRIVER_NAME, 'driver-name must be 2-63 characters, start and end with a letter'),
  memCacheDir: z.string().startsWith('/', 'mem-cache-dir must be an absolute path'),
  runtimeDir: z.string().startsWith('/', 'runtime-dir must be an absolute path'),
  /** When set, staging and target paths must lie below it (kubelet's root directory). */
  kubeletDir: z.string().startsWith('/', 'kubelet-dir must be an absolute path').optional(),
  healthIntervalMs: z.number().int().min(100).max(60_000),
  pageCache: z.enum(['bindfs', 'none']),
  /** Sum of the quotas of all MEM caches on the node. */
  memCacheLimitBytes: z.number().int().positive('mem-cache-limit must be a size such as 8Gi'),
  /** Sum of the quotas of all SSD/HDD caches on the node, running and kept. */
  diskCacheLimitBytes: z.number().int().positive('disk-cache-limit must be a size such as 100Gi'),
  /** How long stopping a writable dataset's client waits for its writes to reach the remote. */
  flushTimeoutMs: z.number().int().min(0, 'flush-timeout must be a duration such as 2m'),
  /** How long a cache outlives its dataset's last client on the node before it is removed. */
  cacheRetentionMs: z.number().int().min(0, 'cache-retention must be a duration such as 168h'),
  rcloneBinary: z.string().min(1),
  /** The largest cacheQuota a pod's inline volume may ask for. */
  ephemeralCacheQuotaLimitBytes: z
    .number()
    .int()
    .positive('ephemeral-cache-quota-limit must be a size such as 2Gi'),
  /** Files a prefetch job reads at once. */
  prefetchConcurrency: z.number().int().min(1).max(256),
  /** Unix socket of the client launcher; absent: clients are started by the driver itself. */
  launcherSocket: z.string().startsWith('/', 'launcher-socket must be an absolute path').optional(),
  /** host:port of the Prometheus endpoint; absent: no metrics server. */
  metricsAddress: z
    .string()
    .regex(
      /^(?:\[[0-9a-fA-F:]+\]|[^:\s]*):[0-9]{1,5}$/,
      'metrics-address must be HOST:PORT or :PORT',
    )
    .optional(),
  clusterTier: ClusterTierSchema.optional(),
  /** Test only: the process kills itself at this point, as a crash would (DATASET_CACHE_CSI_FAULT_POINT). */
  faultPoint: z.string().optional(),
});

export type Config = z.infer<typeof ConfigSchema>;

export const DEFAULTS = {
  stateDir: '/var/lib/dataset-cache-csi',
  mode: 'all',
  logLevel: 'info',
  driverName: 'dataset-cache.csi.dev',
  memCacheDir: '/dev/shm/dataset-cache-csi',
  runtimeDir: '/run/dataset-cache-csi',
  healthIntervalMs: 1000,
  pageCache: 'bindfs',
  rcloneBinary: 'rclone',
  prefetchConcurrency: 16,
  ephemeralCacheQuotaLimit: '2Gi',
  clusterTierTransfers: 8,
  clusterTierMemberRefresh: '5s',
  diskCacheLimit: '100Gi',
  cacheRetention: '168h',
  flushTimeout: '2m',
} as const;

export const USAGE = `usage: dataset-cache-csi --endpoint unix:///path/csi.sock --node-id NAME [options]
  --state-dir DIR        node and controller state (default ${DEFAULTS.stateDir})
  --mode MODE            all | controller | node (default ${DEFAULTS.mode})
  --driver-name NAME     CSI plugin name (default ${DEFAULTS.driverName})
  --mem-cache-dir DIR    tmpfs directory for MEM caches (default ${DEFAULTS.memCacheDir})
  --runtime-dir DIR      tmpfs directory for client runtime files (default ${DEFAULTS.runtimeDir})
  --kubelet-dir DIR      refuse staging and target paths outside this directory
  --health-interval MS   how often clients and mounts are checked (default ${DEFAULTS.healthIntervalMs})
  --page-cache MODE      bindfs (warm reads from the page cache) | none (default ${DEFAULTS.pageCache})
  --mem-cache-limit SIZE sum of all MEM cache quotas on the node (default: half the memory)
  --disk-cache-limit SIZE  sum of all SSD/HDD cache quotas on the node, running and kept
                         (default ${DEFAULTS.diskCacheLimit})
  --cache-retention DURATION  how long a cache outlives its dataset's last client on the node
                         (default ${DEFAULTS.cacheRetention}; 0s: removed at once)
  --flush-timeout DURATION  how long stopping a writable dataset's client waits for its writes
                         to reach the remote; a cache still holding some is kept (default ${DEFAULTS.flushTimeout})
  --rclone PATH          rclone binary (default ${DEFAULTS.rcloneBinary})
  --ephemeral-cache-quota-limit SIZE  largest cacheQuota of an inline volume (default ${DEFAULTS.ephemeralCacheQuotaLimit})
  --prefetch-concurrency N  files a prefetch reads at once (default ${DEFAULTS.prefetchConcurrency})
  --metrics-address ADDR Prometheus /metrics on HOST:PORT or :PORT (default: off)
  --cluster-tier s3://BUCKET[/PREFIX]  a store the nodes share: read-only datasets whose
                         StorageClass sets clusterTier: "true" read files there before the remote,
                         and upload what they fetched (default: none)
  --cluster-tier-endpoint URL, --cluster-tier-region REGION  where the tier's S3 API answers
  --cluster-tier-credentials DIR  directory with files accessKeyId and secretAccessKey (a Secret)
  --cluster-tier-transfers N  files moved to or from the tier at once (default ${DEFAULTS.clusterTierTransfers})
  --cluster-tier-upload-limit RATE  bytes/s uploads to the tier may take (default: unlimited)
  --cluster-tier-member-refresh DURATION  how often a node filling a dataset together with
                         others says so in the tier; a silent or stalled member's share is taken
                         over after twice this (default ${DEFAULTS.clusterTierMemberRefresh})
  --launcher-socket PATH start cache clients through this launcher (they then survive the
                         driver's container; see "Upgrades" in docs/operations.md)
  --log-level LEVEL      trace | debug | info | warn | error (default ${DEFAULTS.logLevel})
  dataset-cache-csi demo  runs the local demo (see docs/parameters.md)
  dataset-cache-csi prefetch --state-dir DIR --dataset KEY PATTERN...  warms a dataset's cache by hand
  dataset-cache-csi launcher --socket PATH   runs the client launcher
  dataset-cache-csi ctl COMMAND ...           CSI calls by hand (ctl --help)`;

export class ConfigError extends Error {}

/** The one place configuration is read: flags, then KUBE_NODE_NAME for the node id, then defaults. */
export function parseConfig(argv: string[], env: NodeJS.ProcessEnv = process.env): Config {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args: argv,
      strict: true,
      options: {
        endpoint: { type: 'string' },
        'node-id': { type: 'string' },
        'state-dir': { type: 'string' },
        mode: { type: 'string' },
        'log-level': { type: 'string' },
        'driver-name': { type: 'string' },
        'mem-cache-dir': { type: 'string' },
        'runtime-dir': { type: 'string' },
        'kubelet-dir': { type: 'string' },
        'health-interval': { type: 'string' },
        'page-cache': { type: 'string' },
        'mem-cache-limit': { type: 'string' },
        'disk-cache-limit': { type: 'string' },
        'cache-retention': { type: 'string' },
        'flush-timeout': { type: 'string' },
        rclone: { type: 'string' },
        'prefetch-concurrency': { type: 'string' },
        'ephemeral-cache-quota-limit': { type: 'string' },
        'metrics-address': { type: 'string' },
        'launcher-socket': { type: 'string' },
        'cluster-tier': { type: 'string' },
        'cluster-tier-endpoint': { type: 'string' },
        'cluster-tier-region': { type: 'string' },
        'cluster-tier-credentials': { type: 'string' },
        'cluster-tier-transfers': { type: 'string' },
        'cluster-tier-upload-limit': { type: 'string' },
        'cluster-tier-member-refresh': { type: 'string' },
      },
    }));
  } catch (err) {
    throw new ConfigError(messageOf(err));
  }
  const str = (key: string): string | undefined => values[key] as string | undefined;
  const tierOption = Object.keys(values).find(
    (key) => key.startsWith('cluster-tier-') && values[key] !== undefined,
  );
  if (tierOption && str('cluster-tier') === undefined) {
    throw new ConfigError(`--${tierOption} needs --cluster-tier s3://bucket[/prefix]`);
  }
  const result = ConfigSchema.safeParse({
    endpoint: str('endpoint') ?? env.CSI_ENDPOINT,
    nodeId: str('node-id') ?? env.KUBE_NODE_NAME,
    stateDir: str('state-dir') ?? DEFAULTS.stateDir,
    mode: str('mode') ?? DEFAULTS.mode,
    logLevel: str('log-level') ?? DEFAULTS.logLevel,
    driverName: str('driver-name') ?? DEFAULTS.driverName,
    memCacheDir: str('mem-cache-dir') ?? DEFAULTS.memCacheDir,
    runtimeDir: str('runtime-dir') ?? DEFAULTS.runtimeDir,
    kubeletDir: str('kubelet-dir'),
    healthIntervalMs:
      str('health-interval') !== undefined
        ? Number(str('health-interval'))
        : DEFAULTS.healthIntervalMs,
    pageCache: str('page-cache') ?? DEFAULTS.pageCache,
    memCacheLimitBytes:
      str('mem-cache-limit') !== undefined
        ? (parseQuantity(str('mem-cache-limit') as string) ?? -1)
        : Math.floor(totalmem() / 2),
    diskCacheLimitBytes: parseQuantity(str('disk-cache-limit') ?? DEFAULTS.diskCacheLimit) ?? -1,
    cacheRetentionMs: parseDuration(str('cache-retention') ?? DEFAULTS.cacheRetention) ?? -1,
    flushTimeoutMs: parseDuration(str('flush-timeout') ?? DEFAULTS.flushTimeout) ?? -1,
    rcloneBinary: str('rclone') ?? DEFAULTS.rcloneBinary,
    prefetchConcurrency:
      str('prefetch-concurrency') !== undefined
        ? Number(str('prefetch-concurrency'))
        : DEFAULTS.prefetchConcurrency,
    metricsAddress: str('metrics-address'),
    launcherSocket: str('launcher-socket'),
    ephemeralCacheQuotaLimitBytes:
      parseQuantity(str('ephemeral-cache-quota-limit') ?? DEFAULTS.ephemeralCacheQuotaLimit) ?? -1,
    clusterTier:
      str('cluster-tier') === undefined
        ? undefined
        : {
            location: str('cluster-tier'),
            endpoint: str('cluster-tier-endpoint'),
            region: str('cluster-tier-region'),
            credentialsDir: str('cluster-tier-credentials'),
            transfers: Number(str('cluster-tier-transfers') ?? DEFAULTS.clusterTierTransfers),
            uploadBandwidth:
              str('cluster-tier-upload-limit') === undefined
                ? undefined
                : (parseQuantity(str('cluster-tier-upload-limit') as string) ?? -1),
            memberRefreshMs:
              parseDuration(
                str('cluster-tier-member-refresh') ?? DEFAULTS.clusterTierMemberRefresh,
              ) ?? -1,
          },
    faultPoint: env.DATASET_CACHE_CSI_FAULT_POINT || undefined,
  });
  if (!result.success) {
    const problems = result.error.issues.map(
      (issue) => `${issue.path.join('.') || 'config'}: ${issue.message}`,
    );
    throw new ConfigError(problems.join('; '));
  }
  return result.data;
}
