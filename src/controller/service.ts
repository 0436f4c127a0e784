// The CSI Controller service: dataset volumes created and deleted (idempotent across crashes), their capabilities checked and listed.
import { createHash } from 'node:crypto';
import type { ControllerHandlers } from '../csi/generated/csi/v1/Controller.js';
import type { Volume } from '../csi/generated/csi/v1/Volume.js';
import type { VolumeCapability__Output } from '../csi/generated/csi/v1/VolumeCapability.js';
import {
  aborted,
  alreadyExists,
  invalidArgument,
  notFound,
  outOfRange,
  unimplemented,
} from '../csi/errors.js';
import type { ServiceImpl } from '../csi/handlers.js';
import { VolumeLocks } from '../csi/locks.js';
import {
  isReaderOnly,
  requireCapability,
  requireId,
  unsupportedCapability,
} from '../csi/validate.js';
import { ParameterError } from '../dataset/parameter-error.js';
import { parseVolumeParameters, type VolumeParameters } from '../dataset/params.js';
import type { SourceDirectories } from './source-directories.js';
import type { ProvisionedVolume, VolumeStore } from './store.js';

const KUBERNETES_PREFIX = 'csi.storage.k8s.io/';

/** Deterministic, so a CreateVolume retried after a crash finds the volume it made. */
export const volumeIdFor = (name: string): string =>
  `dcv-${createHash('sha256').update(name).digest('hex').slice(0, 40)}`;

function parse(params: Record<string, string>): VolumeParameters {
  try {
    return parseVolumeParameters(params);
  } catch (err) {
    if (err instanceof ParameterError) throw invalidArgument(err.message);
    throw err;
  }
}

function dataParameters(params: Record<string, string>): Record<string, string> {
  return Object.fromEntries(
    Object.entries(params)
      .filter(([key]) => !key.startsWith(KUBERNETES_PREFIX))
      .sort(([a], [b]) => (a < b ? -1 : 1)),
  );
}

const sameMap = (a: Record<string, string>, b: Record<string, string>): boolean =>
  JSON.stringify(dataParameters(a)) === JSON.stringify(dataParameters(b));

function writerOnReadOnly(
  params: VolumeParameters,
  capability: VolumeCapability__Output,
): string | undefined {
  return params.dataset.readOnly && !isReaderOnly(capability)
    ? `the dataset is read-only; access mode ${String(capability.access_mode?.mode)} needs writes (use a *_READER_ONLY mode)`
    : undefined;
}

function toVolume(volume: ProvisionedVolume): Volume {
  return {
    volume_id: volume.volumeId,
    capacity_bytes: volume.capacityBytes,
    volume_context: volume.context,
  };
}

interface PageToken {
  after: string;
}

function decodeToken(token: string): PageToken | undefined {
  if (token === '') return undefined;
  try {
    const decoded = JSON.parse(Buffer.from(token, 'base64url').toString('utf8')) as unknown;
    if (
      typeof decoded === 'object' &&
      decoded !== null &&
      typeof (decoded as PageToken).after === 'string'
    ) {
      return decoded as PageToken;
    }
  } catch {
    // fall through
  }
  throw aborted(`starting_token "${token}" is not a token returned by ListVolumes`);
}

const encodeToken = (token: PageToken): string =>
  Buffer.from(JSON.stringify(token)).toString('base64url');

/** A volume's own directory only makes sense where the volume can write into it. */
function subdirectoryProblem(params: VolumeParameters): string | undefined {
  if (params.layout !== 'subdir') return undefined;
  if (params.dataset.readOnly) {
    return `layout subdir needs a writable dataset; ${params.dataset.source.kind === 'http' ? 'http:// sources are read-only' : 'this one has readOnly=true'}`;
  }
  if (params.subPath !== '') return 'layout subdir and subPath exclude each other';
  return undefined;
}

export interface ControllerServiceOptions {
  store: VolumeStore;
  directories: SourceDirectories;
  locks?: VolumeLocks;
}

