// Each dataset's cache file system, exactly its quota: a tmpfs for MEM, a loop-mounted ext4 image with its blocks reserved for SSD/HDD; kept or discarded when its client stops.
import { chmod, rm, stat, statfs, truncate, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { failedPrecondition, resourceExhausted } from '../csi/errors.js';
import type { CacheMedium, DatasetSpec } from '../dataset/params.js';
import type { Mounter } from '../kernel/mounter.js';
import type { ProcessRunner } from '../kernel/runner.js';

/** The tmpfs of a MEM cache is named after its dataset, so mountinfo tells it from anything else. */
export const CACHE_TMPFS_PREFIX = 'dataset-cache-csi-cache:';

/** The image file holding an SSD/HDD cache's file system, next to the cache directory. */
export const cacheImage = (cacheDir: string): string => `${cacheDir}.img`;

const IMAGE_FS_TYPE = 'ext4';

/** The local copy, inside the cache file system: the overlay's upper lower layer. */
export const copyRoot = (cacheDir: string): string => join(cacheDir, 'copy');

/**
 * The share of a dataset's cache file system left to the engine for files it is fetching or holds
 * only partly (the engine's own cache limit); the local copy may fill the rest.
 */
export const ENGINE_SHARE = 0.2;

/** The share of the cache file system the engine's own limit is taken from (a copy keeps the rest). */
export const engineCacheShare = (withCopy: boolean): number => (withCopy ? ENGINE_SHARE : 1);

export interface CacheVolume {
  /** Made empty now (nothing of an earlier client in it). */
  created: boolean;
  /** Room for cached data: the quota, less a disk image's file-system overhead. */
  capacityBytes: number;
}

/**
 * Gives each dataset's cache a file system of exactly its quota, so the kernel keeps the promise
 * (rclone's own limit is only checked every poll interval): MEM caches get a tmpfs, SSD/HDD caches
 * a loop-mounted ext4 image whose blocks are reserved up front, so a node that cannot hold the
 * quota refuses the stage instead of failing reads later.
 */
export class CacheVolumes {
  constructor(
    private readonly mounter: Mounter,
    private readonly runner: ProcessRunner,
    private readonly log: Logger,
  ) {}

  /**
   * Mounts the cache file system at cacheDir unless it is there already (a crash keeps it, with
   * its warm data and any unsent writes).
   */
  async ensure(key: string, spec: DatasetSpec, cacheDir: string): Promise<CacheVolume> {
    const created = await this.mount(key, spec, cacheDir);
    // A local file system (tmpfs or ext4), never a FUSE path: safe to ask from the driver itself.
    const fs = await statfs(cacheDir);
    return { created, capacityBytes: fs.blocks * fs.bsize };
  }

  /** True when the cache file system was made empty by this call. */
  private async mount(key: string, spec: DatasetSpec, cacheDir: string): Promise<boolean> {
    const mount = (await this.mounter.table()).at(cacheDir);
    if (spec.cache.medium === 'MEM') {
      if (mount?.fsType === 'tmpfs' && mount.source === `${CACHE_TMPFS_PREFIX}${key}`) return false;
      await this.mounter.mountTmpfs(cacheDir, spec.cache.quotaBytes, `${CACHE_TMPFS_PREFIX}${key}`);
      return true;
    }
    if (mount?.fsType === IMAGE_FS_TYPE) return false;
    const image = cacheImage(cacheDir);
    const created = await this.createImageIfMissing(image, spec.cache.quotaBytes, key);
    try {
      await this.mounter.mountImage(image, cacheDir, IMAGE_FS_TYPE);
    } catch (err) {
      if (created) throw err;
      // An image that no longer mounts holds nothing we can use: start it over.
      this.log.warn({ dataset: key, image, err: String(err) }, 'cache image unusable; recreating');
      await unlink(image);
      await this.createImageIfMissing(image, spec.cache.quotaBytes, key);
      await this.mounter.mountImage(image, cacheDir, IMAGE_FS_TYPE);
    }
    await chmod(cacheDir, 0o700);
    if (created) {
      const stats = await stat(image);
      this.log.info({ dataset: key, image, bytes: stats.size }, 'cache image created');
    }
    return created;
  }

  /**
   * Called once the client is gone. A RAM cache is dropped unless it may hold unsent writes (the
   * next client of the dataset sends them); a disk image is unmounted and kept, warm for the
   * dataset's next client on this node and holding any unsent writes. True when it was kept.
   */
  async release(spec: DatasetSpec, cacheDir: string, flushed: boolean): Promise<boolean> {
    if (spec.cache.medium === 'MEM' && !flushed) return true;
    await this.unmount(cacheDir);
    if (spec.cache.medium === 'MEM') await rm(cacheDir, { recursive: true, force: true });
    return spec.cache.medium !== 'MEM';
  }

  /** Removes a kept cache for good: its tmpfs or its image, and the directory it was mounted on. */
  async discard(medium: CacheMedium, cacheDir: string): Promise<void> {
    await this.unmount(cacheDir);
    if (medium !== 'MEM') await rm(cacheImage(cacheDir), { force: true });
    await rm(cacheDir, { recursive: true, force: true });
  }

  private async unmount(cacheDir: string): Promise<void> {
    if ((await this.mounter.table()).at(cacheDir)) {
      await this.mounter
        .unmount(cacheDir)
        .catch(() => this.mounter.unmount(cacheDir, { lazy: true }));
    }
  }

  private async createImageIfMissing(image: string, bytes: number, key: string): Promise<boolean> {
    const exists = await stat(image).then(
      () => true,
      () => false,
    );
    if (exists) return false;
    await writeFile(image, '', { mode: 0o600, flag: 'wx' });
    await truncate(image, bytes);
    try {
      // Lazy init keeps mkfs fast for big quotas.
      const format = await this.runner.run(
        'mkfs.ext4',
        ['-q', '-F', '-m', '0', '-E', 'lazy_itable_init=1,lazy_journal_init=1', '--', image],
        120_000,
      );
      if (format.exitCode !== 0) {
        throw failedPrecondition(
          `could not format the cache image ${image}: ${format.stderr.trim()}`,
        );
      }
      // Every block reserved now (mkfs leaves holes): the node's disk cannot run out under the
      // cache later, and a disk that cannot hold the quota is refused at once.
      const reserve = await this.runner.run('fallocate', ['-l', String(bytes), '--', image]);
      if (reserve.exitCode !== 0) {
        if (/No space left/i.test(reserve.stderr)) {
          throw resourceExhausted(
            `the cache path of dataset ${key} cannot hold cacheQuota ${bytes} bytes; free disk space or lower cacheQuota`,
          );
        }
        throw failedPrecondition(
          `could not reserve the cache image ${image}: ${reserve.stderr.trim()}`,
        );
      }
    } catch (err) {
      await unlink(image).catch(() => undefined);
      throw err;
    }
    return true;
  }
}
