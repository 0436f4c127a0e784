// Starting a dataset's client stack: engine mount, page-cache layer and copy overlay, each checked, and all of it undone when any step fails.
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { CsiError, failedPrecondition, unavailable } from '../csi/errors.js';
import type { DatasetSpec } from '../dataset/params.js';
import {
  baseEnvironment,
  ControlUnreachableError,
  type ControlEndpoint,
  type Engine,
  type LaunchPlan,
  type RemoteCheckTarget,
} from '../engines/engine.js';
import type { Mounter } from '../kernel/mounter.js';
import type { PathProbe } from '../kernel/path-probe.js';
import type { ProcessRunner } from '../kernel/runner.js';
import { freePort } from '../util/net.js';
import { copyRoot, engineCacheShare, type CacheVolumes } from './cache-volume.js';
import { keepClientCredentials } from './client-credentials.js';
import {
  backingMount,
  clientPaths,
  deviceName,
  fuseMount,
  hasCopyLayer,
  LAYER_FS_TYPE,
  OVERLAY_FS_TYPE,
  overlayName,
  removeMountDirectories,
  type ClientLayout,
} from './client-layout.js';
import { logTail, type ClientProcesses, type Spawned } from './client-processes.js';
import type { ClientRecord, MountIdentity } from './client-record.js';
import { messageOf } from '../util/errors.js';

export interface StackParts {
  engineOf(spec: DatasetSpec): Engine;
  runner: ProcessRunner;
  mounter: Mounter;
  layout: ClientLayout;
  log: Logger;
  processes: ClientProcesses;
  cacheVolumes: CacheVolumes;
  probe: PathProbe;
  readyTimeoutMs: number;
}

/** Starts a dataset's client stack and returns its record; nothing is left behind when it fails. */
export async function startClientStack(
  parts: StackParts,
  key: string,
  spec: DatasetSpec,
  secrets: Record<string, string>,
): Promise<ClientRecord> {
  try {
    return await startOnce(parts, key, spec, secrets);
  } catch (err) {
    // The control port was free when chosen but taken before the client bound it: once more.
    if (!(err instanceof Error) || !/remote control/.test(err.message)) throw err;
    return startOnce(parts, key, spec, secrets);
  }
}

async function newControlEndpoint(engine: Engine): Promise<ControlEndpoint | undefined> {
  if (!engine.hasControl) return undefined;
  return {
    port: await freePort(),
    user: 'dataset-cache-csi',
    password: randomBytes(24).toString('base64url'),
  };
}

/**
 * A start that failed before the remote was checked, with the remote's own answer to one request
 * added: a client may exit or fail its first listing before its log says why (s3fs writes it out
 * only at exit), while the answer names the cause (refused credentials, a refused connection).
 */
async function withRemoteAnswer(
  err: unknown,
  engine: Engine,
  target: RemoteCheckTarget,
): Promise<unknown> {
  if (!(err instanceof CsiError) || !engine.checkRemote) return err;
  try {
    await engine.checkRemote(target);
    return err;
  } catch (answer) {
    // A client without a live control API tells nothing about the remote.
    if (answer instanceof ControlUnreachableError) return err;
    return new CsiError(err.code, `${err.message}; the remote answers: ${messageOf(answer)}`);
  }
}

