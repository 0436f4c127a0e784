// Inline (ephemeral) volumes: kubelet only publishes them, so the driver stages each at a path of its own and unstages it with its last target.
import { rmdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { alreadyExists } from '../csi/errors.js';
import type { VolumeParameters } from '../dataset/params.js';
import { pathComponentOf } from '../kernel/path-component.js';
import type { MountManager } from './manager.js';

export class InlineVolumes {
  constructor(
    private readonly manager: MountManager,
    /** Where inline volumes are staged (the driver's own, not kubelet's). */
    private readonly stagingDir: string,
    private readonly log: Logger,
  ) {}

  /** Stages the volume (once) and publishes it; a failed publish leaves nothing staged. */
  async publish(
    volumeId: string,
    params: VolumeParameters,
    targetPath: string,
    readOnly: boolean,
    secrets: Record<string, string>,
  ): Promise<void> {
    const existing = this.manager.volume(volumeId);
    if (existing && !existing.ephemeral) {
      throw alreadyExists(`volume ${volumeId} is staged as a persistent volume on this node`);
    }
    // The id is the caller's: encoded, it cannot leave the directory. A volume staged by an
    // earlier version keeps the path it was staged at.
    const stagingPath = existing?.stagingPath ?? join(this.stagingDir, pathComponentOf(volumeId));
    await this.manager.stage(volumeId, params, stagingPath, secrets, true);
    try {
      await this.manager.publish(volumeId, stagingPath, targetPath, readOnly);
    } catch (err) {
      const volume = this.manager.volume(volumeId);
      if (volume && Object.keys(volume.targets).length === 0) {
        await this.manager
          .unstage(volumeId, stagingPath)
          .catch((cleanup: unknown) =>
            this.log.error(
              { volumeId, err: String(cleanup) },
              'could not unstage a failed inline volume',
            ),
          );
      }
      throw err;
    }
  }

  isInline(volumeId: string): boolean {
    return this.manager.volume(volumeId)?.ephemeral === true;
  }

  /** Unpublishes an inline volume and, with its last target gone, unstages it. */
  async unpublish(volumeId: string, targetPath: string): Promise<void> {
    await this.manager.unpublish(volumeId, targetPath);
    const volume = this.manager.volume(volumeId);
    if (volume?.ephemeral && Object.keys(volume.targets).length === 0) {
      await this.manager.unstage(volumeId, volume.stagingPath);
      await rmdir(volume.stagingPath).catch(() => undefined);
    }
  }
}
