// The rclone engine: a cache client per dataset as `rclone mount` with its VFS cache, its remote defined in the environment, checked and asked over its control API.
import { join } from 'node:path';
import type { DatasetSpec } from '../dataset/params.js';
import type { Source } from '../dataset/source.js';
import {
  baseEnvironment,
  ControlUnreachableError,
  ENGINE_CACHE_LIMIT_FRACTION,
  type ClientPaths,
  type ControlEndpoint,
  type Engine,
  type EngineStats,
  type LaunchPlan,
  type RemoteCheckTarget,
  type RemoteProbe,
} from './engine.js';
import { rcCall, type CoreStats, type VfsStats } from './rclone-rc.js';
import { rcloneObscure } from './rclone-obscure.js';

/** A name no dataset holds: asking the remote for it proves the remote answers, at one request. */
export const PROBE_NAME = '.dataset-cache-csi-probe';

/** How long the client may take to answer a call that stays local to it. */
const CLIENT_ANSWER_MS = 2_000;
/** How long one request to the remote may take before the remote counts as not answering. */
const REMOTE_ANSWER_MS = 5_000;

/** The remote is defined through RCLONE_CONFIG_SRC_* variables: no URL or credential in argv. */
export const REMOTE = 'SRC';

/**
 * The CA certificate (PEM) a remote's TLS certificate is checked against, when it is not signed by
 * a public one: written into the client's private runtime directory.
 */
export const CA_FILE = 'ca.pem';

/**
 * rclone's view of a source: environment defining remote SRC, and the path on it. With a runtime
 * directory, a `caCert` secret is trusted through the CA file there (see CA_FILE).
 */
export function remoteConfig(
  source: Source,
  secrets: Record<string, string>,
  runtimeDir?: string,
): { env: Record<string, string>; path: string } {
  const env: Record<string, string> = {};
  if (secrets.caCert && runtimeDir !== undefined) env.RCLONE_CA_CERT = join(runtimeDir, CA_FILE);
  const set = (key: string, value: string | undefined): void => {
    if (value !== undefined && value !== '') env[`RCLONE_CONFIG_${REMOTE}_${key}`] = value;
  };
  const httpUrl = (): string =>
    `${source.tls ? 'https' : 'http'}://${source.authority}${source.path}`;
  switch (source.kind) {
    case 'local':
      set('TYPE', 'local');
      return { env, path: source.path };
    case 'webdav':
      set('TYPE', 'webdav');
      set('URL', httpUrl());
      set('VENDOR', 'other');
      set('USER', secrets.user ?? source.user);
      if (secrets.password) set('PASS', rcloneObscure(secrets.password));
      return { env, path: '' };
    case 'http':
      set('TYPE', 'http');
      set('URL', httpUrl());
      return { env, path: '' };
    case 'sftp': {
      const [host, port] = source.authority.split(':');
      set('TYPE', 'sftp');
      set('HOST', host);
      set('PORT', port);
      set('USER', secrets.user ?? source.user);
      if (secrets.password) set('PASS', rcloneObscure(secrets.password));
      set('KEY_PEM', secrets.privateKey?.replace(/\r?\n/g, '\\n'));
      return { env, path: source.path };
    }
    case 's3':
      set('TYPE', 's3');
      set('PROVIDER', 'Other');
      set('ACCESS_KEY_ID', secrets.accessKeyId);
      set('SECRET_ACCESS_KEY', secrets.secretAccessKey);
      set('ENDPOINT', secrets.endpoint);
      set('REGION', secrets.region);
      set('FORCE_PATH_STYLE', 'true');
      return { env, path: `${source.authority}${source.path === '/' ? '' : source.path}` };
  }
}

const octal = (mode: number): string => `0${mode.toString(8).padStart(3, '0')}`;

export class RcloneEngine implements Engine {
  readonly name = 'rclone' as const;
  readonly fsType = 'fuse.rclone';
  readonly hasControl = true;
  readonly keepsPageCache = false;
  readonly opensCachedFilesOffline = true;

  constructor(
    private readonly binary = 'rclone',
    /** Asks the remote directly when the client's own request hangs, for the remote's answer. */
    private readonly probe?: RemoteProbe,
  ) {}

