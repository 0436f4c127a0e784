import { statfs } from 'node:fs/promises';
import type { NodeHandlers } from '../csi/generated/csi/v1/Node.js';
import type { VolumeUsage } from '../csi/generated/csi/v1/VolumeUsage.js';
import { invalidArgument, unimplemented } from '../csi/errors.js';
import type { ServiceImpl } from '../csi/handlers.js';
import { VolumeLocks } from '../csi/locks.js';
import { isReaderOnly, requireCapability, requireId, requirePath } from '../csi/validate.js';
import { ParameterError, parseVolumeParameters, type VolumeParameters } from '../dataset/params.js';
import type { MountManager } from '../mount/manager.js';

export interface NodeServiceOptions {
  nodeId: string;
  manager: MountManager;
  locks?: VolumeLocks;
  /** statfs of a mount that stopped answering must not hold kubelet's call. */
  statsTimeoutMs?: number;
}

function parameters(context: Record<string, string>): VolumeParameters {
  try {
    return parseVolumeParameters(context);
  } catch (err) {
    if (err instanceof ParameterError) throw invalidArgument(`volume_context: ${err.message}`);
    throw err;
  }
}

async function usage(path: string, timeoutMs: number): Promise<VolumeUsage[] | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<undefined>((resolve) => {
    timer = setTimeout(() => resolve(undefined), timeoutMs);
  });
  try {
    const fs = await Promise.race([statfs(path), timeout]);
    if (!fs) return undefined;
    const total = fs.blocks * fs.bsize;
    const available = fs.bavail * fs.bsize;
    return [
      {
        unit: 'BYTES',
        total: String(total),
        available: String(available),
        used: String(Math.max(0, total - fs.bfree * fs.bsize)),
      },
      {
        unit: 'INODES',
        total: String(fs.files),
        available: String(fs.ffree),
        used: String(Math.max(0, fs.files - fs.ffree)),
      },
    ];
  } finally {
    clearTimeout(timer);
  }
}

export function createNodeService(options: NodeServiceOptions): ServiceImpl<NodeHandlers> {
  const { manager, nodeId } = options;
  const locks = options.locks ?? new VolumeLocks();
  const statsTimeoutMs = options.statsTimeoutMs ?? 2000;

  return {
    async NodeStageVolume(req) {
      const volumeId = requireId(req.volume_id, 'volume_id');
      const stagingPath = requirePath(req.staging_target_path, 'staging_target_path');
      requireCapability(req.volume_capability, 'volume_capability');
      const params = parameters(req.volume_context);
      await locks.run(volumeId, () => manager.stage(volumeId, params, stagingPath, req.secrets));
      return {};
    },

    async NodeUnstageVolume(req) {
      const volumeId = requireId(req.volume_id, 'volume_id');
      const stagingPath = requirePath(req.staging_target_path, 'staging_target_path');
      await locks.run(volumeId, () => manager.unstage(volumeId, stagingPath));
      return {};
    },

    async NodePublishVolume(req) {
      const volumeId = requireId(req.volume_id, 'volume_id');
      const targetPath = requirePath(req.target_path, 'target_path');
      const capability = requireCapability(req.volume_capability, 'volume_capability');
      const stagingPath = requirePath(req.staging_target_path, 'staging_target_path');
      const readOnly = req.readonly || isReaderOnly(capability);
      await locks.run(volumeId, () => manager.publish(volumeId, stagingPath, targetPath, readOnly));
      return {};
    },

    async NodeUnpublishVolume(req) {
      const volumeId = requireId(req.volume_id, 'volume_id');
      const targetPath = requirePath(req.target_path, 'target_path');
      await locks.run(volumeId, () => manager.unpublish(volumeId, targetPath));
      return {};
    },

    async NodeGetVolumeStats(req) {
      const volumeId = requireId(req.volume_id, 'volume_id');
      if (req.volume_path === '') throw invalidArgument('volume_path is required');
      const volume = await manager.locate(volumeId, req.volume_path);
      const health = await manager.health(volume, req.volume_path);
      const measured = health.abnormal ? undefined : await usage(req.volume_path, statsTimeoutMs);
      if (!health.abnormal && !measured) {
        return {
          usage: [],
          volume_condition: {
            abnormal: true,
            message: `${req.volume_path} did not answer statfs within ${statsTimeoutMs} ms`,
          },
        };
      }
      return { usage: measured ?? [], volume_condition: health };
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
