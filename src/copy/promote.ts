// Promotion: files the engine fetched whole on demand enter the local copy by a hard link, never by a second download.
import type { RcloneCacheIndex } from '../engines/rclone-cache.js';
import type { HeldFile } from '../tier/cluster-tier.js';
import type { LocalCopy } from './local-copy.js';

/** Links every file that became complete in the engine's cache into the copy; returns them. */
export async function promoteComplete(
  copy: LocalCopy,
  index: RcloneCacheIndex,
): Promise<HeldFile[]> {
  const promoted: HeldFile[] = [];
  await index.scan(async (file) => {
    const refused = await copy.installLinked(
      file.dataPath,
      file.relative,
      { size: file.size, mtimeMs: file.mtimeMs },
      () => index.isComplete(file.relative, file.size),
    );
    if (refused === undefined) promoted.push({ relative: file.relative, size: file.size });
    // No room or a cache file being replaced: offered again at a later scan.
    return refused === undefined || refused === 'present' || refused === 'unsafe-name';
  });
  return promoted;
}