  plan(
    spec: DatasetSpec,
    paths: ClientPaths,
    secrets: Record<string, string>,
    deviceName: string,
    control?: ControlEndpoint,
  ): LaunchPlan {
    const remote = remoteConfig(spec.source, secrets, paths.runtimeDir);
    const configFile = join(paths.runtimeDir, 'rclone.conf');
    const args = [
      'mount',
      `${REMOTE}:${remote.path}`,
      paths.mountPoint,
      '--config',
      configFile,
      '--devname',
      deviceName,
      '--cache-dir',
      paths.cacheDir,
      '--vfs-cache-mode',
      'full',
      // Below the quota, so rclone evicts before the quota's hard edge (a MEM cache's tmpfs) is hit.
      '--vfs-cache-max-size',
      `${Math.floor(spec.cache.quotaBytes * ENGINE_CACHE_LIMIT_FRACTION)}B`,
      '--vfs-cache-poll-interval',
      '10s',
      // Datasets are read for days; the quota, not the age, decides what leaves the cache.
      '--vfs-cache-max-age',
      '8760h',
      '--allow-other',
      '--log-file',
      paths.logFile,
      '--log-level',
      'NOTICE',
    ];
    if (spec.readOnly) args.push('--read-only');
    const owner = spec.ownership;
    if (owner?.uid !== undefined) args.push('--uid', String(owner.uid));
    if (owner?.gid !== undefined) args.push('--gid', String(owner.gid));
    if (owner?.fileMode !== undefined || owner?.dirMode !== undefined) {
      // Exactly the modes asked for: rclone would mask them with the process umask otherwise.
      args.push('--umask', '0');
      args.push('--file-perms', octal(owner.fileMode ?? 0o644));
      args.push('--dir-perms', octal(owner.dirMode ?? 0o755));
    }
    const controlEnv: Record<string, string> = {};
    if (control) {
      // Credentials through the environment (RCLONE_RC_*), never argv.
      args.push('--rc', '--rc-addr', `127.0.0.1:${control.port}`);
      controlEnv.RCLONE_RC_USER = control.user;
      controlEnv.RCLONE_RC_PASS = control.password;
    }
    if (spec.bandwidthLimit !== undefined)
      args.push('--bwlimit', `${Math.max(1, Math.floor(spec.bandwidthLimit / 1024))}K`);
    return {
      command: this.binary,
      args,
      env: {
        ...baseEnvironment(paths.runtimeDir),
        RCLONE_CONFIG: configFile,
        // Warm reads are bound by Go's GC (every kernel read allocates 128 KiB); GOGC=400 roughly
        // doubles them at ~100 MB RSS, and the memory limit keeps a burst from growing unbounded.
        GOGC: '400',
        GOMEMLIMIT: '512MiB',
        ...remote.env,
        ...controlEnv,
      },
      files: [
        { path: configFile, content: '' },
        ...(secrets.caCert
          ? [{ path: join(paths.runtimeDir, CA_FILE), content: secrets.caCert }]
          : []),
      ],
    };
  }

  async stats(control: ControlEndpoint): Promise<EngineStats> {
    const [core, vfs] = await Promise.all([
      rcCall<CoreStats>(control, 'core/stats'),
      rcCall<VfsStats>(control, 'vfs/stats'),
    ]);
    const cache = vfs.diskCache;
    return {
      remoteBytes: core.bytes,
      cachedFiles: cache?.files,
      pendingUploads: cache ? cache.uploadsInProgress + cache.uploadsQueued : undefined,
      erroredFiles: cache?.erroredFiles,
    };
  }

  async checkRemote(client: RemoteCheckTarget): Promise<void> {
    const { control, spec } = client;
    if (!control) throw new Error('the client has no control API to ask');
    // The client first, with a call that never reaches the remote: only a client that does not
    // answer this is silent. A remote that does not answer must not be blamed on the client.
    await rcCall(control, 'rc/noop', {}, CLIENT_ANSWER_MS);
    // One HEAD-like request on the client's own remote (defined in its environment): a name that
    // does not exist answers "not found", which proves the remote reachable and the credentials
    // good. A stat of the root would list it, which is costly for big flat buckets. One low-level
    // try: rclone would otherwise retry a refused connection with back-off for minutes.
    const { path } = remoteConfig(spec.source, {});
    try {
      await rcCall(
        control,
        'operations/stat',
        {
          fs: `${REMOTE}:${path}`,
          remote: PROBE_NAME,
          opt: { filesOnly: true },
          _config: { LowLevelRetries: 1 },
        },
        REMOTE_ANSWER_MS,
      );
    } catch (err) {
      if (!(err instanceof ControlUnreachableError)) throw err;
      // The client keeps retrying a remote that refuses it (back-off of its own, whatever the
      // call asks): a request from a process of its own gets the remote's answer.
      await this.probe?.(client);
      throw new Error(
        `the client answers, but its request to the remote got no answer in ${REMOTE_ANSWER_MS} ms${this.probe ? ' (a request from the node itself was answered: the client may be stuck on its connection)' : ''}`,
        { cause: err },
      );
    }
  }

  async pendingWrites(control: ControlEndpoint): Promise<number> {
    const stats = await rcCall<VfsStats>(control, 'vfs/stats');
    return (stats.diskCache?.uploadsInProgress ?? 0) + (stats.diskCache?.uploadsQueued ?? 0);
  }

  async forgetListings(control: ControlEndpoint): Promise<void> {
    await rcCall(control, 'vfs/forget', {}, 15_000);
  }

  async refreshDirectory(control: ControlEndpoint, dir: string): Promise<void> {
    // A directory made on the remote after the mount started (a new sub-directory volume) is
    // invisible until rclone's directory cache expires (5 min) unless its parent is re-read.
    // rclone names directories relative to the root, and the root itself by leaving dir out.
    await rcCall(control, 'vfs/refresh', dir === '' ? {} : { dir }, 15_000);
  }
}
