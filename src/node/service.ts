// The CSI Node service: each call's ids, paths and parameters checked, then volumes staged, published and reported through the mount manager under per-volume locks.
import type { NodeHandlers } from '../csi/generated/csi/v1/Node.js';
import { invalidArgument, unimplemented } from '../csi/errors.js';
import type { ServiceImpl } from '../csi/handlers.js';
import type { VolumeLocks } from '../csi/locks.js';
import { isReaderOnly, requireCapability, requireId, requirePath } from '../csi/validate.js';
import type { CredentialIdentity } from '../dataset/identity.js';
import { ParameterError } from '../dataset/parameter-error.js';
import {
  EPHEMERAL_CONTEXT_KEY,
  POD_NAMESPACE_KEY,
  parseInlineVolumeParameters,
  parseVolumeParameters,
  type VolumeParameters,
} from '../dataset/params.js';
import type { InlineVolumes } from '../mount/inline-volumes.js';
import type { MountManager } from '../mount/manager.js';
import type { FsUsage } from '../kernel/path-probe.js';

export interface NodeServiceOptions {
  nodeId: string;
  manager: MountManager;
  inline: InlineVolumes;
  locks: VolumeLocks;
  /** When set, staging and target paths must lie below it. */
  kubeletDir?: string;
  ephemeralCacheQuotaLimitBytes: number;
  identity: CredentialIdentity;
}

function parameters(parse: () => VolumeParameters): VolumeParameters {
  try {
    return parse();
  } catch (err) {
    if (err instanceof ParameterError) throw invalidArgument(`volume_context: ${err.message}`);
    throw err;
  }
}

/**
 * rclone answers statfs for remotes that cannot count files with 1e9 files, none free: reported
 * as is, every such volume would look out of inodes to alerting rules.
 */
const inodesKnown = (fs: FsUsage): boolean => !(fs.totalInodes === 1e9 && fs.freeInodes === 0);

export function createNodeService(options: NodeServiceOptions): ServiceImpl<NodeHandlers> {
  const { manager, inline, nodeId, locks, kubeletDir } = options;
  /** A pod spec must not get the driver to mount over arbitrary host paths. */
  const nodePath = (value: string, field: string): string => {
    const path = requirePath(value, field);
    if (kubeletDir !== undefined && !path.startsWith(`${kubeletDir.replace(/\/+$/, '')}/`)) {
      throw invalidArgument(`${field} ${path} is outside the kubelet directory ${kubeletDir}`);
    }
    return path;
  };

  return {
    async NodeStageVolume(req) {
      const volumeId = requireId(req.volume_id, 'volume_id');
      const stagingPath = nodePath(req.staging_target_path, 'staging_target_path');
      requireCapability(req.volume_capability, 'volume_capability');
      const params = parameters(() => parseVolumeParameters(req.volume_context));
      params.dataset.tenant = options.identity.ofSecrets(req.secrets);
      await locks.runExclusive(volumeId, () =>
        manager.stage(volumeId, params, stagingPath, req.secrets),
      );
      return {};
    },

    async NodeUnstageVolume(req) {
      const volumeId = requireId(req.volume_id, 'volume_id');
      const stagingPath = nodePath(req.staging_target_path, 'staging_target_path');
      await locks.runExclusive(volumeId, () => manager.unstage(volumeId, stagingPath));
      return {};
    },

    async NodePublishVolume(req) {
      const volumeId = requireId(req.volume_id, 'volume_id');
      const targetPath = nodePath(req.target_path, 'target_path');
      const capability = requireCapability(req.volume_capability, 'volume_capability');
      const readOnly = req.readonly || isReaderOnly(capability);
      if (req.volume_context[EPHEMERAL_CONTEXT_KEY] === 'true') {
        const params = parameters(() =>
          parseInlineVolumeParameters(req.volume_context, options.ephemeralCacheQuotaLimitBytes),
        );
        params.dataset.tenant = options.identity.ofInlineVolume(
          req.volume_context[POD_NAMESPACE_KEY] ?? '',
          req.secrets,
        );
        await locks.runExclusive(volumeId, () =>
          inline.publish(volumeId, params, targetPath, readOnly, req.secrets),
        );
        return {};
      }
      const stagingPath = nodePath(req.staging_target_path, 'staging_target_path');
      await locks.runForTarget(volumeId, targetPath, () =>
        manager.publish(volumeId, stagingPath, targetPath, readOnly),
      );
      return {};
    },

    async NodeUnpublishVolume(req) {
      const volumeId = requireId(req.volume_id, 'volume_id');
      const targetPath = nodePath(req.target_path, 'target_path');
      if (inline.isInline(volumeId)) {
        await locks.runExclusive(volumeId, () => inline.unpublish(volumeId, targetPath));
      } else {
        await locks.runForTarget(volumeId, targetPath, () =>
          manager.unpublish(volumeId, targetPath),
        );
      }
      return {};
    },

    async NodeGetVolumeStats(req) {
      const volumeId = requireId(req.volume_id, 'volume_id');
      if (req.volume_path === '') throw invalidArgument('volume_path is required');
      const volume = await manager.locate(volumeId, req.volume_path);
      const health = await manager.health(volume, req.volume_path);
      if (health.abnormal) return { usage: [], volume_condition: health };
      const fs = await manager.usage(req.volume_path);
      if (!fs) {
        // The client may have died between the two looks: its condition says more than a timeout.
        const again = await manager.health(volume, req.volume_path);
        if (again.abnormal) return { usage: [], volume_condition: again };
        const message = `${req.volume_path} did not answer a file-system query in time`;
        return { usage: [], volume_condition: { abnormal: true, message } };
      }
      const count = (n: number) => String(Math.max(0, n));
      return {
        usage: [
          {
            unit: 'BYTES',
            total: count(fs.totalBytes),
            available: count(fs.availableBytes),
            used: count(fs.totalBytes - fs.freeBytes),
          },
          ...(inodesKnown(fs)
            ? [
                {
                  unit: 'INODES' as const,
                  total: count(fs.totalInodes),
                  available: count(fs.freeInodes),
                  used: count(fs.totalInodes - fs.freeInodes),
                },
              ]
            : []),
        ],
        volume_condition: health,
      };
    },

    async NodeExpandVolume() {
      throw unimplemented(
        'NodeExpandVolume is not supported: dataset volumes have no size of their own',
      );
    },

    async NodeGetCapabilities() {
      const capability = (
        type: 'STAGE_UNSTAGE_VOLUME' | 'GET_VOLUME_STATS' | 'VOLUME_CONDITION',
      ) => ({ rpc: { type } });
      return {
        capabilities: [
          capability('STAGE_UNSTAGE_VOLUME'),
          capability('GET_VOLUME_STATS'),
          capability('VOLUME_CONDITION'),
        ],
      };
    },

    async NodeGetInfo() {
      return { node_id: nodeId, max_volumes_per_node: '0' };
    },
  };
}
