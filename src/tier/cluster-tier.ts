// The cluster cache tier: an S3-compatible store every node shares, read before the remote and filled in the background from what nodes fetched.
import { createHash, randomBytes } from 'node:crypto';
import { access, mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { DatasetSpec } from '../dataset/params.js';
import { formatSource, type Source } from '../dataset/source.js';
import { type RcloneTransfers, type RemoteEntry } from '../engines/rclone-transfer.js';
import { below, type TransferSource } from '../engines/transfer-source.js';
import {
  lackingInTier,
  PackIndexes,
  takeFromTier,
  type Room,
  uploadToTier,
  type TakeResult,
  type TierTransferOptions,
} from './layout.js';
import { FillGroup } from './members.js';
import { messageOf } from '../util/errors.js';

/** Where the tier is and how to reach it: set by the node's administrator only. */
export interface TierSettings {
  /** `s3://bucket[/prefix]`. */
  location: Source;
  /** accessKeyId, secretAccessKey, endpoint, region (the keys of a node-stage secret for S3). */
  credentials: Record<string, string>;
  /** Files moved at once, each way. */
  transfers: number;
  /** Bytes per second uploads may take (undefined: unlimited). */
  uploadBandwidth?: number | undefined;
  /** A private directory of the driver for the uploads' file lists and HOME. */
  runtimeDir: string;
  /** This node's name among the nodes filling a dataset together. */
  node: string;
  /** How often a node filling with others says so (FillGroup). */
  memberRefreshMs: number;
}

/** Per dataset, what the tier did for this node since the driver started. */
export interface TierFigures {
  readFiles: number;
  readBytes: number;
  uploadedFiles: number;
  uploadedBytes: number;
  /** Tier objects that were not the remote's file (wrong size, time or hash): never installed. */
  rejected: number;
  /** Transfers from or to the tier that failed (it was unreachable, slow or refused). */
  errors: number;
  /** Bytes fills fetched from the remote (not the tier). */
  remoteBytes: number;
  /** Fills this node ran while other nodes filled the same dataset. */
  sharedFills: number;
  /** Files of another member's share this node fetched itself (it was silent, stalled or slow). */
  takenOverFiles: number;
  /** Seconds shared fills waited for other members' uploads. */
  waitSeconds: number;
}

/** How one fill shared with other nodes went. */
export interface SharedFillFigures {
  /** The most members it saw at once, itself included. */
  members: number;
  /** Files of its own share it fetched from the remote. */
  ownFiles: number;
  /** Files of others' shares it fetched from the remote. */
  takenOverFiles: number;
  /** All files it fetched from the remote (with those nobody could share: no time, no hash). */
  remoteFiles: number;
  /** Files of its share that members filling before it came may have held (fetched last). */
  heldBackFiles: number;
  /** Of those, the files it fetched from the remote after all. */
  heldBackFetched: number;
  tierFiles: number;
  waitSeconds: number;
  durationSeconds: number;
  /** Seconds of fetching from the remote, uploading for the others, taking from the tier. */
  fetchSeconds: number;
  uploadSeconds: number;
  takeSeconds: number;
}

/** What a fill needs to fill a dataset together with the other nodes filling it now. */
export interface FillTogether {
  /**
   * This node's membership in the dataset's fill (join, then leave at the end), among the nodes
   * filling the same `scope` (the same patterns: a node filling another part shares nothing).
   */
  group(scope: string, onError: (reason: string) => void): FillGroup;
  /** Uploads these files of the copy now (the others wait for them); how many were uploaded. */
  share(files: HeldFile[], signal?: AbortSignal): Promise<number>;
  ended(figures: SharedFillFigures): void;
  /** A fill's last uploads and its leave, going on after it ended: drain() waits for them. */
  finishing(work: Promise<void>): void;
}

/** A file a node holds complete, to offer to the tier. */
export interface HeldFile {
  relative: string;
  size: number;
}

/** What a fill of one dataset's copy may ask of the tier. */
export interface TierAccess {
  /**
   * Takes what the tier holds of `entries` into `workspace`, handing each file written whole
   * there to `install` (true: it is the remote's file and now in the copy).
   */
  take(
    entries: RemoteEntry[],
    workspace: string,
    install: (written: string, entry: RemoteEntry) => Promise<boolean>,
    options: TierTransferOptions,
    room?: Room,
  ): Promise<TakeResult>;
  /** Which of these files of the copy the tier lacks (to offer them again: see lackingInTier). */
  lacking(entries: RemoteEntry[], scratch: string): Promise<RemoteEntry[]>;
  /** Whether to try the tier now: false while it is failing, until its retry time. */
  check(): Promise<boolean>;
  read(files: number, bytes: number): void;
  /** Bytes a fill fetched from the remote instead. */
  fetched(bytes: number): void;
  rejected(count: number): void;
  failed(reason: string): void;
  /** Files fetched from the remote, complete in the copy: uploaded later, in the background. */
  offer(files: HeldFile[]): void;
  /** Filling with the other nodes that fill the dataset at the same time. */
  together: FillTogether;
}

const pathExists = (path: string): Promise<boolean> =>
  access(path).then(
    () => true,
    () => false,
  );

/** How long the tier is left alone after it failed. */
const RETRY_MS = 30_000;
/** Uploads wait this long for more files, so one upload carries many. */
const UPLOAD_BATCH_MS = 1000;
/** How long the tier's answer to a probe is awaited. */
const PROBE_TIMEOUT_MS = 5000;
/** Failed uploads of a file before it is left to another node. */
const UPLOAD_ATTEMPTS = 3;

interface Pending {
  folder: TransferSource;
  copyRoot: string;
  /** Size of each file, and the failed uploads it had. */
  files: Map<string, { size: number; failures: number }>;
}

/**
 * One tier for the node: its health, its figures and the queue of uploads. A dataset's files live
 * in one folder per source (`<prefix>/<hash of the source URL>/`, laid out as layout.ts says), so
 * every node finds what another uploaded (dataset keys cannot serve: their credential digests are
 * keyed per node). A tier file stands for the remote's only when its size and time (or MD5) are
 * the remote's now, checked at install; S3 makes each object visible only once whole.
 */
export class ClusterTier {
  private readonly figures = new Map<string, TierFigures>();
  /** Per dataset, the pack indexes read from its tier folder. */
  private readonly packIndexes = new Map<string, PackIndexes>();
  private readonly pending = new Map<string, Pending>();
  private failure?: { reason: string; retryAt: number };
  /** When the tier last answered: a tier that answered recently is used without a probe. */
  private answeredAt = 0;
  private uploadTimer?: NodeJS.Timeout;
  private uploading: Promise<void> = Promise.resolve();
  /** Ended fills' last uploads to the tier (see FillTogether.finishing). */
  private readonly finishing = new Set<Promise<void>>();
  private readonly stopping = new AbortController();

  constructor(
    private readonly settings: TierSettings,
    private readonly transfers: RcloneTransfers,
    private readonly log: Logger,
    private readonly retryMs = RETRY_MS,
  ) {}

  /** The tier's folder of a dataset: the same on every node for the same source. */
  folderOf(spec: DatasetSpec): TransferSource {
    const { location } = this.settings;
    const folder = createHash('sha256').update(formatSource(spec.source)).digest('hex');
    return {
      source: {
        ...location,
        path: `${location.path === '/' ? '' : location.path}/${folder.slice(0, 32)}`,
      },
      secrets: this.settings.credentials,
      runtimeDir: this.settings.runtimeDir,
    };
  }

  /** What a fill of this dataset's copy may ask of the tier. */
  accessFor(key: string, spec: DatasetSpec, copyRoot: string): TierAccess {
    const folder = this.folderOf(spec);
    const figures = this.figuresOf(key);
    let indexes = this.packIndexes.get(key);
    if (!indexes) this.packIndexes.set(key, (indexes = new PackIndexes()));
    const known = indexes;
    return {
      take: (entries, workspace, install, options, room) =>
        takeFromTier(this.transfers, folder, entries, workspace, install, options, known, room),
      lacking: (entries, scratch) =>
        lackingInTier(
          this.transfers,
          folder,
          entries,
          scratch,
          { transfers: this.settings.transfers },
          known,
        ),
      check: () => this.check(key, folder),
      read: (files, bytes) => {
        figures.readFiles += files;
        figures.readBytes += bytes;
        if (files > 0) this.answeredAt = Date.now();
      },
      fetched: (bytes) => {
        figures.remoteBytes += bytes;
      },
      rejected: (count) => {
        figures.rejected += count;
      },
      failed: (reason) => this.fail(key, reason),
      offer: (files) => this.offer(key, folder, copyRoot, files),
      together: {
        group: (scope, onError) =>
          new FillGroup(
            this.transfers,
            below(folder, `members/${scope}`),
            this.settings.node,
            this.settings.memberRefreshMs,
            onError,
          ),
        share: (files, signal) => {
          const sizes = new Map(files.map((f) => [f.relative, { size: f.size, failures: 0 }]));
          return this.upload(key, { folder, copyRoot, files: sizes }, signal, false);
        },
        finishing: (work) => {
          const settled = work.catch(() => undefined);
          this.finishing.add(settled);
          void settled.then(() => this.finishing.delete(settled));
        },
        ended: (fill) => {
          if (fill.members > 1) figures.sharedFills += 1;
          figures.takenOverFiles += fill.takenOverFiles;
          figures.waitSeconds += fill.waitSeconds;
          // A warm-up that found no other node fetched nothing: nothing to tell.
          if (fill.members < 2 && fill.remoteFiles === 0) return;
          this.log.info(
            {
              dataset: key,
              members: fill.members,
              ownFiles: fill.ownFiles,
              takenOver: fill.takenOverFiles,
              tierFiles: fill.tierFiles,
              remoteFiles: fill.remoteFiles,
              ...(fill.heldBackFiles > 0
                ? { heldBack: fill.heldBackFiles, heldBackFetched: fill.heldBackFetched }
                : {}),
              waitedSeconds: Number(fill.waitSeconds.toFixed(2)),
              fetchSeconds: Number(fill.fetchSeconds.toFixed(2)),
              uploadSeconds: Number(fill.uploadSeconds.toFixed(2)),
              takeSeconds: Number(fill.takeSeconds.toFixed(2)),
              durationMs: Math.round(fill.durationSeconds * 1000),
            },
            'cooperative fill',
          );
        },
      },
    };
  }

  /** Why the tier failed last, until it answers again. */
  problem(): string | undefined {
    return this.failure?.reason;
  }

  figuresOf(key: string): TierFigures {
    let figures = this.figures.get(key);
    if (!figures) {
      figures = {
        readFiles: 0,
        readBytes: 0,
        uploadedFiles: 0,
        uploadedBytes: 0,
        rejected: 0,
        errors: 0,
        remoteBytes: 0,
        sharedFills: 0,
        takenOverFiles: 0,
        waitSeconds: 0,
      };
      this.figures.set(key, figures);
    }
    return figures;
  }

  /** The dataset's client is gone from the node: its uploads not yet made are dropped. */
  forget(key: string): void {
    this.pending.delete(key);
    this.packIndexes.delete(key);
  }

  /** Uploads what is pending now and waits for it (a short-lived process's last step). */
  async drain(): Promise<void> {
    await Promise.all([...this.finishing]);
    await this.uploadNow();
  }

  async close(): Promise<void> {
    clearTimeout(this.uploadTimer);
    this.stopping.abort();
    await Promise.all([this.uploading, ...this.finishing]);
  }

  /**
   * Whether to use the tier now. Unless it answered within the retry time, one cheap request with
   * a short timeout decides: a tier that is down or unreachable costs a fill seconds, not minutes.
   */
  private async check(key: string, folder: TransferSource): Promise<boolean> {
    if (this.failure && Date.now() < this.failure.retryAt) return false;
    if (!this.failure && Date.now() - this.answeredAt < this.retryMs) return true;
    try {
      await this.transfers.probe(folder, PROBE_TIMEOUT_MS);
      this.failure = undefined;
      this.answeredAt = Date.now();
      return true;
    } catch (err) {
      this.fail(key, messageOf(err));
      return false;
    }
  }

  private fail(key: string, error: string): void {
    const reason = error.replace(/\s+/g, ' ').trim().slice(0, 300) || 'no answer';
    this.answeredAt = 0;
    this.figuresOf(key).errors += 1;
    this.failure = { reason, retryAt: Date.now() + this.retryMs };
    this.log.warn(
      { dataset: key, reason, retryInMs: this.retryMs },
      'cluster tier failed: files come from the remote until it answers again',
    );
  }

  private offer(key: string, folder: TransferSource, copyRoot: string, files: HeldFile[]): void {
    if (files.length === 0 || this.stopping.signal.aborted) return;
    const pending = this.pending.get(key) ?? { folder, copyRoot, files: new Map() };
    for (const file of files) pending.files.set(file.relative, { size: file.size, failures: 0 });
    this.pending.set(key, pending);
    this.scheduleUpload(UPLOAD_BATCH_MS);
  }

  private scheduleUpload(delayMs: number): void {
    if (this.uploadTimer) return;
    this.uploadTimer = setTimeout(() => void this.uploadNow(), delayMs);
    this.uploadTimer.unref();
  }

  /** Starts an upload round after the one running (instead of any scheduled one); its end. */
  private uploadNow(): Promise<void> {
    clearTimeout(this.uploadTimer);
    this.uploadTimer = undefined;
    this.uploading = this.uploading.then(() => this.uploadPending());
    return this.uploading;
  }

  /** Uploads every dataset's pending files, one dataset at a time; failed ones wait for a retry. */
  private async uploadPending(): Promise<void> {
    for (const [key, pending] of [...this.pending]) {
      if (this.stopping.signal.aborted) return;
      if (!(await this.check(key, pending.folder))) break;
      this.pending.delete(key);
      await this.upload(key, pending);
    }
    if (this.pending.size > 0 && !this.stopping.signal.aborted) {
      this.scheduleUpload(this.failure ? this.failure.retryAt - Date.now() : UPLOAD_BATCH_MS);
    }
  }

  /**
   * Uploads pending files; with `retry`, failed ones are queued again for later and the tier is
   * marked failing. Returns how many were uploaded.
   */
  private async upload(
    key: string,
    { folder, copyRoot, files }: Pending,
    signal: AbortSignal = this.stopping.signal,
    retry = true,
  ): Promise<number> {
    const started = Date.now();
    const figures = this.figuresOf(key);
    const dir = join(this.settings.runtimeDir, `upload-${randomBytes(6).toString('hex')}`);
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const uploaded = { files: 0, bytes: 0 };
    try {
      const result = await uploadToTier(
        this.transfers,
        { ...folder, bandwidthLimit: this.settings.uploadBandwidth },
        copyRoot,
        [...files.keys()],
        dir,
        {
          transfers: this.settings.transfers,
          signal: AbortSignal.any([signal, this.stopping.signal]),
        },
      );
      for (const relative of result.uploaded) {
        const file = files.get(relative);
        if (!file) continue;
        files.delete(relative);
        uploaded.files += 1;
        uploaded.bytes += file.size;
      }
      figures.uploadedFiles += uploaded.files;
      figures.uploadedBytes += uploaded.bytes;
      // A copy that went away with its client (the last volume was unstaged) is no fault of the
      // tier: its files are simply not offered any more.
      if (!result.ok && !retry && !signal.aborted) this.fail(key, result.reason);
      if (retry && !result.ok && !this.stopping.signal.aborted && (await pathExists(copyRoot))) {
        // Tried again after the retry time (what the tier holds by then is skipped), a few times.
        const again = this.pending.get(key) ?? { folder, copyRoot, files: new Map() };
        for (const [relative, file] of files) {
          if (file.failures + 1 < UPLOAD_ATTEMPTS && !again.files.has(relative)) {
            again.files.set(relative, { size: file.size, failures: file.failures + 1 });
          }
        }
        if (again.files.size > 0) this.pending.set(key, again);
        this.fail(key, result.reason);
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
    this.log.info(
      {
        dataset: key,
        files: uploaded.files,
        bytes: uploaded.bytes,
        durationMs: Date.now() - started,
      },
      'uploaded to the cluster tier',
    );
    return uploaded.files;
  }
}
