// The cache-client engine plug-in: what an engine launches for a dataset, what it can report and check, and the registry of a node's engines.
import type { DatasetSpec, EngineName } from '../dataset/params.js';

/** Where a cache client lives on the node. */
/**
 * The share of cacheQuota an engine's cache fills before it evicts (rclone) or reads through
 * without caching (s3fs): a cache file system this full is at its engine's limit.
 */
export const ENGINE_CACHE_LIMIT_FRACTION = 0.9;

export interface ClientPaths {
  /** FUSE mount point of the dataset. */
  mountPoint: string;
  /** The engine's own cache (on tmpfs for MEM). */
  cacheDir: string;
  /** Private 0700 directory for config, logs and other runtime files. */
  runtimeDir: string;
  logFile: string;
}

export interface LaunchPlan {
  command: string;
  args: string[];
  /** The whole environment of the client: credentials travel here or in files, never in args. */
  env: Record<string, string>;
  /** Written 0600 into the runtime directory before start. */
  files: { path: string; content: string }[];
}

/** A loopback control API of a client (rclone's rc), authenticated with per-client credentials. */
export interface ControlEndpoint {
  port: number;
  user: string;
  password: string;
}

/** The client itself did not answer its control API: nothing is known about the remote. */
export class ControlUnreachableError extends Error {}

/** What an engine can tell about its cache and its traffic; absent fields are unknown. */
export interface EngineStats {
  /** Bytes moved between the node and the remote since the client started (reads and uploads). */
  remoteBytes?: number;
  /** Files (whole or partly) held in the cache. */
  cachedFiles?: number;
  /** Written files not yet on the remote. */
  pendingUploads?: number;
  /** Cached files the engine failed to read or upload. */
  erroredFiles?: number;
}

/** What a remote check needs of a client: its dataset, control API and credentials. */
export interface RemoteCheckTarget {
  spec: DatasetSpec;
  control?: ControlEndpoint;
  credentials(): Promise<Record<string, string>>;
  /** The client's private runtime directory (HOME of a helper process). */
  runtimeDir: string;
}

/**
 * One cheap request to a client's remote with its credentials, from a process of its own: for
 * engines with no API to ask the remote through, and for a client whose own request hangs.
 */
export type RemoteProbe = (client: RemoteCheckTarget) => Promise<void>;

/** A cache-client plug-in. */
export interface Engine {
  readonly name: EngineName;
  /** Filesystem type its mount shows in mountinfo: the type every bind must come from. */
  readonly fsType: string;
  /** Whether the client serves a control API (then it gets a ControlEndpoint at launch). */
  readonly hasControl: boolean;
  /** Whether the client keeps file pages across opens itself (then no page-cache layer is stacked). */
  readonly keepsPageCache: boolean;
  /**
   * Whether files already in the engine's cache still open while the remote is away (rclone's VFS
   * cache serves them; s3fs asks the remote at every open and fails it).
   */
  readonly opensCachedFilesOffline: boolean;
  plan(
    spec: DatasetSpec,
    paths: ClientPaths,
    secrets: Record<string, string>,
    deviceName: string,
    control?: ControlEndpoint,
  ): LaunchPlan;
  /** Files written through the mount that have not reached the remote yet. */
  pendingWrites?(control: ControlEndpoint): Promise<number>;
  /** Cache and traffic figures from the running client. */
  stats?(control: ControlEndpoint): Promise<EngineStats>;
  /**
   * Resolves when the remote answers the client's own credentials now (one cheap request);
   * rejects with the reason, or with ControlUnreachableError when the client itself is silent.
   */
  checkRemote?(client: RemoteCheckTarget): Promise<void>;
  /** Forgets every listing the client cached: the next look-ups ask the remote again. */
  forgetListings?(control: ControlEndpoint): Promise<void>;
  /** Forgets the client's cached listing of a directory (relative to the dataset root). */
  refreshDirectory?(control: ControlEndpoint, dir: string): Promise<void>;
}

export class EngineRegistry {
  private readonly engines = new Map<EngineName, Engine>();

  constructor(engines: Engine[]) {
    for (const engine of engines) this.engines.set(engine.name, engine);
  }

  get(name: EngineName): Engine {
    const engine = this.engines.get(name);
    if (!engine) throw new Error(`engine ${name} is not available on this node`);
    return engine;
  }
}

/** A minimal PATH and nothing else from the driver: stray variables (AWS_CA_BUNDLE…) break clients. */
export function baseEnvironment(home: string): Record<string, string> {
  return {
    PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    HOME: home,
    LC_ALL: 'C',
  };
}
