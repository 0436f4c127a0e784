// The benchmarks' emulated WAN/NAS link: a network namespace shaped to a rate, with a delaying proxy before each server in it.
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { mkdir } from 'node:fs/promises';
import { execa, type ResultPromise } from 'execa';
import { waitForPort } from '../demo/loopback-server.js';
import { s3rverRcloneEnv } from '../demo/s3-server.js';
import { sleep } from '../kernel/proc.js';
import type { Remote } from './harness.js';

const PROXY = fileURLToPath(new URL('../../dist/bench/delay-proxy.js', import.meta.url));
const ROOT = fileURLToPath(new URL('../..', import.meta.url));

export interface LinkOptions {
  /** Rate of each direction, Mbit/s. */
  rateMbit: number;
  /** Delay of each direction, ms. */
  delayMs: number;
  /** Names this link among the run's links (its namespace and interfaces): a letter or two. */
  name?: string;
  /** The second octet of the link's 10.x.0.0/30 network (one per link of a run). */
  subnet?: number;
}

/**
 * An emulated WAN/NAS link: a network namespace with a veth pair, HTB shaping both ends to the
 * rate (this kernel has no netem), and a delaying TCP proxy inside the namespace in front of each
 * server. Servers run inside the namespace on its loopback; clients on the host reach them only
 * through HOST:port -> veth -> proxy -> server.
 */
export class EmulatedLink {
  readonly nsAddress: string;
  private readonly processes: ResultPromise[] = [];
  private nextPort = 18080;

  private constructor(
    readonly netns: string,
    readonly options: LinkOptions,
    /** The host's end of the veth pair: what it receives is everything the remotes sent. */
    readonly hostDevice: string,
  ) {
    this.nsAddress = `10.${options.subnet ?? 201}.0.2`;
  }

  /** Bytes that crossed the link from the remotes to the host (frames, headers included). */
  async receivedBytes(): Promise<number> {
    return Number(await readFile(`/sys/class/net/${this.hostDevice}/statistics/rx_bytes`, 'utf8'));
  }

  static async create(options: LinkOptions): Promise<EmulatedLink> {
    const name = options.name ?? '';
    const host = `dcb${process.pid % 100000}${name}h`;
    const link = new EmulatedLink(`dcsi-bench-${process.pid}${name}`, options, host);
    const peer = `dcb${process.pid % 100000}${name}n`;
    const ip = (...args: string[]) => execa('ip', args);
    const inNs = (...args: string[]) => execa('ip', ['netns', 'exec', link.netns, ...args]);
    try {
      await ip('netns', 'add', link.netns);
      await ip('link', 'add', host, 'type', 'veth', 'peer', 'name', peer);
      await ip('link', 'set', peer, 'netns', link.netns);
      await ip('addr', 'add', `10.${options.subnet ?? 201}.0.1/30`, 'dev', host);
      await ip('link', 'set', host, 'up');
      await inNs('ip', 'addr', 'add', `${link.nsAddress}/30`, 'dev', peer);
      await inNs('ip', 'link', 'set', peer, 'up');
      await inNs('ip', 'link', 'set', 'lo', 'up');
      const rate = `${options.rateMbit}mbit`;
      // What tc means its default burst to be (a clock tick of the rate at 1000 Hz): with this
      // kernel's high-resolution clock tc computes about one MTU (1375 bytes at 1 Gbit/s, 0 at
      // 10 Gbit/s), so each offloaded 64 KB segment waits for the shaper's timer. Measured with
      // 2 GiB from s3rver through the link: 106 MB/s at 1 Gbit/s and 7.3-8.7 s at 10 Gbit/s with
      // tc's default; 117 MB/s and 5.5-6.8 s with this.
      const burst = `${Math.ceil((options.rateMbit * 1e6) / 8 / 1000)}b`;
      for (const [run, dev] of [
        [(...a: string[]) => execa('tc', a), host],
        [(...a: string[]) => inNs('tc', ...a), peer],
      ] as const) {
        await run('qdisc', 'add', 'dev', dev, 'root', 'handle', '1:', 'htb', 'default', '10');
        await run(
          'class',
          'add',
          'dev',
          dev,
          'parent',
          '1:',
          'classid',
          '1:10',
          'htb',
          'rate',
          rate,
          'ceil',
          rate,
          'burst',
          burst,
          'cburst',
          burst,
        );
      }
    } catch (err) {
      await link.close();
      throw err;
    }
    return link;
  }