export function createControllerService(
  options: ControllerServiceOptions,
): ServiceImpl<ControllerHandlers> {
  const { store, directories } = options;
  const locks = options.locks ?? new VolumeLocks();
  const notSupported = (rpc: string) => async (): Promise<never> => {
    throw unimplemented(`${rpc} is not supported by this driver`);
  };

  return {
    async CreateVolume(req) {
      const name = requireId(req.name, 'name');
      if (req.volume_capabilities.length === 0)
        throw invalidArgument('volume_capabilities is required');
      const params = parse(req.parameters);
      const layoutProblem = subdirectoryProblem(params);
      if (layoutProblem) throw invalidArgument(layoutProblem);
      req.volume_capabilities.forEach((capability, i) => {
        requireCapability(capability, `volume_capabilities[${i}]`);
        const problem = writerOnReadOnly(params, capability);
        if (problem) throw invalidArgument(`volume_capabilities[${i}]: ${problem}`);
      });
      if (req.volume_content_source) {
        throw invalidArgument(
          'volume_content_source is not supported: volumes cannot be cloned or restored from snapshots',
        );
      }
      const required = BigInt(req.capacity_range?.required_bytes ?? '0');
      const limit = BigInt(req.capacity_range?.limit_bytes ?? '0');
      if (required < 0n || limit < 0n) throw outOfRange('capacity_range must not be negative');
      if (limit > 0n && required > limit)
        throw outOfRange('capacity_range.required_bytes exceeds limit_bytes');
      const volumeId = volumeIdFor(name);

      return locks.runExclusive(volumeId, async () => {
        const existing = store.get(volumeId);
        if (existing) {
          if (
            existing.requiredBytes !== String(required) ||
            existing.limitBytes !== String(limit)
          ) {
            throw alreadyExists(
              `volume "${name}" already exists with capacity range ${existing.requiredBytes}..${existing.limitBytes}`,
            );
          }
          if (!sameMap(existing.parameters, req.parameters)) {
            throw alreadyExists(`volume "${name}" already exists with other parameters`);
          }
          return { volume: toVolume(existing) };
        }
        const subPath = params.layout === 'subdir' ? volumeId : params.subPath;
        if (params.layout === 'subdir') {
          await directories.create(params.dataset.source, subPath, req.secrets);
        }
        const context = dataParameters(req.parameters);
        delete context.layout;
        delete context.onDelete;
        if (subPath !== '') context.subPath = subPath;
        const volume: ProvisionedVolume = {
          volumeId,
          name,
          requiredBytes: String(required),
          limitBytes: String(limit),
          // A dataset volume has no size of its own; report what was asked so quota tools see it.
          capacityBytes: String(required > 0n ? required : limit),
          parameters: dataParameters(req.parameters),
          context,
          createdAt: new Date().toISOString(),
        };
        await store.put(volume);
        return { volume: toVolume(volume) };
      });
    },

    async DeleteVolume(req) {
      const volumeId = requireId(req.volume_id, 'volume_id');
      await locks.runExclusive(volumeId, async () => {
        const volume = store.get(volumeId);
        if (!volume) return;
        const params = parse(volume.parameters);
        if (params.layout === 'subdir' && params.onDelete === 'delete') {
          await directories.remove(
            params.dataset.source,
            volume.context.subPath ?? volumeId,
            req.secrets,
          );
        }
        await store.delete(volumeId);
      });
      return {};
    },

    async ValidateVolumeCapabilities(req) {
      const volumeId = requireId(req.volume_id, 'volume_id');
      if (req.volume_capabilities.length === 0)
        throw invalidArgument('volume_capabilities is required');
      const volume = store.get(volumeId);
      if (!volume) throw notFound(`volume ${volumeId} does not exist`);
      const params = parse(volume.parameters);
      for (const capability of req.volume_capabilities) {
        const problem = unsupportedCapability(capability) ?? writerOnReadOnly(params, capability);
        if (problem) return { message: problem };
      }
      if (Object.keys(req.parameters).length > 0 && !sameMap(req.parameters, volume.parameters)) {
        return { message: 'parameters differ from those the volume was created with' };
      }
      return {
        confirmed: {
          volume_context: req.volume_context,
          volume_capabilities: req.volume_capabilities,
          parameters: req.parameters,
        },
      };
    },

    async ListVolumes(req) {
      const token = decodeToken(req.starting_token);
      if (req.max_entries < 0) throw invalidArgument('max_entries must not be negative');
      const all = store.list();
      const start = token ? all.findIndex((volume) => volume.volumeId > token.after) : 0;
      const rest = start < 0 ? [] : all.slice(start);
      const page = req.max_entries > 0 ? rest.slice(0, req.max_entries) : rest;
      const last = page[page.length - 1];
      return {
        entries: page.map((volume) => ({ volume: toVolume(volume) })),
        next_token: last && page.length < rest.length ? encodeToken({ after: last.volumeId }) : '',
      };
    },

    async ControllerGetCapabilities() {
      return {
        capabilities: [
          { rpc: { type: 'CREATE_DELETE_VOLUME' } },
          { rpc: { type: 'LIST_VOLUMES' } },
        ],
      };
    },

    GetCapacity: notSupported('GetCapacity'),
    ControllerPublishVolume: notSupported('ControllerPublishVolume'),
    ControllerUnpublishVolume: notSupported('ControllerUnpublishVolume'),
    ControllerGetVolume: notSupported('ControllerGetVolume'),
    ControllerExpandVolume: notSupported('ControllerExpandVolume'),
    ControllerModifyVolume: notSupported('ControllerModifyVolume'),
    CreateSnapshot: notSupported('CreateSnapshot'),
    DeleteSnapshot: notSupported('DeleteSnapshot'),
    ListSnapshots: notSupported('ListSnapshots'),
    GetSnapshot: notSupported('GetSnapshot'),
  };
}
