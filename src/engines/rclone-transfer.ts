// Bulk listing and parallel copying of a dataset's files with rclone itself, outside the mount (fills the local copy).
import { createInterface } from 'node:readline';
import { execa } from 'execa';
import type { DatasetSpec } from '../dataset/params.js';
import { baseEnvironment } from './engine.js';
import { REMOTE, remoteConfig } from './rclone.js';

export interface RemoteEntry {
  /** Path relative to the dataset root, as the remote names it. */
  relative: string;
  size: number;
  /** NaN when listed without times. */
  mtimeMs: number;
}

/** What a transfer needs to reach the remote: the client's own definition and credentials. */
export interface TransferSource {
  spec: DatasetSpec;
  secrets: Record<string, string>;
  /** The client's private runtime directory (HOME of the transfer). */
  runtimeDir: string;
}

interface LsjsonEntry {
  Path: string;
  Size: number;
  ModTime: string;
  IsDir: boolean;
}

interface JsonLogLine {
  level?: string;
  msg?: string;
  object?: string;
}

/**
 * rclone lsjson and rclone copy with the remote defined in the environment exactly as the cache
 * client gets it: no URL, credential or path of the remote in argv.
 */
export class RcloneTransfers {
  constructor(private readonly binary = 'rclone') {}

  /** The remote as rclone names it (`SRC:path[/dir]`) and the environment defining SRC. */
  private remote(source: TransferSource, dir = ''): { fs: string; env: Record<string, string> } {
    const remote = remoteConfig(source.spec.source, source.secrets, source.runtimeDir);
    const path = [remote.path.replace(/\/+$/, ''), dir].filter((part) => part !== '').join('/');
    return {
      fs: `${REMOTE}:${remote.path.startsWith('/') && path === '' ? '/' : path}`,
      env: { ...baseEnvironment(source.runtimeDir), ...remote.env },
    };
  }

  private rateArgs(spec: DatasetSpec): string[] {
    return spec.bandwidthLimit === undefined
      ? []
      : ['--bwlimit', `${Math.max(1, Math.floor(spec.bandwidthLimit / 1024))}K`];
  }

  /**
   * Every file below `dir` of the dataset ('' for all), down to `maxDepth` levels (all when
   * undefined), streamed as rclone lists it. Times cost a request per object on some remotes (S3
   * keeps them in metadata): asked for only when needed, or when they come free (see timesFree).
   */
  async list(
    source: TransferSource,
    { dir, maxDepth }: { dir: string; maxDepth?: number | undefined },
    signal: AbortSignal | undefined,
    onEntry: (entry: RemoteEntry) => void,
    withTimes = false,
  ): Promise<void> {
    const { fs, env } = this.remote(source, dir);
    const times = withTimes || timesFree(source);
    const child = execa(
      this.binary,
      [
        'lsjson',
        '-R',
        ...(maxDepth === undefined ? [] : ['--max-depth', String(maxDepth)]),
        '--files-only',
        '--no-mimetype',
        ...(times ? [] : ['--no-modtime']),
        '--config',
        '/dev/null',
        fs,
      ],
      {
        reject: false,
        buffer: { stdout: false, stderr: true },
        stdin: 'ignore',
        extendEnv: false,
        env,
        ...(signal ? { cancelSignal: signal } : {}),
      },
    );
    if (child.stdout) {
      // One entry per line ("{…},"), so millions of files never sit in memory as one document.
      createInterface({ input: child.stdout }).on('line', (line) => {
        const text = line.trim().replace(/,$/, '');
        if (!text.startsWith('{')) return;
        const entry = JSON.parse(text) as LsjsonEntry;
        if (entry.IsDir) return;
        onEntry({
          relative: dir === '' ? entry.Path : `${dir}/${entry.Path}`,
          size: entry.Size,
          mtimeMs: times ? Date.parse(entry.ModTime) : NaN,
        });
      });
    }
    const result = await child;
    // A directory that does not exist lists nothing: the patterns simply match no file.
    if (result.exitCode !== 0 && !/directory not found/i.test(String(result.stderr))) {
      throw new Error(`listing the remote failed: ${lastLine(String(result.stderr))}`);
    }
  }

