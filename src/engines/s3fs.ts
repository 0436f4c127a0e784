// The s3fs engine: S3 only, its own page cache kept across opens, credentials in a 0600 passwd file.
import { join } from 'node:path';
import { invalidArgument } from '../csi/errors.js';
import type { DatasetSpec } from '../dataset/params.js';
import {
  ENGINE_CACHE_LIMIT_FRACTION,
  baseEnvironment,
  type ClientPaths,
  type Engine,
  type LaunchPlan,
  type RemoteCheckTarget,
  type RemoteProbe,
} from './engine.js';

/** A value that goes into s3fs's comma-separated -o list must not be able to add options. */
function optionValue(name: string, value: string): string {
  if (/[,\s\0]/.test(value)) {
    throw invalidArgument(`secret ${name} must not contain commas, spaces or control characters`);
  }
  return value;
}

const umaskOf = (mode: number): string => `0${(0o777 & ~mode).toString(8).padStart(3, '0')}`;

/**
 * s3fs (S3 only). It keeps file pages across opens itself (kernel_cache), so it needs no page-cache
 * layer; writes are uploaded when a file is closed. Credentials go into a 0600 passwd file.
 */
export class S3fsEngine implements Engine {
  readonly name = 's3fs' as const;
  readonly fsType = 'fuse.s3fs';
  readonly hasControl = false;
  readonly keepsPageCache = true;
  // Measured: with the S3 server stopped, an open of a cached file failed with EIO after 80 s.
  readonly opensCachedFilesOffline = false;

  constructor(
    private readonly probe: RemoteProbe,
    private readonly binary = 's3fs',
  ) {}

  /** s3fs has no API to ask the remote through: a probe of its own asks it. */
  checkRemote(client: RemoteCheckTarget): Promise<void> {
    return this.probe(client);
  }

  plan(
    spec: DatasetSpec,
    paths: ClientPaths,
    secrets: Record<string, string>,
    deviceName: string,
  ): LaunchPlan {
    const { source } = spec;
    if (source.kind !== 's3')
      throw invalidArgument(`engine s3fs serves only s3:// sources, not ${source.kind}://`);
    const passwdFile = join(paths.runtimeDir, 'passwd-s3fs');
    const keyId = secrets.accessKeyId ?? '';
    const secret = secrets.secretAccessKey ?? '';
    if ((keyId === '') !== (secret === '')) {
      throw invalidArgument('secrets accessKeyId and secretAccessKey must be given together');
    }
    // One `id:secret` line of the passwd file: neither may add a line or move the separator.
    // eslint-disable-next-line no-control-regex
    if (/[:\s]/.test(keyId) || /[\0-\x1f\x7f]/.test(secret)) {
      throw invalidArgument(
        'secret accessKeyId must not contain colons or white space, nor secretAccessKey control characters',
      );
    }
    const options = [
      `passwd_file=${passwdFile}`,
      `use_cache=${paths.cacheDir}`,
      'kernel_cache',
      'allow_other',
      `fsname=${deviceName}`,
      'subtype=s3fs',
      // Readable by the non-root users pods usually run as, like rclone's default modes; s3fs
      // has one mode for files and directories, so dirMode sets both.
      `umask=${umaskOf(spec.ownership?.dirMode ?? 0o755)}`,
      ...(spec.ownership?.dirMode === undefined
        ? []
        : [`mp_umask=${umaskOf(spec.ownership.dirMode)}`]),
      ...(spec.ownership?.uid === undefined ? [] : [`uid=${spec.ownership.uid}`]),
      ...(spec.ownership?.gid === undefined ? [] : [`gid=${spec.ownership.gid}`]),
      // Stop caching (read through) before the cache's file system is full.
      `ensure_diskfree=${Math.max(1, Math.floor((spec.cache.quotaBytes * (1 - ENGINE_CACHE_LIMIT_FRACTION)) / 2 ** 20))}`,
    ];
    if (keyId === '') options.push('public_bucket=1');
    if (secrets.endpoint)
      options.push(`url=${optionValue('endpoint', secrets.endpoint)}`, 'use_path_request_style');
    if (secrets.region) options.push(`endpoint=${optionValue('region', secrets.region)}`);
    if (spec.readOnly) options.push('ro');
    const prefix = source.path === '/' ? '' : `:${source.path}`;
    return {
      command: this.binary,
      args: [`${source.authority}${prefix}`, paths.mountPoint, '-f', '-o', options.join(',')],
      env: baseEnvironment(paths.runtimeDir),
      files: keyId === '' ? [] : [{ path: passwdFile, content: `${keyId}:${secret}\n` }],
    };
  }
}
