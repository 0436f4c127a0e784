// The client launcher: a small process in a container of its own that starts cache clients for the driver over a root-only unix socket, so they outlive the driver's pod.
import { chmod, mkdir } from 'node:fs/promises';
import { createServer, request, type IncomingMessage, type ServerResponse } from 'node:http';
import { dirname } from 'node:path';
import type { Logger } from 'pino';
import { removeStaleSocket } from '../csi/server.js';
import {
  ExecaRunner,
  type CommandResult,
  type DetachedProcess,
  type ProcessRunner,
  type SpawnOptions,
} from '../kernel/runner.js';
import { messageOf } from '../util/errors.js';

/** How long the exit code of a launched child can still be waited for. */
const EXIT_KEPT_MS = 60_000;

/**
 * Cache clients must outlive the node plugin's pod: a DaemonSet update replaces the pod, and the
 * container runtime kills every process of a container that goes away. The launcher is a small,
 * rarely updated process in a container of its own (a second DaemonSet) that starts clients for
 * the driver, so they belong to its container, not the driver's. It speaks HTTP on a unix socket
 * that only root can reach, and starts nothing but the cache-client programs.
 */
export const DEFAULT_LAUNCHABLE = ['rclone', 'bindfs', 's3fs'];

interface SpawnRequest {
  command: string;
  args: string[];
  options: SpawnOptions;
}

export interface Launcher {
  close(): Promise<void>;
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

const reply = (res: ServerResponse, status: number, body: unknown): void => {
  res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
};

function isSpawnRequest(value: unknown): value is SpawnRequest {
  const v = value as Partial<SpawnRequest> | null;
  return (
    typeof v?.command === 'string' &&
    Array.isArray(v.args) &&
    v.args.every((arg) => typeof arg === 'string') &&
    typeof v.options?.cwd === 'string' &&
    typeof v.options.logFile === 'string' &&
    typeof v.options.env === 'object'
  );
}

export async function startLauncher(
  socketPath: string,
  log: Logger,
  launchable: string[] = DEFAULT_LAUNCHABLE,
  runner: ProcessRunner = new ExecaRunner(),
): Promise<Launcher> {
  /** Children by PID: running, or exited within EXIT_KEPT_MS. */
  const children = new Map<number, Promise<number | null>>();
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://launcher');
    if (req.method === 'POST' && url.pathname === '/spawn') {
      void readBody(req)
        .then(async (text) => {
          const body: unknown = JSON.parse(text);
          if (!isSpawnRequest(body)) return reply(res, 400, { error: 'malformed spawn request' });
          // The name exactly as allowed: a program of another directory that happens to be
          // called rclone is not a cache client.
          if (!launchable.includes(body.command)) {
            log.warn(
              { command: body.command },
              'refused to launch a program that is not a cache client',
            );
            return reply(res, 403, { error: `${body.command} is not a cache-client program` });
          }
          const child = await runner.spawnDetached(body.command, body.args, body.options);
          children.set(child.pid, child.exited);
          void child.exited.then((exitCode) => {
            // A child may exit before its starter asks to wait for it (a client that fails at
            // once): its exit code stays to be asked for a while.
            setTimeout(() => {
              if (children.get(child.pid) === child.exited) children.delete(child.pid);
            }, EXIT_KEPT_MS).unref();
            log.info(
              { pid: child.pid, command: body.command, exitCode },
              'launched process exited',
            );
          });
          // The environment holds credentials: only the program and its PID are logged.
          log.info({ pid: child.pid, command: body.command }, 'launched');
          return reply(res, 200, { pid: child.pid });
        })
        .catch((err: unknown) => {
          log.error({ err }, 'spawn failed');
          reply(res, 500, { error: messageOf(err) });
        });
      return;
    }
    if (req.method === 'GET' && url.pathname === '/wait') {
      const exited = children.get(Number(url.searchParams.get('pid')));
      if (!exited) return reply(res, 404, { error: 'no such child' });
      void exited.then((exitCode) => reply(res, 200, { exitCode }));
      return;
    }
    reply(res, 404, { error: 'not found' });
  });
  await mkdir(dirname(socketPath), { recursive: true, mode: 0o700 });
  await removeStaleSocket(socketPath);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, () => resolve());
  });
  await chmod(socketPath, 0o600);
  log.info({ socket: socketPath, launchable }, 'launcher listening');
  return {
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

function call(socketPath: string, method: string, path: string, body?: unknown): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const req = request(
      { socketPath, method, path, headers: { 'content-type': 'application/json' } },
      (res) => {
        void readBody(res).then((text) => {
          const parsed = JSON.parse(text) as { error?: string };
          if ((res.statusCode ?? 500) >= 400)
            reject(new Error(`launcher: ${parsed.error ?? res.statusCode}`));
          else resolve(parsed);
        }, reject);
      },
    );
    req.on('error', reject);
    req.end(body === undefined ? undefined : JSON.stringify(body));
  });
}

/** Runs short commands itself and has the launcher start the long-lived clients. */
export class LauncherRunner implements ProcessRunner {
  constructor(
    private readonly socketPath: string,
    private readonly local: ProcessRunner = new ExecaRunner(),
  ) {}

  run(
    command: string,
    args: string[],
    timeoutMs?: number,
    env?: Record<string, string>,
  ): Promise<CommandResult> {
    return this.local.run(command, args, timeoutMs, env);
  }

  async spawnDetached(
    command: string,
    args: string[],
    options: SpawnOptions,
  ): Promise<DetachedProcess> {
    const { pid } = (await call(this.socketPath, 'POST', '/spawn', { command, args, options })) as {
      pid: number;
    };
    // The launcher answers when the child exits; should the launcher go away first, the health
    // loop's polling notices a dead client instead.
    const exited = call(this.socketPath, 'GET', `/wait?pid=${pid}`).then(
      (answer) => (answer as { exitCode: number | null }).exitCode,
      () => new Promise<number | null>(() => undefined),
    );
    return { pid, exited };
  }
}
