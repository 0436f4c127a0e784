// Bulk listing and parallel copying of a dataset's files with rclone itself, outside the mount (fills the local copy).
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { Readable, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { execa } from 'execa';
import { baseEnvironment } from './engine.js';
import { CopyLog, type CopyResult } from './rclone-copy-log.js';
import { PROBE_NAME, REMOTE, remoteConfig } from './rclone.js';
import { IMPATIENT, LISTED_HTTP, NO_PREALLOCATION, ONE_ATTEMPT } from './rclone-flags.js';
import type { TransferSource } from './transfer-source.js';

export interface RemoteEntry {
  /** Path relative to the dataset root, as the remote names it. */
  relative: string;
  size: number;
  /** NaN when listed without times. */
  mtimeMs: number;
  /** The content's MD5 (hex) where the listing has it for free (S3 objects uploaded whole). */
  md5?: string;
}

/** An object of a store as listed: its name below the listed folder, size and the store's time. */
export interface StoreObject {
  name: string;
  size: number;
  storedAtMs: number;
}

/** Where a copy goes or comes from: a remote, or a directory on this node. */
export type TransferEnd = TransferSource | { localDir: string };

/**
 * Which files a copy takes: those named in a list file (one a line), or those matching a glob.
 * Names in a list file may be given relative to `within`, a directory holding them all: the copy
 * then starts there, and rclone lists that directory alone, not every one above it (on s3rver a
 * listing of a directory walks everything below it: the top directory of 50,000 files took 0.64 s
 * for each batch of a sweep fill, while the server answered nothing else). Names told back
 * (`onCopied`, `corrupted`) are relative to the dataset root either way.
 */
export type Selection = { listFile: string; within?: string } | { include: string };

/**
 * Whether a copy of listed files reads the directories they are in: all remotes but HTTP, where
 * the files are asked for by name (see LISTED_HTTP).
 */
export const copyListsDirectories = (source: TransferSource): boolean =>
  source.source.kind !== 'http';

interface LsjsonEntry {
  Path: string;
  Size: number;
  ModTime: string;
  IsDir: boolean;
  Hashes?: { md5?: string };
}

/** How listDirectories walks the remote's directories. */
export interface DirectoryWalk {
  /** Told when every directory down to a level (1: the root's) was told. */
  onLevel?: (depth: number) => void;
  /** Levels the first listing takes (those a caller waits for; infinite: one walk). */
  firstDepth?: number;
  /** The directory whose directories are told (relative to the root, as they are); '': all. */
  under?: string;
  /**
   * Asked before each listing (with the first level it tells): directories (from the root) whose
   * contents it does not read (nor are they told); one holding `under` ends the walk.
   */
  leaveOut?: (depth: number) => Promise<readonly string[]>;
}

/**
 * rclone lsjson and rclone copy with the remote defined in the environment exactly as the cache
 * client gets it: no URL, credential or path of the remote in argv.
 */
export class RcloneTransfers {
  constructor(private readonly binary = 'rclone') {}

  /** The remote as rclone names it (`SRC:path[/dir]`) and the environment defining SRC. */
  private remote(source: TransferSource, dir = ''): { fs: string; env: Record<string, string> } {
    const remote = remoteConfig(source.source, source.secrets, source.runtimeDir);
    const path = [remote.path.replace(/\/+$/, ''), dir].filter((part) => part !== '').join('/');
    return {
      fs: `${REMOTE}:${remote.path.startsWith('/') && path === '' ? '/' : path}`,
      env: { ...baseEnvironment(source.runtimeDir), ...remote.env },
    };
  }

  private rateArgs(source: TransferSource): string[] {
    return source.bandwidthLimit === undefined
      ? []
      : ['--bwlimit', `${Math.max(1, Math.floor(source.bandwidthLimit / 1024))}K`];
  }

  /**
   * A copy's two ends as rclone names them (at `within` below each, '' for their roots), and the
   * environment defining the remote one. A remote directory ends in a slash: over HTTP, rclone
   * asks the server whether a root without one is a file.
   */
  private ends(
    from: TransferEnd,
    to: TransferEnd,
    within = '',
  ): { src: string; dst: string; env: Record<string, string>; remote: TransferSource } {
    const local = (end: { localDir: string }) => join(end.localDir, within);
    const remote = (end: TransferSource) => {
      const { fs, env } = this.remote(end, within);
      return { fs: within === '' ? fs : `${fs}/`, env };
    };
    if ('localDir' in from && !('localDir' in to)) {
      const { fs, env } = remote(to);
      return { src: local(from), dst: fs, env, remote: to };
    }
    if (!('localDir' in from) && 'localDir' in to) {
      const { fs, env } = remote(from);
      return { src: fs, dst: local(to), env, remote: from };
    }
    throw new Error('a transfer copies between a remote and a local directory');
  }

  /**
   * Every file below `dir` of the dataset ('' for all), down to `maxDepth` levels (all when
   * undefined), streamed as rclone lists it. Times cost a request per object on some remotes (S3
   * keeps them in metadata): asked for only when needed, or when they come free (see timesFree).
   */
  async list(
    source: TransferSource,
    {
      dir,
      maxDepth,
      checkers,
      impatient,
    }: {
      dir: string;
      maxDepth?: number | undefined;
      /** Requests in flight (an HTTP listing asks for each file: HEAD). */
      checkers?: number | undefined;
      /** Gives up on a store that does not answer within seconds rather than minutes. */
      impatient?: boolean | undefined;
    },
    signal: AbortSignal | undefined,
    onEntry: (entry: RemoteEntry) => void,
    withTimes = false,
  ): Promise<void> {
    const { fs, env } = this.remote(source, dir);
    const times = withTimes || timesFree(source);
    const hashes = hashesFree(source);
    const args = [
      'lsjson',
      '-R',
      ...(maxDepth === undefined ? [] : ['--max-depth', String(maxDepth)]),
      ...(checkers === undefined ? [] : ['--checkers', String(checkers)]),
      '--files-only',
      '--no-mimetype',
      ...(times ? [] : ['--no-modtime']),
      ...(hashes ? ['--hash', '--hash-type', 'MD5'] : []),
      ...(impatient ? IMPATIENT : []),
    ];
    // One entry per line ("{…},"), so millions of files never sit in memory as one document.
    const stderr = await this.lines(args, fs, env, signal, (line) => {
      const text = line.trim().replace(/,$/, '');
      if (!text.startsWith('{')) return;
      const entry = JSON.parse(text) as LsjsonEntry;
      if (entry.IsDir) return;
      const md5 = entry.Hashes?.md5;
      onEntry({
        relative: dir === '' ? entry.Path : `${dir}/${entry.Path}`,
        size: entry.Size,
        mtimeMs: times ? Date.parse(entry.ModTime) : NaN,
        ...(md5 ? { md5 } : {}),
      });
    });
    // A directory that does not exist lists nothing: the patterns simply match no file.
    if (stderr !== undefined && !/directory not found/i.test(stderr)) {
      throw new Error(`listing the remote failed: ${lastLine(stderr)}`);
    }
  }

  /**
   * Every directory below the dataset root (an object store's are the prefixes of its keys): the
   * first levels at once (`--max-depth`: a few requests, told as they come), then every level below
   * them in one more walk. `rclone lsf -R` of a bucket prints nothing before its whole walk ends
   * (16 s for 50,000 objects on s3rver); a walk per level below would list the levels above again
   * each time (s3rver reads every object's metadata for a listing of its prefix). An HTTP server
   * is asked for its index pages only.
   */
  async listDirectories(
    source: TransferSource,
    signal: AbortSignal | undefined,
    onDirectory: (relative: string) => void,
    { onLevel, leaveOut, firstDepth = 1, under = '' }: DirectoryWalk = {},
  ): Promise<void> {
    const { fs, env } = this.remote(source, under);
    for (const below of [0, firstDepth]) {
      const left = ((await leaveOut?.(below + 1)) ?? []).flatMap((dir) => leftBelow(under, dir));
      if (signal?.aborted || left.includes('')) return;
      const args = ['lsf', '-R', '--dirs-only', '--dir-slash=false'];
      if (below === 0 && Number.isFinite(firstDepth)) args.push('--max-depth', String(firstDepth));
      for (const dir of left) args.push('--exclude', `/${filterLiteral(dir)}/**`);
      // One request a directory: many at once, as a pod is about to start.
      args.push('--checkers', '32', ...(source.source.kind === 'http' ? ['--http-no-head'] : []));
      let deepest = below;
      const stderr = await this.lines(args, fs, env, signal, (line) => {
        const level = line.split('/').length;
        // The levels above were told by the listing before.
        if (line === '' || level <= below) return;
        deepest = Math.max(deepest, level);
        onDirectory(under === '' ? line : `${under}/${line}`);
      });
      if (stderr !== undefined && !signal?.aborted) {
        throw new Error(`listing the remote's directories failed: ${lastLine(stderr)}`);
      }
      // A first listing of limited depth told every level down to it, directories there or not.
      const told =
        below === 0 && Number.isFinite(firstDepth) ? Math.max(deepest, firstDepth) : deepest;
      for (let level = below + 1; level <= told; level += 1) onLevel?.(level);
      // No directory at the first listing's last level: there is none below.
      if (deepest < firstDepth) return;
    }
  }

  /**
   * Runs an rclone listing of `fs`, handing each line of its output over as it comes; resolves
   * with its error output when it failed, else undefined.
   */
  private async lines(
    args: string[],
    fs: string,
    env: Record<string, string>,
    signal: AbortSignal | undefined,
    onLine: (line: string) => void,
  ): Promise<string | undefined> {
    const child = execa(this.binary, [...args, '--config', '/dev/null', fs], {
      reject: false,
      buffer: { stdout: false, stderr: true },
      stdin: 'ignore',
      extendEnv: false,
      env,
      ...(signal ? { cancelSignal: signal } : {}),
    });
    if (child.stdout) createInterface({ input: child.stdout }).on('line', onLine);
    const result = await child;
    return result.exitCode === 0 ? undefined : String(result.stderr);
  }

  /**
   * The objects directly below `target` with their sizes and the times the store gave them when
   * written (its own clock, not the writer's: `--use-server-modtime`, no request per object).
   */
  async listObjects(target: TransferSource, signal?: AbortSignal): Promise<StoreObject[]> {
    const { fs, env } = this.remote(target);
    const result = await execa(
      this.binary,
      [
        'lsjson',
        '--files-only',
        '--no-mimetype',
        '--use-server-modtime',
        '--config',
        '/dev/null',
        ...IMPATIENT,
        fs,
      ],
      {
        reject: false,
        stdin: 'ignore',
        extendEnv: false,
        env,
        ...(signal ? { cancelSignal: signal } : {}),
      },
    );
    if (result.exitCode !== 0 && !/directory not found/i.test(String(result.stderr))) {
      throw new Error(`listing the tier failed: ${lastLine(String(result.stderr))}`);
    }
    const listed = String(result.stdout).trim();
    if (listed === '' || result.exitCode !== 0) return [];
    return (JSON.parse(listed) as LsjsonEntry[]).map((entry) => ({
      name: entry.Path,
      size: entry.Size,
      storedAtMs: Date.parse(entry.ModTime),
    }));
  }

  /** Removes one object below `target` (rclone deletefile); gone already is done. */
  async remove(target: TransferSource, path: string): Promise<void> {
    const { fs, env } = this.remote(target, path);
    const result = await execa(
      this.binary,
      ['deletefile', '--config', '/dev/null', ...IMPATIENT, fs],
      { reject: false, stdin: 'ignore', stdout: 'ignore', extendEnv: false, env },
    );
    if (result.exitCode !== 0 && !/not found/i.test(String(result.stderr))) {
      throw new Error(`removing from the tier failed: ${lastLine(String(result.stderr))}`);
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
   * Copies the selected files (paths relative to the ends) from one end to the other, `transfers`
   * at a time, calling `onCopied` as each one is complete there. Named files the source lacks are
   * skipped.
   */
  async copy(
    from: TransferEnd,
    to: TransferEnd,
    selection: Selection,
    options: {
      transfers: number;
      signal?: AbortSignal | undefined;
      /** Gives up on a remote that does not answer within seconds rather than minutes. */
      impatient?: boolean;
      /**
       * The caller listed these files (a list file) with their sizes and times, and checks each
       * copied file against that listing: an HTTP server is then asked for their bytes only. rclone
       * would otherwise fetch every directory's index page again and send a HEAD a file (measured
       * on rclone's own server: 400 small files cost it 630 KB instead of 280 KB).
       */
      listed?: boolean;
      onStarted?: (pid: number) => Promise<void>;
      /**
       * Told of each file as soon as rclone has written it whole. The work it returns runs one
       * file at a time in rclone's order, and all of it is done before copy() returns; a failure
       * does not stop the rest, and the first one is what copy() rejects with.
       */
      onCopied: (relative: string) => void | Promise<void>;
    },
  ): Promise<CopyResult> {
    const within = ('within' in selection && selection.within) || '';
    const { src, dst, env, remote } = this.ends(from, to, within);
    const fromRoot = (name: string) => (within === '' ? name : `${within}/${name}`);
    const { transfers, signal } = options;
    const child = execa(
      this.binary,
      [
        'copy',
        src,
        dst,
        ...('listFile' in selection
          ? ['--files-from-raw', selection.listFile]
          : ['--include', selection.include]),
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
        // One stream per file: the transfers already run in parallel, and several streams of one
        // file cost a remote range requests, and the download its checksum on the fly (measured
        // from s3rver on loopback: 2 GiB in 5.2 s with one stream, 7.5 s with four).
        '--multi-thread-streams',
        '0',
        // Uploads go to a bucket that exists: no request to create it.
        '--s3-no-check-bucket',
        // One attempt: the caller takes each file away as it is reported, so rclone's second
        // attempt of the whole copy (after one file failed) would fetch every other file again.
        // Each request still has its own retries (IMPATIENT makes one attempt too).
        ...(options.impatient ? IMPATIENT : ONE_ATTEMPT),
        ...('localDir' in to ? NO_PREALLOCATION : []),
        ...(options.listed && remote.source.kind === 'http' ? LISTED_HTTP : []),
        ...this.rateArgs(remote),
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
    if (child.pid !== undefined) await options.onStarted?.(child.pid);
    const log = new CopyLog(options.onCopied, fromRoot);
    if (child.stderr) createInterface({ input: child.stderr }).on('line', (line) => log.read(line));
    const result = await child;
    return log.result(result.exitCode === 0);
  }

  /**
   * Uploads a stream of `size` bytes as one object at `path` below the remote (rclone rcat): the
   * object appears only once whole. Rejects with rclone's reason when it does not.
   */
  async upload(
    target: TransferSource,
    path: string,
    size: number,
    content: AsyncIterable<Buffer> | Iterable<Buffer>,
    signal?: AbortSignal,
  ): Promise<void> {
    const { fs, env } = this.remote(target, path);
    const child = execa(
      this.binary,
      [
        'rcat',
        fs,
        '--size',
        String(size),
        '--config',
        '/dev/null',
        '--s3-no-check-bucket',
        ...IMPATIENT,
        ...this.rateArgs(target),
      ],
      {
        reject: false,
        stdin: 'pipe',
        stdout: 'ignore',
        buffer: { stderr: true },
        extendEnv: false,
        env,
        ...(signal ? { cancelSignal: signal } : {}),
      },
    );
    // A content that fails (a file changed while read) ends rclone before it completes the object.
    const fed = pipeline(Readable.from(content), child.stdin as Writable).then(
      () => undefined,
      (err: NodeJS.ErrnoException) => {
        child.kill('SIGKILL');
        return err;
      },
    );
    const result = await child;
    const feedError = await fed;
    // EPIPE: rclone stopped reading, and its own reason says why.
    if (feedError && feedError.code !== 'EPIPE') throw feedError;
    if (result.exitCode !== 0) throw new Error(lastLine(String(result.stderr)) || 'upload failed');
  }
}

/**
 * Whether a listing learns files' times at no extra cost: directory listings of SFTP, WebDAV and
 * local paths carry them, and rclone asks an HTTP server for each file's size with a HEAD request,
 * whose answer has the time as well. S3 keeps them in metadata, a request per object.
 */
const timesFree = (source: TransferSource): boolean => source.source.kind !== 's3';

/** S3 lists each object's ETag, the MD5 of its content when it was uploaded whole. */
const hashesFree = (source: TransferSource): boolean => source.source.kind === 's3';

/**
 * A directory to leave out (from the root) as seen from `under`: '' when it holds `under` whole,
 * nothing when it is elsewhere.
 */
const leftBelow = (under: string, dir: string): string[] => {
  if (under === '') return [dir];
  if (dir === '' || dir === under || under.startsWith(`${dir}/`)) return [''];
  return dir.startsWith(`${under}/`) ? [dir.slice(under.length + 1)] : [];
};

/** A path as an rclone filter pattern that matches only itself (its glob characters escaped). */
const filterLiteral = (path: string): string => path.replace(/[\\*?[\]{}]/g, (c) => `\\${c}`);

const lastLine = (text: string): string => text.trim().split('\n').slice(-1)[0] ?? '';
