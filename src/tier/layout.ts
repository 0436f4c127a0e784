// How a dataset's files sit in the cluster tier: big files as objects under files/, small ones in packs under packs/; writing them there and taking them back.
import { randomBytes } from 'node:crypto';
import { closeSync, openSync } from 'node:fs';
import { mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setImmediate } from 'node:timers/promises';
import pMap from 'p-map';
import type { RcloneTransfers, RemoteEntry } from '../engines/rclone-transfer.js';
import type { TransferSource } from '../engines/transfer-source.js';
import { below } from '../engines/transfer-source.js';
import { sameTimeOrUnlisted } from '../dataset/fingerprint.js';
import {
  extractMember,
  PACK_MEMBER_MAX,
  packContent,
  packId,
  packIsWhole,
  parsePackIndex,
  planPacks,
  type PackCandidate,
  type PackIndex,
  type PackMember,
} from './packs.js';
import { messageOf } from '../util/errors.js';

const FILES = 'files';
const PACKS = 'packs';
/** Packs uploaded at once. */
const PACK_UPLOADS = 4;
/** Members extracted and installed between two turns of the event loop (about a millisecond). */
const YIELD_EVERY = 32;

/** How a transfer runs: at once, its end, and the process doing it (for a restarted driver). */
export interface TierTransferOptions {
  transfers: number;
  signal?: AbortSignal | undefined;
  onStarted?: (pid: number) => Promise<void>;
}

export interface TakeResult {
  ok: boolean;
  reason: string;
  /** Tier files that were there but not the remote's file (refused at install, or a cut pack). */
  rejected: number;
  /** Files the tier holds that were left there: the copy's room (`room`) did not have theirs. */
  noRoom: number;
}

/** Bytes a take may still install; each file the tier holds takes its size from it. */
export interface Room {
  /** Takes the file's size from the room, if it has that much left. */
  take(entry: { relative: string; size: number }): boolean;
}

const UNBOUNDED: Room = { take: () => true };

export interface UploadResult {
  ok: boolean;
  reason: string;
  /** Relative paths now in the tier. */
  uploaded: string[];
}

/**
 * Writes the copy's files `relative` (complete, in `copyRoot`) to the dataset's tier folder: big
 * ones by `rclone copy` (which skips what the tier holds as it is), the others in packs, each
 * pack's data before its index, so an index is only ever found beside a whole pack.
 */
export async function uploadToTier(
  transfers: RcloneTransfers,
  folder: TransferSource,
  copyRoot: string,
  relative: string[],
  scratch: string,
  options: TierTransferOptions,
): Promise<UploadResult> {
  const candidates: PackCandidate[] = [];
  const big: string[] = [];
  for (const path of relative) {
    const stats = await stat(join(copyRoot, path)).catch(() => undefined);
    if (!stats?.isFile()) continue; // dropped from the copy meanwhile (a refresh)
    if (stats.size >= PACK_MEMBER_MAX) big.push(path);
    else candidates.push({ relative: path, size: stats.size, mtimeMs: stats.mtimeMs });
  }
  const uploaded: string[] = [];
  let failure = '';
  const uploadBig = async (): Promise<void> => {
    if (big.length > 0) {
      const list = join(scratch, `files-${randomBytes(6).toString('hex')}`);
      await writeFile(list, big.map((path) => `${path}\n`).join(''), { mode: 0o600 });
      const result = await transfers.copy(
        { localDir: copyRoot },
        below(folder, FILES),
        { listFile: list },
        {
          ...options,
          impatient: true,
          onCopied: (path) => {
            uploaded.push(path);
          },
        },
      );
      if (!result.ok) failure = result.reason || 'upload failed';
    }
  };
  const uploadPacks = async (): Promise<void> => {
    const packsFolder = below(folder, PACKS);
    const { signal } = options;
    // A few packs at once: each is one stream, and the link wants several.
    await pMap(
      planPacks(candidates),
      async (index) => {
        if (signal?.aborted) return;
        const id = packId(index);
        try {
          const data = packContent(copyRoot, index);
          await transfers.upload(packsFolder, `${id}.data`, index.size, data, signal);
          const text = Buffer.from(JSON.stringify(index));
          await transfers.upload(packsFolder, `${id}.json`, text.length, [text], signal);
          uploaded.push(...index.files.map((f) => f.path));
        } catch (err) {
          failure = messageOf(err);
        }
      },
      { concurrency: Math.min(PACK_UPLOADS, options.transfers) },
    );
  };
  await Promise.all([uploadBig(), uploadPacks()]);
  return { ok: failure === '', reason: failure, uploaded };
}

/** What the tier's packs hold: each path's members (a path may be in several packs). */
interface TierContents {
  members: Map<string, { pack: string; index: PackIndex; member: PackMember }[]>;
}

/**
 * Takes from the tier what it holds of `entries` into `workspace`, calling `install` with each
 * file written whole there (it checks the file against the remote's listing and moves it into
 * the copy, or refuses it). Small files come from packs, the others from files/.
 */
