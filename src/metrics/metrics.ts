// The driver's Prometheus metrics: RPCs, each dataset's client, cache, prefetch, sweeps, local copy and tier, and the node's cache budgets.
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { DatasetStatus } from '../mount/dataset-status.js';
import type { NodeCacheFigures } from '../mount/node-caches.js';
import type { PrefetchStatus } from '../prefetch/jobs.js';
import type { TierFigures } from '../tier/cluster-tier.js';

/** Where dataset figures come from at scrape time (the node's mount manager). */
export interface DatasetSource {
  datasets(): Promise<DatasetStatus[]>;
  /** The node's cache budgets and kept caches. */
  nodeCaches(): NodeCacheFigures;
}

/** Turns a process-lifetime total (which restarts at 0 with a new process) into counter increments. */
class Totals {
  private readonly last = new Map<string, { pid: number; value: number }>();
  readonly sums = new Map<string, number>();

  add(key: string, pid: number, value: number): number {
    const previous = this.last.get(key);
    const delta =
      previous && previous.pid === pid && value >= previous.value ? value - previous.value : value;
    this.last.set(key, { pid, value });
    this.sums.set(key, (this.sums.get(key) ?? 0) + delta);
    return delta;
  }
}

/**
 * The driver's Prometheus metrics, in a registry of its own. Dataset figures are gathered when
 * scraped; RPCs are counted as they finish.
 */
export class DriverMetrics {
  readonly registry = new Registry();
  private readonly rpcs: Counter<'method' | 'code'>;
  private readonly rpcSeconds: Histogram<'method' | 'code'>;
  private refresh: () => Promise<void> = async () => undefined;