  /** Runs a long-lived process inside the namespace; stopped (by PID) on close. */
  spawn(command: string, args: string[], env: Record<string, string> = {}): ResultPromise {
    const child = execa('ip', ['netns', 'exec', this.netns, command, ...args], {
      reject: false,
      stdin: 'ignore',
      stdout: 'ignore',
      stderr: 'ignore',
      extendEnv: false,
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env },
    });
    this.processes.push(child);
    return child;
  }

  /** A short command inside the namespace. */
  run(command: string, args: string[], env: Record<string, string> = {}) {
    return execa('ip', ['netns', 'exec', this.netns, command, ...args], {
      extendEnv: false,
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env },
    });
  }

  /**
   * Exposes a server listening on the namespace's loopback at serverPort through the link;
   * returns the host-reachable port once it answers.
   */
  async expose(serverPort: number): Promise<number> {
    // The server itself first (the proxy would accept connections before it is up).
    const serverDeadline = Date.now() + 30_000;
    for (;;) {
      const probe = await execa(
        'ip',
        ['netns', 'exec', this.netns, 'bash', '-c', `exec 3<>/dev/tcp/127.0.0.1/${serverPort}`],
        { reject: false },
      );
      if (probe.exitCode === 0) break;
      if (Date.now() > serverDeadline)
        throw new Error(`no server on port ${serverPort} in ${this.netns}`);
      await sleep(100);
    }
    const port = this.nextPort;
    this.nextPort += 1;
    this.spawn(process.execPath, [
      PROXY,
      this.nsAddress,
      String(port),
      '127.0.0.1',
      String(serverPort),
      String(this.options.delayMs),
    ]);
    await waitForPort(port, 15_000, this.nsAddress);
    return port;
  }

  async close(): Promise<void> {
    for (const child of this.processes) {
      if (child.pid !== undefined && child.exitCode === null) {
        try {
          process.kill(child.pid, 'SIGTERM');
        } catch {
          // gone
        }
      }
    }
    const exited = Promise.all(this.processes.map((child) => child));
    const stubborn = setTimeout(() => {
      for (const child of this.processes) child.kill('SIGKILL');
    }, 5_000);
    await exited;
    clearTimeout(stubborn);
    // Deleting the namespace removes the veth pair (both ends) and its qdiscs.
    await execa('ip', ['netns', 'del', this.netns], { reject: false });
  }
}

/**
 * s3rver inside a link's namespace on `port` with these buckets, exposed through the link: the
 * host-reachable port. Its key pair is S3RVER/S3RVER. On a link without delay it listens on the
 * namespace's address itself: no proxy process copies its bytes (HTB still sets the rate).
 */
export async function serveS3(
  link: EmulatedLink,
  directory: string,
  buckets: string[],
  port: number,
): Promise<number> {
  const s3rver = pathToFileURL(createRequire(import.meta.url).resolve('s3rver')).href;
  const direct = link.options.delayMs === 0;
  link.spawn(process.execPath, [
    '--input-type=module',
    '-e',
    `process.chdir(${JSON.stringify(ROOT)});
     const { default: S3rver } = await import(${JSON.stringify(s3rver)});
     const server = new S3rver({ address: '${direct ? link.nsAddress : '127.0.0.1'}', port: ${port}, silent: true, directory: ${JSON.stringify(directory)}, configureBuckets: ${JSON.stringify(buckets.map((name) => ({ name })))} });
     await server.run();
     process.on('SIGTERM', () => server.close().then(() => process.exit(0)));`,
  ]);
  if (!direct) return link.expose(port);
  await waitForPort(port, 30_000, link.nsAddress);
  return port;
}

/**
 * A directory served behind a link over HTTP (`rclone serve http`) and S3 (s3rver, the directory
 * uploaded into `bucket` inside the namespace, not through the link): the two remotes of a run,
 * as a driver and rclone alone reach them (remote "U").
 */
export async function serveDataset(
  link: EmulatedLink,
  data: string,
  s3Store: string,
  bucket: string,
): Promise<{ remotes: [Remote, Remote]; httpServer: ResultPromise; httpUrl: string }> {
  const httpServer = link.spawn('rclone', [
    'serve',
    'http',
    data,
    '--addr',
    '127.0.0.1:8080',
    '--config',
    '/dev/null',
  ]);
  const httpPort = await link.expose(8080);
  await mkdir(s3Store, { recursive: true });
  const s3Port = await serveS3(link, s3Store, [bucket], 9000);
  await link.run(
    'rclone',
    ['copy', data, `UP:${bucket}`, '--transfers', '32', '--config', '/dev/null'],
    s3rverRcloneEnv('UP', 'http://127.0.0.1:9000'),
  );
  const endpoint = (port: number) => `http://${link.nsAddress}:${port}`;
  const httpUrl = `${endpoint(httpPort)}/`;
  return {
    httpServer,
    httpUrl,
    remotes: [
      {
        protocol: 'http',
        parameters: { source: httpUrl },
        secrets: {},
        rcloneEnv: {
          PATH: process.env.PATH ?? '/usr/bin:/bin',
          RCLONE_CONFIG_U_TYPE: 'http',
          RCLONE_CONFIG_U_URL: httpUrl,
        },
        rclonePath: '',
      },
      {
        protocol: 's3',
        parameters: { source: `s3://${bucket}` },
        secrets: {
          accessKeyId: 'S3RVER',
          secretAccessKey: 'S3RVER',
          endpoint: endpoint(s3Port),
          region: 'us-east-1',
        },
        rcloneEnv: s3rverRcloneEnv('U', endpoint(s3Port)),
        rclonePath: bucket,
      },
    ],
  };
}