async function startOnce(
  parts: StackParts,
  key: string,
  spec: DatasetSpec,
  secrets: Record<string, string>,
): Promise<ClientRecord> {
  const { layout, log, processes, cacheVolumes } = parts;
  const started = Date.now();
  const engine = parts.engineOf(spec);
  const paths = clientPaths(layout, key, spec);
  // An absent local directory would be served as an empty dataset: say so instead.
  if (spec.source.kind === 'local' && (await parts.probe.kind(spec.source.path)) !== 'directory') {
    throw failedPrecondition(`source directory ${spec.source.path} does not exist on this node`);
  }
  const layered = layout.pageCache === 'bindfs' && !engine.keepsPageCache;
  const withCopy = layered && hasCopyLayer(spec, layout.pageCache);
  const engineMount = layered ? backingMount(paths.mountPoint) : paths.mountPoint;
  const layerMount = withCopy ? fuseMount(paths.mountPoint) : paths.mountPoint;
  // Planned before anything is created, so that a refused plan leaves nothing behind.
  const control = await newControlEndpoint(engine);
  const planWith = (cacheBytes: number): LaunchPlan =>
    engine.plan(
      {
        ...spec,
        cache: { ...spec.cache, quotaBytes: Math.floor(cacheBytes * engineCacheShare(withCopy)) },
      },
      { ...paths, mountPoint: engineMount },
      secrets,
      deviceName(key),
      control,
    );
  let plan = planWith(spec.cache.quotaBytes);
  await processes.detachAll(paths.mountPoint);
  await processes.detachAll(layerMount);
  await processes.detachAll(engineMount);
  await mkdir(engineMount, { recursive: true });
  await mkdir(layerMount, { recursive: true });
  await mkdir(paths.mountPoint, { recursive: true });
  await mkdir(paths.cacheDir, { recursive: true, mode: 0o700 });
  const cache = await cacheVolumes.ensure(key, spec, paths.cacheDir);
  const newCache = cache.created;
  // The engine must evict before its file system is full, and a disk image's file-system
  // overhead leaves less room than the quota.
  if (cache.capacityBytes < spec.cache.quotaBytes) plan = planWith(cache.capacityBytes);
  await mkdir(paths.runtimeDir, { recursive: true, mode: 0o700 });
  await chmod(paths.runtimeDir, 0o700);
  for (const file of plan.files) await writeFile(file.path, file.content, { mode: 0o600 });
  await keepClientCredentials(paths.runtimeDir, secrets);

  const remote: RemoteCheckTarget = {
    spec,
    ...(control ? { control } : {}),
    credentials: () => Promise.resolve(secrets),
    runtimeDir: paths.runtimeDir,
  };
  const deadline = Date.now() + parts.readyTimeoutMs;
  const spawned: Spawned[] = [];
  let identity: MountIdentity = { fsType: engine.fsType, source: deviceName(key) };
  let overlaid = false;
  try {
    try {
      spawned.push(
        await processes.spawnUntilMounted(
          key,
          plan,
          paths.logFile,
          paths.runtimeDir,
          engineMount,
          identity,
          deadline,
        ),
      );
      // A mount comes up even when the remote is unreachable; one listing of the root tells.
      const listing = await parts.runner.run(
        'find',
        [engineMount, '-mindepth', '1', '-maxdepth', '1', '-print', '-quit'],
        Math.max(1000, deadline - Date.now()),
      );
      if (listing.exitCode !== 0) {
        const why = listing.exitCode === -1 ? 'no answer in time' : listing.stderr.trim();
        throw unavailable(
          `cache client for dataset ${key} mounted but cannot list the remote (${why}): ${await logTail(paths.logFile)}`,
        );
      }
    } catch (err) {
      throw await withRemoteAnswer(err, engine, remote);
    }
    // A listing may be answered before the engine asked the remote (s3fs checks credentials on
    // its first request and exits when they are refused): the engine's own check settles it.
    await engine.checkRemote?.(remote).catch((err: unknown) => {
      throw unavailable(
        `cache client for dataset ${key} mounted but its remote refused a request (${messageOf(err)})`,
      );
    });
    if (layered) {
      identity = { fsType: LAYER_FS_TYPE, source: engineMount };
      const layer: LaunchPlan = {
        command: 'bindfs',
        args: [
          '-f',
          '--multithreaded',
          ...(spec.readOnly ? ['-r'] : []),
          // An overlay layer must answer xattr look-ups; rclone's answers are EIO.
          ...(withCopy ? ['--xattr-none'] : []),
          '-o',
          `auto_cache,allow_other,subtype=${LAYER_FS_TYPE.slice('fuse.'.length)}`,
          engineMount,
          layerMount,
        ],
        env: baseEnvironment(paths.runtimeDir),
        files: [],
      };
      const layerLog = join(paths.runtimeDir, 'page-cache.log');
      spawned.push(
        await processes.spawnUntilMounted(
          key,
          layer,
          layerLog,
          paths.runtimeDir,
          layerMount,
          identity,
          deadline,
        ),
      );
    }
    if (withCopy) {
      // Files of the copy are served by the kernel; the rest falls through to the engine.
      const copy = copyRoot(paths.cacheDir);
      await mkdir(copy, { recursive: true, mode: 0o755 });
      await parts.mounter.mountOverlay([copy, layerMount], paths.mountPoint, overlayName(key));
      overlaid = true;
      identity = { fsType: OVERLAY_FS_TYPE, source: overlayName(key) };
    }
  } catch (err) {
    if (overlaid) await processes.detachAll(paths.mountPoint);
    for (const process of spawned.reverse()) {
      await processes.detachAll(process.mountPoint);
      await processes.terminate(process.pid, process.startTime);
    }
    await rm(paths.runtimeDir, { recursive: true, force: true });
    // A cache made for this start holds nothing yet; one kept from before stays.
    if (newCache) await cacheVolumes.release(spec, paths.cacheDir, true);
    await removeMountDirectories(paths.mountPoint);
    log.warn({ dataset: key, durationMs: Date.now() - started }, 'cache client failed to start');
    throw err;
  }
  for (const process of spawned) process.watch();
  const [client, layer] = spawned as [Spawned, Spawned | undefined];
  const record: ClientRecord = {
    key,
    spec,
    pid: client.pid,
    startTime: client.startTime,
    mountPoint: paths.mountPoint,
    mountIdentity: identity,
    cacheDir: paths.cacheDir,
    runtimeDir: paths.runtimeDir,
    startedAt: new Date().toISOString(),
  };
  if (layer) record.layer = { pid: layer.pid, startTime: layer.startTime, mountPoint: engineMount };
  if (withCopy) record.copy = { fuseMount: layerMount, root: copyRoot(paths.cacheDir) };
  if (control) record.control = control;
  log.info(
    {
      dataset: key,
      pid: client.pid,
      layerPid: layer?.pid,
      engine: spec.engine,
      durationMs: Date.now() - started,
    },
    'cache client started',
  );
  return record;
}
