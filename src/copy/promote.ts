// Promotion: files the engine fetched whole on demand enter the local copy by a hard link, never by a second download.
import type { RcloneCacheIndex, ScanBounds } from '../engines/rclone-cache.js';
import type { HeldFile } from '../tier/cluster-tier.js';
import type { LocalCopy } from './local-copy.js';

/**
 * Links files that became complete in the engine's cache into the copy (within the bounds: the
 * rest at the next call); returns them, and whether the engine's cache was quiet (see
 * RcloneCacheIndex.scan).
 */
export async function promoteComplete(
  copy: LocalCopy,
  index: RcloneCacheIndex,
  bounds?: ScanBounds,
): Promise<{ promoted: HeldFile[]; quiet: boolean }> {
  const promoted: HeldFile[] = [];
  const quiet = await index.scan(async (file) => {
    const refused = await copy.installLinked(
      file.dataPath,
      file.relative,
      { size: file.size, mtimeMs: file.mtimeMs },
      () => index.isComplete(file.relative, file.size),
    );
    if (refused === undefined) promoted.push({ relative: file.relative, size: file.size });
    // No room or a cache file being replaced: offered again at a later scan.
    return refused === undefined || refused === 'present' || refused === 'unsafe-name';
  }, bounds);
  return { promoted, quiet };
}
