// Where a dataset's client stack sits on the node: its directories, the names its mounts carry in mountinfo, and which layers it has.
import { rmdir } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { DatasetSpec } from '../dataset/params.js';
import type { ClientPaths } from '../engines/engine.js';
import type { MountEntry } from '../kernel/mountinfo.js';

export interface ClientLayout {
  stateDir: string;
  /** Root of MEM caches (a tmpfs such as /dev/shm). */
  memCacheDir: string;
  /**
   * Root of per-client runtime files: config, log and the credentials a restart needs. On a tmpfs
   * such as /run, so credentials never reach a disk and never sit in the state directory.
   */
  runtimeDir: string;
  /**
   * How repeat reads reach the page cache. 'bindfs': a bindfs -o auto_cache layer over the engine's
   * mount keeps file pages across opens (rclone drops them at every open), so warm reads run at
   * memory speed; pages are dropped at open when a file's size or mtime changed. 'none': the
   * engine's mount is the dataset mount.
   */
  pageCache: 'bindfs' | 'none';
}

export function clientPaths(layout: ClientLayout, key: string, spec: DatasetSpec): ClientPaths {
  const base = datasetDirectory(layout, key);
  const cacheDir =
    spec.cache.medium === 'MEM'
      ? join(layout.memCacheDir, key)
      : spec.cache.path !== undefined
        ? join(spec.cache.path, key)
        : join(base, 'cache');
  const runtimeDir = join(layout.runtimeDir, key);
  return {
    mountPoint: join(base, 'mount'),
    cacheDir,
    runtimeDir,
    logFile: join(runtimeDir, 'client.log'),
  };
}

const datasetsRoot = (layout: ClientLayout): string => join(layout.stateDir, 'datasets');
const datasetDirectory = (layout: ClientLayout, key: string): string =>
  join(datasetsRoot(layout), key);

/** Whether a cache directory is the dataset's own under the state dir (never a cachePath the administrator made). */
export const isUnderDatasetDirectory = (layout: ClientLayout, cacheDir: string): boolean =>
  dirname(dirname(cacheDir)) === datasetsRoot(layout);

/** Where dataset mounts live (pod binds elsewhere are never treated as orphans). */
export function isDatasetMountPath(layout: ClientLayout, path: string): boolean {
  return (
    path.startsWith(`${datasetsRoot(layout)}/`) &&
    (path.endsWith('/mount') || path.endsWith('/backing') || path.endsWith('/fuse'))
  );
}

/** The file-system type of the page-cache layer's mounts. */
export const LAYER_FS_TYPE = 'fuse.dataset-cache';

/** The device name our clients give their mounts, so mountinfo tells them from anything else. */
export const DEVICE_PREFIX = 'dataset-cache-csi:';
export const deviceName = (key: string): string => `${DEVICE_PREFIX}${key}`;

/** Whether a mount (a dataset mount or a bind of one) was made by one of our clients. */
export const isDatasetCacheMount = (entry: MountEntry): boolean =>
  entry.source.startsWith(DEVICE_PREFIX) || entry.fsType === LAYER_FS_TYPE;

/** Where the engine mounts when a page-cache layer is stacked on top of it. */
export const backingMount = (mountPoint: string): string => join(dirname(mountPoint), 'backing');
/** Where the page-cache layer mounts when the copy overlay is the top of the stack. */
export const fuseMount = (mountPoint: string): string => join(dirname(mountPoint), 'fuse');

/** The file-system type of the copy overlay, the top of a read-only dataset's stack. */
export const OVERLAY_FS_TYPE = 'overlay';
export const overlayName = (key: string): string => `${deviceName(key)}:copy`;

/**
 * The stack's mount points and the dataset directory, once unmounted; empty directories only: an
 * SSD cache kept under the dataset directory stays warm for the next client.
 */
export async function removeMountDirectories(mountPoint: string): Promise<void> {
  for (const dir of [
    mountPoint,
    backingMount(mountPoint),
    fuseMount(mountPoint),
    dirname(mountPoint),
  ]) {
    await rmdir(dir).catch(() => undefined);
  }
}

/**
 * Whether a dataset gets the local-copy layer: read-only (a copy is never written back), served by
 * rclone (whose cache files can be promoted) under the page-cache layer (rclone itself cannot be
 * an overlay layer: it answers the overlay's xattr look-ups with EIO; bindfs --xattr-none can).
 */
export const hasCopyLayer = (spec: DatasetSpec, pageCache: ClientLayout['pageCache']): boolean =>
  spec.localCopy && spec.engine === 'rclone' && pageCache === 'bindfs';
