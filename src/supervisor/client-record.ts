// What the supervisor knows of a running cache client: the record kept in the node's journal, and the figures and states it reports.
import type { DatasetSpec } from '../dataset/params.js';
import type { ControlEndpoint, EngineStats } from '../engines/engine.js';

/** How a client's dataset mount looks in mountinfo: binds from anything else are refused. */
export interface MountIdentity {
  fsType: string;
  source: string;
}

/** A running (or last known) cache client of a Dataset. */
export interface ClientRecord {
  key: string;
  spec: DatasetSpec;
  pid: number;
  /** With the PID, tells our client from a later process that reuses the PID. */
  startTime: string;
  /** The dataset mount that volumes bind from. */
  mountPoint: string;
  mountIdentity: MountIdentity;
  /** The page-cache layer over the engine's own mount (at its mountPoint), when there is one. */
  layer?: { pid: number; startTime: string; mountPoint: string };
  /**
   * The local-copy layer of a read-only dataset: the overlay at mountPoint has `root` (in the
   * cache file system) over the page-cache layer mounted at `fuseMount`.
   */
  copy?: { root: string; fuseMount: string };
  cacheDir: string;
  runtimeDir: string;
  startedAt: string;
  /** The client's loopback control API, when its engine has one (journal is 0600). */
  control?: ControlEndpoint;
  /** Set while the client serves no volume but is kept warm (keepWarm): when it is stopped. */
  warmUntil?: string;
}

/** Where the engine itself mounts (below the page-cache layer, if any): reads there fill only its cache. */
export const engineMountOf = (client: ClientRecord): string =>
  client.layer?.mountPoint ?? client.mountPoint;

export type ClientState = 'healthy' | 'dead' | 'unmounted' | 'hung';

/** What stopping a client left: its cache (kept warm, or holding writes the remote lacks). */
export interface StoppedClient {
  cacheKept: boolean;
  flushed: boolean;
}

export interface RemoteProblem {
  /** The client did not answer at all (so nothing is known about the remote). */
  clientSilent: boolean;
  reason: string;
}

export interface ClientStats {
  cacheUsedBytes?: number;
  cacheCapacityBytes?: number;
  engine: EngineStats;
  /** Bytes the page-cache layer process has read from the engine since it started. */
  served?: { pid: number; bytes: number };
}