  /**
   * One cheap request with the dataset's own credentials: a listing of a name that does not
   * exist. Resolves when the remote answered ("not found" is an answer); rejects with its reason.
   */
  async probe(source: TransferSource, timeoutMs = 10_000): Promise<void> {
    const { fs, env } = this.remote(source, PROBE_NAME);
    const result = await execa(
      this.binary,
      [
        'lsjson',
        '--files-only',
        '--no-mimetype',
        '--no-modtime',
        '--max-depth',
        '1',
        '--retries',
        '1',
        '--low-level-retries',
        '1',
        '--config',
        '/dev/null',
        fs,
      ],
      { reject: false, stdin: 'ignore', extendEnv: false, env, timeout: timeoutMs },
    );
    const stderr = String(result.stderr);
    if (result.exitCode === 0 || /directory not found|object not found/i.test(stderr)) return;
    if (result.timedOut) throw new Error('no answer in time');
    // From rclone's last error on: the server's answer and its cause ("connection refused").
    const at = stderr.lastIndexOf('ERROR : ');
    const reason = (at < 0 ? lastLine(stderr) : stderr.slice(at + 'ERROR : '.length))
      // rclone's next log line (a summary of the same error) starts with a date.
      .split(/\n\d{4}\/\d\d\/\d\d /)[0]!
      .replace(/\s+/g, ' ')
      .replace(/^[:\s]+/, '')
      .trim();
    throw new Error(reason.slice(0, 400));
  }

  /**
   * Copies the files named in `listFile` (one path a line, relative to the dataset root) into
   * `destination`, `transfers` at a time, calling `onCopied` as each one is complete there.
   */
  async copy(
    source: TransferSource,
    listFile: string,
    destination: string,
    transfers: number,
    signal: AbortSignal | undefined,
    onStarted: (pid: number) => Promise<void>,
    onCopied: (relative: string) => void,
  ): Promise<{ ok: boolean; reason: string }> {
    const { fs, env } = this.remote(source);
    const child = execa(
      this.binary,
      [
        'copy',
        fs,
        destination,
        '--files-from-raw',
        listFile,
        '--transfers',
        String(transfers),
        '--checkers',
        String(transfers),
        '--config',
        '/dev/null',
        '--use-json-log',
        '--log-level',
        'INFO',
        '--stats',
        '0',
        // One stream per file: the transfers already run in parallel, and range requests of
        // several streams cost object stores more than they gain on one link.
        '--multi-thread-streams',
        '0',
        ...this.rateArgs(source.spec),
      ],
      {
        reject: false,
        buffer: false,
        stdin: 'ignore',
        stdout: 'ignore',
        extendEnv: false,
        env,
        ...(signal ? { cancelSignal: signal } : {}),
      },
    );
    if (child.pid !== undefined) await onStarted(child.pid);
    let lastError = '';
    if (child.stderr) {
      createInterface({ input: child.stderr }).on('line', (line) => {
        let parsed: JsonLogLine;
        try {
          parsed = JSON.parse(line) as JsonLogLine;
        } catch {
          return;
        }
        // rclone writes the destination in place and logs "Copied" once the file is whole.
        if (parsed.object !== undefined && parsed.msg?.startsWith('Copied'))
          onCopied(parsed.object);
        else if (parsed.level === 'error')
          lastError = `${parsed.object ?? ''}: ${parsed.msg ?? ''}`;
      });
    }
    const result = await child;
    return { ok: result.exitCode === 0, reason: lastError };
  }
}

/**
 * Whether a listing learns files' times at no extra cost: rclone asks an HTTP server for each
 * file's size with a HEAD request, whose answer has the time as well.
 */
const timesFree = (source: TransferSource): boolean => source.spec.source.kind === 'http';

/** A name no dataset holds: listing it costs one request and transfers nothing. */
const PROBE_NAME = '.dataset-cache-csi-probe';

const lastLine = (text: string): string => text.trim().split('\n').slice(-1)[0] ?? '';
