// The cluster tier's settings at driver start: its location from the flags, its keys from the files of a mounted Secret; recorded for the by-hand prefetch.
import { mkdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { ClusterTierSchema, type Config } from '../config.js';
import { parseSource } from '../dataset/source.js';
import { readJson, writeJson } from '../state/json-file.js';
import type { TierSettings } from './cluster-tier.js';

/** The files a tier's credentials directory holds: the secret keys rclone's S3 config takes. */
const CREDENTIAL_FILES = ['accessKeyId', 'secretAccessKey'] as const;

/** A member refreshes this often unless the driver's flag says otherwise. */
const MEMBER_REFRESH_MS = 5000;

/** The tier's settings; `node` names this process among the nodes filling a dataset together. */
export async function readTierSettings(
  config: NonNullable<Config['clusterTier']>,
  runtimeDir: string,
  node: string,
): Promise<TierSettings> {
  const credentials: Record<string, string> = {};
  if (config.endpoint !== undefined) credentials.endpoint = config.endpoint;
  if (config.region !== undefined) credentials.region = config.region;
  for (const name of CREDENTIAL_FILES) {
    if (config.credentialsDir === undefined) break;
    // A Secret with other keys would leave the tier anonymous, failing at every use: the driver
    // refuses to start instead, naming what is missing.
    const value = await readFile(join(config.credentialsDir, name), 'utf8').catch(
      (err: NodeJS.ErrnoException) => {
        throw new Error(
          `cluster tier credentials: cannot read ${name} in ${config.credentialsDir} (${err.code ?? err.message}); the Secret's keys must be ${CREDENTIAL_FILES.join(' and ')}`,
        );
      },
    );
    credentials[name] = value.trim();
  }
  const tierRuntime = join(runtimeDir, 'cluster-tier');
  await mkdir(tierRuntime, { recursive: true, mode: 0o700 });
  return {
    location: parseSource(config.location),
    credentials,
    transfers: config.transfers,
    uploadBandwidth: config.uploadBandwidth,
    runtimeDir: tierRuntime,
    node,
    memberRefreshMs: config.memberRefreshMs ?? MEMBER_REFRESH_MS,
  };
}

/** Where the running driver records its tier's configuration (no keys: where they are read). */
const recordPath = (stateDir: string): string => join(stateDir, 'cluster-tier.json');

/** What the driver records: its tier, and the node it fills for (a prefetch by hand is that node too). */
const RecordSchema = ClusterTierSchema.extend({ node: z.string().min(1).optional() });

/**
 * Records the driver's tier configuration in its state directory (or that it has none), so that
 * `dataset-cache-csi prefetch` by hand reaches the same tier with the same keys, as the same node.
 */
export async function recordTierConfig(
  stateDir: string,
  config: Config['clusterTier'],
  node: string,
): Promise<void> {
  if (config === undefined) {
    await rm(recordPath(stateDir), { force: true });
    return;
  }
  await writeJson(recordPath(stateDir), { ...config, node });
}

/** The tier configuration the driver recorded, and its node; undefined when it has none. */
export async function recordedTierConfig(
  stateDir: string,
): Promise<{ config: NonNullable<Config['clusterTier']>; node?: string | undefined } | undefined> {
  const recorded = await readJson<unknown>(recordPath(stateDir), undefined);
  if (recorded === undefined) return undefined;
  const { node, ...config } = RecordSchema.parse(recorded);
  return { config, node };
}