  constructor(
    source?: DatasetSource,
    /** Who this driver is: one constant series, joined on instance for per-node views. */
    identity?: { node: string; version: string; mode: string },
  ) {
    const registers = [this.registry];
    if (identity) {
      new Gauge({
        name: 'dataset_cache_csi_info',
        help: 'Always 1: the node, version and mode of this driver, to join on instance',
        labelNames: ['node', 'version', 'mode'],
        registers,
      }).set(identity, 1);
    }
    this.rpcs = new Counter({
      name: 'dataset_cache_csi_rpc_total',
      help: 'CSI calls answered, by method and gRPC code',
      labelNames: ['method', 'code'],
      registers,
    });
    this.rpcSeconds = new Histogram({
      name: 'dataset_cache_csi_rpc_duration_seconds',
      help: 'Time to answer a CSI call, by method and gRPC code',
      labelNames: ['method', 'code'],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 30],
      registers,
    });
    if (source) this.registerDatasets(source);
  }

  observeRpc(method: string, code: string, seconds: number): void {
    this.rpcs.inc({ method, code });
    this.rpcSeconds.observe({ method, code }, seconds);
  }

  async render(): Promise<string> {
    await this.refresh();
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  private registerDatasets(source: DatasetSource): void {
    const registers = [this.registry];
    const labelNames = ['dataset'] as const;
    const gauge = (name: string, help: string) =>
      new Gauge({ name: `dataset_cache_${name}`, help, labelNames, registers });
    const counter = (name: string, help: string) =>
      new Counter({ name: `dataset_cache_${name}`, help, labelNames, registers });

    const count = new Gauge({
      name: 'dataset_cache_datasets',
      help: 'Datasets with a cache client on this node',
      registers,
    });
    // Before each render (prom-client runs collect callbacks concurrently with rendering the
    // other metrics, so those would show the previous scrape): the datasets are asked once.
    const refreshNode = this.registerNodeCaches(source);
    this.refresh = async () => {
      refreshNode();
      const datasets = await source.datasets();
      for (const metric of [...perDataset, ...prefetchGauges]) metric.reset();
      count.set(datasets.length);
      for (const d of datasets) {
        const labels = { dataset: d.key };
        up.set(labels, d.up ? 1 : 0);
        if (d.remoteReachable !== undefined) remoteUp.set(labels, d.remoteReachable ? 1 : 0);
        volumes.set(labels, d.volumes);
        warm.set(labels, d.warm ? 1 : 0);
        quota.set(labels, d.quotaBytes);
        const { stats } = d;
        if (stats.cacheCapacityBytes !== undefined) capacity.set(labels, stats.cacheCapacityBytes);
        if (stats.cacheUsedBytes !== undefined) used.set(labels, stats.cacheUsedBytes);
        if (stats.engine.cachedFiles !== undefined) files.set(labels, stats.engine.cachedFiles);
        if (stats.engine.pendingUploads !== undefined)
          pending.set(labels, stats.engine.pendingUploads);
        restarts.inc(labels, restartTotals.add(d.key, 0, d.restarts));
        if (stats.served)
          served.inc(labels, servedTotals.add(d.key, stats.served.pid, stats.served.bytes));
        if (stats.engine.remoteBytes !== undefined) {
          remote.inc(labels, remoteTotals.add(d.key, d.pid, stats.engine.remoteBytes));
        }
        if (d.prefetch) {
          prefetchFiles.inc(labels, prefetchFileTotals.add(d.key, 0, d.prefetch.files));
          prefetchBytes.inc(labels, prefetchByteTotals.add(d.key, 0, d.prefetch.bytes));
          prefetchErrors.inc(labels, prefetchErrorTotals.add(d.key, 0, d.prefetch.errors));
          prefetchMatched.set(labels, d.prefetch.matched);
          prefetchRunning.set(labels, d.prefetch.running);
          prefetchDone.set(labels, d.prefetch.completed);
          if (d.prefetch.lastCompletedAt !== undefined) {
            prefetchLastDone.set(labels, d.prefetch.lastCompletedAt / 1000);
          }
          for (const [field, metric] of sweepCounters) {
            metric.inc(labels, sweepTotals.get(field)!.add(d.key, 0, d.prefetch.sweeps[field]));
          }
        }
        if (d.copy) {
          copyFiles.set(labels, d.copy.files);
          copyBytes.set(labels, d.copy.bytes);
          unsafeNames.inc(labels, unsafeTotals.add(d.key, 0, d.copy.unsafeNames));
          noRoom.inc(labels, noRoomTotals.add(d.key, 0, d.copy.refusedForRoom));
          promoted.inc(labels, promotedTotals.add(d.key, 0, d.copy.promoted));
          if (d.prefetch) {
            const { running, completed, noRoom: left, errors } = d.prefetch;
            copyComplete.set(
              labels,
              running === 0 && completed > 0 && left === 0 && errors === 0 ? 1 : 0,
            );
          }
        }
        if (d.tier) {
          tierUp.set(labels, d.tier.reachable ? 1 : 0);
          for (const [field, metric] of tierCounters) {
            metric.inc(labels, tierTotals.get(field)!.add(d.key, 0, d.tier[field]));
          }
        }
        const servedSum = servedTotals.sums.get(d.key) ?? 0;
        if (servedSum > 0) {
          const fetched = Math.max(
            0,
            (remoteTotals.sums.get(d.key) ?? 0) - (prefetchByteTotals.sums.get(d.key) ?? 0),
          );
          hitRatio.set(labels, Math.min(1, Math.max(0, 1 - fetched / servedSum)));
        }
      }
    };
    const up = gauge(
      'client_up',
      '1 when the dataset cache client is running and its mount answers',
    );
    const remoteUp = gauge(
      'remote_up',
      '1 when the remote answered the last check with the dataset credentials (at most every 10 s)',
    );
    const volumes = gauge('volumes', 'Volumes of the dataset staged on this node');
    const warm = gauge(
      'client_warm',
      '1 while the client serves no volume and is kept for keepWarm',
    );
    const quota = gauge('quota_bytes', 'cacheQuota of the dataset');
    const capacity = gauge('capacity_bytes', 'Room for cached data in the cache file system');
    const used = gauge('used_bytes', 'Bytes used in the cache file system');
    const files = gauge('files', 'Files held (wholly or partly) in the cache');
    const pending = gauge('pending_uploads', 'Written files not yet on the remote');
    const hitRatio = gauge(
      'hit_ratio',
      'Share of the bytes the client served that did not come from the remote (prefetched bytes count as cached)',
    );
    const restarts = counter('client_restarts_total', 'Restarts of the cache client by the driver');
    const served = counter(
      'served_bytes_total',
      'Bytes the cache client served to the kernel (page-cache hits never reach it)',
    );
    const remote = counter(
      'remote_bytes_total',
      'Bytes moved between the node and the remote (downloads and uploads)',
    );
    const prefetchFiles = counter('prefetch_files_total', 'Files warmed by prefetch');
    const prefetchBytes = counter('prefetch_bytes_total', 'Bytes read into the cache by prefetch');
    const prefetchErrors = counter(
      'prefetch_errors_total',
      'Files prefetch could not warm (they are read from the remote on first use)',
    );
    const prefetchMatched = gauge('prefetch_matched_files', 'Files matched by prefetch patterns');
    const prefetchRunning = gauge('prefetch_running', 'Prefetch jobs running');
    const prefetchDone = gauge('prefetch_completed', 'Prefetch jobs finished');
    const prefetchLastDone = gauge(
      'prefetch_last_completed_timestamp_seconds',
      'When the last prefetch job of the dataset finished (Unix time)',
    );
    const copyFiles = gauge(
      'copy_files',
      'Files in the local copy (served by the kernel, no FUSE)',
    );
    const copyBytes = gauge('copy_bytes', 'Bytes of the files in the local copy');
    const copyComplete = gauge(
      'copy_complete',
      '1 when the finished prefetch put every matched file into the local copy',
    );
    const unsafeNames = counter(
      'copy_unsafe_names_total',
      'Remote names that cannot be local paths (.., NUL, line breaks, too long): not copied',
    );
    const noRoom = counter(
      'copy_no_room_total',
      'Files the local copy left out because cacheQuota had no room for them',
    );
    const promoted = counter(
      'copy_promoted_files_total',
      'Files pods read whole on demand through the cache client (then linked into the local copy)',
    );
    const sweepCounters: [keyof PrefetchStatus['sweeps'], Counter<'dataset'>][] = [
      [
        'seen',
        counter(
          'sweeps_total',
          'Directories seen swept on demand (many distinct files read whole)',
        ),
      ],
      ['filled', counter('sweep_fills_total', 'Fills started for swept directories')],
      ['files', counter('sweep_fill_files_total', 'Files sweep fills put into the local copy')],
      ['bytes', counter('sweep_fill_bytes_total', 'Bytes sweep fills put into the local copy')],
    ];
    const sweepTotals = new Map(sweepCounters.map(([field]) => [field, new Totals()]));
    const tierUp = gauge(
      'tier_up',
      '1 when the cluster tier answered its last use (datasets with clusterTier only)',
    );
    const tierCounters: [keyof TierFigures, Counter<'dataset'>][] = [
      [
        'readFiles',
        counter('tier_read_files_total', 'Files the local copy took from the cluster tier'),
      ],
      [
        'readBytes',
        counter('tier_read_bytes_total', 'Bytes the local copy took from the cluster tier'),
      ],
      [
        'uploadedFiles',
        counter('tier_uploaded_files_total', 'Files this node uploaded to the cluster tier'),
      ],
      [
        'uploadedBytes',
        counter('tier_uploaded_bytes_total', 'Bytes this node uploaded to the cluster tier'),
      ],
      [
        'rejected',
        counter(
          'tier_rejected_total',
          'Tier objects that were not the remote file (size, time or hash): fetched from the remote instead',
        ),
      ],
      [
        'errors',
        counter(
          'tier_errors_total',
          'Uses of the cluster tier that failed (unreachable, slow, refused): the remote served instead',
        ),
      ],
      [
        'remoteBytes',
        counter(
          'fill_remote_bytes_total',
          'Bytes fills of a dataset with a cluster tier fetched from the remote (not the tier)',
        ),
      ],
      [
        'sharedFills',
        counter(
          'tier_cooperative_fills_total',
          'Fills this node shared with other nodes filling the same dataset at the same time',
        ),
      ],
      [
        'takenOverFiles',
        counter(
          'tier_taken_over_files_total',
          "Files of another node's share this node fetched itself (that node was gone, stalled or slow)",
        ),
      ],
      [
        'waitSeconds',
        counter(
          'tier_wait_seconds_total',
          "Seconds shared fills waited for other nodes' uploads to the cluster tier",
        ),
      ],
    ];
    const tierTotals = new Map(tierCounters.map(([field]) => [field, new Totals()]));

    const servedTotals = new Totals();
    const remoteTotals = new Totals();
    const restartTotals = new Totals();
    const prefetchFileTotals = new Totals();
    const prefetchByteTotals = new Totals();
    const prefetchErrorTotals = new Totals();
    const unsafeTotals = new Totals();
    const noRoomTotals = new Totals();
    const promotedTotals = new Totals();
    const perDataset = [
      up,
      remoteUp,
      volumes,
      warm,
      quota,
      capacity,
      used,
      files,
      pending,
      hitRatio,
      tierUp,
    ];
    const prefetchGauges = [
      prefetchMatched,
      prefetchRunning,
      prefetchDone,
      prefetchLastDone,
      copyFiles,
      copyBytes,
      copyComplete,
    ];
  }

  /** Node-wide cache budgets: what is in use, what is kept, what was evicted and why. */
  private registerNodeCaches(source: DatasetSource): () => void {
    const registers = [this.registry];
    const limit = new Gauge({
      name: 'dataset_cache_node_limit_bytes',
      help: 'Budget for the quotas of the caches on this node (--mem-cache-limit, --disk-cache-limit)',
      labelNames: ['medium'],
      registers,
    });
    const inUse = new Gauge({
      name: 'dataset_cache_node_used_bytes',
      help: 'Quotas of the caches on this node, running and kept, against the budget',
      labelNames: ['medium'],
      registers,
    });
    const kept = new Gauge({
      name: 'dataset_cache_node_kept_caches',
      help: 'Caches kept after their last client stopped; pending_writes="true" ones are never removed',
      labelNames: ['medium', 'pending_writes'],
      registers,
    });
    const keptBytes = new Gauge({
      name: 'dataset_cache_node_kept_bytes',
      help: 'Quotas of the caches kept after their last client stopped',
      labelNames: ['medium'],
      registers,
    });
    const evictions = new Counter({
      name: 'dataset_cache_node_evictions_total',
      help: 'Kept caches removed, by reason (budget: a stage needed room; retention: kept too long; replaced: the dataset now caches elsewhere)',
      labelNames: ['reason'],
      registers,
    });
    const evictionTotals = new Totals();
    return () => {
      const figures = source.nodeCaches();
      kept.reset();
      for (const medium of ['mem', 'disk'] as const) {
        limit.set(
          { medium },
          medium === 'mem' ? figures.limits.memBytes : figures.limits.diskBytes,
        );
        inUse.set({ medium }, figures.usedBytes[medium]);
        const mine = figures.kept.filter((k) => (k.medium === 'MEM') === (medium === 'mem'));
        keptBytes.set(
          { medium },
          mine.reduce((sum, k) => sum + k.quotaBytes, 0),
        );
        for (const pendingWrites of [true, false]) {
          kept.set(
            { medium, pending_writes: String(pendingWrites) },
            mine.filter((k) => k.pendingWrites === pendingWrites).length,
          );
        }
      }
      for (const reason of ['budget', 'retention', 'replaced'] as const) {
        evictions.inc({ reason }, evictionTotals.add(reason, 0, figures.evictions[reason]));
      }
    };
  }
}
