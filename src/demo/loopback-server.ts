// `rclone serve` of a local directory on loopback (WebDAV, HTTP or SFTP): the remote of the demo, the tests and the benchmarks.
import { mkdtemp, rm } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { freePort } from '../util/net.js';
import { sleep, terminateChild } from '../kernel/proc.js';

export type ServeProtocol = 'webdav' | 'http' | 'sftp';

/** Resolves once host:port accepts a connection. */
export async function waitForPort(
  port: number,
  timeoutMs: number,
  host = '127.0.0.1',
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const open = await new Promise<boolean>((resolve) => {
      const socket = connect(port, host);
      socket.once('connect', () => {
        socket.destroy();
        resolve(true);
      });
      socket.once('error', () => resolve(false));
    });
    if (open) return;
    await sleep(25);
  }
  throw new Error(`server on ${host}:${port} did not come up within ${timeoutMs} ms`);
}

/** `rclone serve` of a directory on 127.0.0.1: the remote of demos and tests. */
export class LoopbackServer {
  private constructor(
    private readonly child: ResultPromise,
    readonly port: number,
    readonly protocol: ServeProtocol,
    private readonly home: string,
  ) {}

  static async start(
    directory: string,
    protocol: ServeProtocol,
    extraArgs: string[] = [],
    /** A port of its own (a server started again where its clients expect it). */
    fixedPort?: number,
  ): Promise<LoopbackServer> {
    // rclone keeps state (sftp host keys) under HOME: never inside the served tree.
    const home = await mkdtemp(join(tmpdir(), 'dcsi-serve-home-'));
    const port = fixedPort ?? (await freePort());
    const child = execa(
      'rclone',
      [
        'serve',
        protocol,
        directory,
        '--addr',
        `127.0.0.1:${port}`,
        '--config',
        '/dev/null',
        ...extraArgs,
      ],
      {
        reject: false,
        stdin: 'ignore',
        stdout: 'ignore',
        stderr: 'pipe',
        extendEnv: false,
        env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: home },
      },
    );
    const server = new LoopbackServer(child, port, protocol, home);
    try {
      await waitForPort(port, 10_000);
    } catch (err) {
      await server.stop();
      throw err;
    }
    return server;
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  url(path = '/'): string {
    return `${this.protocol}://127.0.0.1:${this.port}${path}`;
  }

  async stop(): Promise<void> {
    await terminateChild(this.child);
    await rm(this.home, { recursive: true, force: true });
  }
}