export async function takeFromTier(
  transfers: RcloneTransfers,
  folder: TransferSource,
  entries: RemoteEntry[],
  workspace: string,
  install: (written: string, entry: RemoteEntry) => Promise<boolean>,
  options: TierTransferOptions,
  known: PackIndexes = new PackIndexes(),
  room: Room = UNBOUNDED,
): Promise<TakeResult> {
  const outcome: TakeResult = { ok: true, reason: '', rejected: 0, noRoom: 0 };
  /** Whether a file the tier holds fits in what is left of the room (which it then takes). */
  const fits = (entry: RemoteEntry): boolean => {
    if (room.take(entry)) return true;
    outcome.noRoom += 1;
    return false;
  };
  const fail = (reason: string) => {
    outcome.ok = false;
    outcome.reason = reason || 'transfer from the tier failed';
  };
  const installOne = async (written: string, entry: RemoteEntry) => {
    if (!(await install(written, entry))) outcome.rejected += 1;
  };

  const buffer = Buffer.allocUnsafe(PACK_MEMBER_MAX);
  let extractedSoFar = 0;
  /** Writes a downloaded pack's wanted members under the workspace and installs each one. */
  const extractPack = async (
    file: string,
    index: PackIndex,
    members: [PackMember, RemoteEntry][],
  ): Promise<void> => {
    if (!(await packIsWhole(file, index))) {
      outcome.rejected += members.length;
      return;
    }
    const pack = openSync(file, 'r');
    try {
      for (const [k, [member, entry]] of members.entries()) {
        const to = join(workspace, 'members', String((extractedSoFar += 1)));
        extractMember(pack, member, to, buffer);
        await installOne(to, entry);
        // Members are written synchronously: the driver's other work gets its turn.
        if (k % YIELD_EVERY === YIELD_EVERY - 1) await setImmediate();
      }
    } finally {
      closeSync(pack);
    }
  };

  // Packs and big files at once: two streams of different objects, each its own process.
  const takeSmall = async (): Promise<void> => {
    const small = entries.filter((e) => e.size < PACK_MEMBER_MAX);
    if (small.length > 0) {
      const contents = await packContents(
        transfers,
        folder,
        join(workspace, 'indexes'),
        options,
        known,
      );
      if (!contents.ok) fail(contents.reason);
      // Per pack, the members wanted from it: the first pack whose member looks like the remote's.
      const wanted = new Map<string, { index: PackIndex; members: [PackMember, RemoteEntry][] }>();
      for (const entry of small) {
        const held = contents.members.get(entry.relative) ?? [];
        const match =
          held.find(
            (h) =>
              h.member.size === entry.size && sameTimeOrUnlisted(h.member.mtimeMs, entry.mtimeMs),
          ) ?? held.find((h) => h.member.size === entry.size);
        if (!match || !fits(entry)) continue;
        const pack = wanted.get(match.pack) ?? { index: match.index, members: [] };
        pack.members.push([match.member, entry]);
        wanted.set(match.pack, pack);
      }
      if (wanted.size > 0) {
        const dir = join(workspace, 'packs');
        await mkdir(dir, { recursive: true });
        /** The wanted pack a copied object name (`<pack>.data`) stands for. */
        const packOf = (name: string) => wanted.get(name.replace(/\.data$/, ''));
        const list = join(workspace, 'pack-list');
        await writeFile(list, [...wanted.keys()].map((id) => `${id}.data\n`).join(''), {
          mode: 0o600,
        });
        await mkdir(join(workspace, 'members'), { recursive: true });
        const result = await transfers.copy(
          below(folder, PACKS),
          { localDir: dir },
          { listFile: list },
          {
            ...options,
            impatient: true,
            onCopied: async (name) => {
              const pack = packOf(name);
              if (!pack) return;
              const file = join(dir, name);
              try {
                await extractPack(file, pack.index, pack.members);
              } finally {
                // Its members are in the copy now (or refused): the pack's room is the copy's again.
                await rm(file, { force: true });
              }
            },
          },
        );
        // A pack read other than it was written (overwritten, or not yet whole on a store that
        // shows objects early): its members are refused, and the tier is no less up.
        for (const name of result.corrupted) outcome.rejected += packOf(name)?.members.length ?? 0;
        if (!result.ok) fail(result.reason);
      }
    }
  };
  const takeBig = async (): Promise<void> => {
    const wantedBig = entries.filter((e) => e.size >= PACK_MEMBER_MAX);
    // Named files the tier lacks would cost rclone a request each: listed first, asked for if there.
    const stored =
      wantedBig.length === 0
        ? new Map<string, number>()
        : await storedFiles(transfers, folder, options.signal).catch((err: Error) => {
            fail(err.message);
            return new Map<string, number>();
          });
    // An object of another size (cut short, or of another version) is refused unread.
    const cut = wantedBig.filter((e) => (stored.get(e.relative) ?? e.size) !== e.size);
    outcome.rejected += cut.length;
    const big = wantedBig.filter((e) => stored.get(e.relative) === e.size && fits(e));
    if (big.length > 0) {
      const byPath = new Map(big.map((e) => [e.relative, e]));
      const list = join(workspace, 'file-list');
      await writeFile(list, big.map((e) => `${e.relative}\n`).join(''), { mode: 0o600 });
      const destination = join(workspace, FILES);
      const result = await transfers.copy(
        below(folder, FILES),
        { localDir: destination },
        { listFile: list },
        {
          ...options,
          impatient: true,
          onCopied: async (relative) => {
            const entry = byPath.get(relative);
            if (entry) await installOne(join(destination, relative), entry);
          },
        },
      );
      outcome.rejected += result.corrupted.length;
      if (!result.ok) fail(result.reason);
    }
  };
  await Promise.all([takeSmall(), takeBig()]);
  return outcome;
}

