// A volume's own directory on its dataset's source (layout: subdir), made and removed with rclone.
import { posix } from 'node:path';
import { unavailable } from '../csi/errors.js';
import type { Source } from '../dataset/source.js';
import { REMOTE, remoteConfig } from '../engines/rclone.js';
import type { CommandResult, ProcessRunner } from '../kernel/runner.js';

/** Creates and removes a volume's own directory on a dataset's source (layout: subdir). */
export interface SourceDirectories {
  create(source: Source, subPath: string, secrets: Record<string, string>): Promise<void>;
  remove(source: Source, subPath: string, secrets: Record<string, string>): Promise<void>;
}

/** Object stores have no empty directories: a marker object makes the prefix exist and list. */
export const DIRECTORY_MARKER = '.keep';

/** rclone's exit code for "directory not found". */
const DIRECTORY_NOT_FOUND = 3;

/**
 * One tool for every source kind: rclone reaches all of them with the same remote definition the
 * node's cache client uses (credentials in the environment, never in argv).
 */
export class RcloneSourceDirectories implements SourceDirectories {
  constructor(
    private readonly runner: ProcessRunner,
    private readonly binary = 'rclone',
    private readonly timeoutMs = 60_000,
  ) {}

  async create(source: Source, subPath: string, secrets: Record<string, string>): Promise<void> {
    const result = await this.rclone('mkdir', source, subPath, secrets);
    if (result.exitCode !== 0) throw this.failure('create', subPath, result, secrets);
    if (source.kind === 's3') {
      const marker = await this.rclone('touch', source, `${subPath}/${DIRECTORY_MARKER}`, secrets);
      if (marker.exitCode !== 0) throw this.failure('create', subPath, marker, secrets);
    }
  }

  async remove(source: Source, subPath: string, secrets: Record<string, string>): Promise<void> {
    const result = await this.rclone('purge', source, subPath, secrets);
    // Already gone: DeleteVolume is retried after crashes and must stay idempotent.
    if (result.exitCode !== 0 && result.exitCode !== DIRECTORY_NOT_FOUND) {
      throw this.failure('remove', subPath, result, secrets);
    }
  }

  private rclone(
    command: 'mkdir' | 'touch' | 'purge',
    source: Source,
    relative: string,
    secrets: Record<string, string>,
  ): Promise<CommandResult> {
    const remote = remoteConfig(source, secrets);
    const path = remote.path === '' ? relative : posix.join(remote.path, relative);
    return this.runner.run(
      this.binary,
      [command, `${REMOTE}:${path}`, '--retries', '1', '--low-level-retries', '2'],
      this.timeoutMs,
      { ...remote.env, RCLONE_CONFIG: '/dev/null' },
    );
  }

  private failure(
    action: 'create' | 'remove',
    subPath: string,
    result: CommandResult,
    secrets: Record<string, string>,
  ): Error {
    const lines = result.stderr.trim().split('\n');
    let reason = (lines[lines.length - 1] ?? '').replace(/^\d{4}\/\d\d\/\d\d \d\d:\d\d:\d\d /, '');
    // rclone never prints credentials, but a server's error text might echo what it was sent.
    for (const value of Object.values(secrets)) {
      if (value.length >= 4) reason = reason.split(value).join('***');
    }
    return unavailable(
      `could not ${action} sub-directory "${subPath}" on the source: ${reason || `rclone exited with ${result.exitCode}`}`,
    );
  }
}