/** The big files the tier's folder holds, with their sizes (one listing, no request per file). */
async function storedFiles(
  transfers: RcloneTransfers,
  folder: TransferSource,
  signal: AbortSignal | undefined,
): Promise<Map<string, number>> {
  const stored = new Map<string, number>();
  await transfers.list(below(folder, FILES), { dir: '', impatient: true }, signal, (entry) =>
    stored.set(entry.relative, entry.size),
  );
  return stored;
}

/**
 * Which of `entries` (files the copy holds) the tier's folder lacks: no pack member, no object of
 * theirs with their size. What a node fetched but could not upload before it stopped (its queue
 * is in memory) is found again this way, at the next fill of the dataset.
 */
export async function lackingInTier(
  transfers: RcloneTransfers,
  folder: TransferSource,
  entries: RemoteEntry[],
  scratch: string,
  options: TierTransferOptions,
  known: PackIndexes,
): Promise<RemoteEntry[]> {
  const small = entries.filter((e) => e.size < PACK_MEMBER_MAX);
  const big = entries.filter((e) => e.size >= PACK_MEMBER_MAX);
  const lacking: RemoteEntry[] = [];
  if (small.length > 0) {
    const contents = await packContents(
      transfers,
      folder,
      join(scratch, 'indexes'),
      options,
      known,
    );
    if (!contents.ok) throw new Error(contents.reason);
    for (const entry of small) {
      const held = contents.members.get(entry.relative) ?? [];
      if (!held.some((h) => h.member.size === entry.size)) lacking.push(entry);
    }
  }
  if (big.length > 0) {
    const stored = await storedFiles(transfers, folder, options.signal);
    lacking.push(...big.filter((e) => stored.get(e.relative) !== e.size));
  }
  return lacking;
}

/**
 * The pack indexes of one tier folder this node has read. Packs never change (a pack's name is its
 * index's digest), so each index is downloaded once per driver, not at every fill.
 */
export class PackIndexes {
  readonly indexes = new Map<string, PackIndex>();
  /** Names seen that are not indexes (damaged): not downloaded again. */
  readonly unreadable = new Set<string>();
}

/** Every pack index of the folder, the new ones downloaded and read: which pack holds which path. */
async function packContents(
  transfers: RcloneTransfers,
  folder: TransferSource,
  dir: string,
  options: TierTransferOptions,
  known: PackIndexes,
): Promise<TierContents & { ok: boolean; reason: string }> {
  const packsFolder = below(folder, PACKS);
  let outcome = { ok: true, reason: '' };
  const listed = await transfers.listObjects(packsFolder, options.signal).catch((err: Error) => {
    outcome = { ok: false, reason: err.message };
    return [];
  });
  const fresh = listed
    .map((object) => object.name)
    .filter((name) => name.endsWith('.json'))
    .map((name) => name.replace(/\.json$/, ''))
    .filter((pack) => !known.indexes.has(pack) && !known.unreadable.has(pack));
  if (fresh.length > 0) {
    await mkdir(dir, { recursive: true });
    const list = join(dir, '..', `index-list-${randomBytes(6).toString('hex')}`);
    await writeFile(list, fresh.map((pack) => `${pack}.json\n`).join(''), { mode: 0o600 });
    const result = await transfers.copy(
      packsFolder,
      { localDir: dir },
      { listFile: list },
      { ...options, impatient: true, onCopied: () => undefined },
    );
    if (!result.ok) outcome = { ok: false, reason: result.reason };
    for (const pack of fresh) {
      const text = await readFile(join(dir, `${pack}.json`), 'utf8').catch(() => undefined);
      if (text === undefined) continue; // not copied this time: tried again at the next fill
      const index = parsePackIndex(text);
      if (index) known.indexes.set(pack, index);
      else known.unreadable.add(pack);
    }
  }
  const members: TierContents['members'] = new Map();
  for (const [pack, index] of known.indexes) {
    for (const member of index.files) {
      const held = members.get(member.path) ?? [];
      held.push({ pack, index, member });
      members.set(member.path, held);
    }
  }
  return { ...outcome, members };
}
