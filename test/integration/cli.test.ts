/** The installed command: flags, socket handling and graceful shutdown of the real process. */
import { lstat, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createConnection } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { CsiClient } from '../../src/csi/client.js';
import { sleep } from '../../src/kernel/proc.js';

const MAIN = fileURLToPath(new URL('../../dist/main.js', import.meta.url));
let work: string;

beforeAll(async () => {
  work = await mkdtemp('/tmp/dcsi-cli-');
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

/** Leaves a socket file as a predecessor killed with SIGKILL does: nobody listens, nobody removed it. */
async function leaveStaleSocket(path: string): Promise<void> {
  const predecessor = execa(
    'node',
    [
      '-e',
      `require('node:net').createServer().listen(process.argv[1], () => console.log('up'))`,
      path,
    ],
    { reject: false },
  );
  await new Promise<void>((resolve, reject) => {
    predecessor.stdout?.once('data', () => resolve());
    void predecessor.then((result) => reject(new Error(`exited: ${String(result.stderr)}`)));
  });
  predecessor.kill('SIGKILL');
  await predecessor;
}

const connect = (path: string) =>
  new Promise<void>((resolve, reject) => {
    const socket = createConnection(path);
    socket.once('connect', () => {
      socket.destroy();
      resolve();
    });
    socket.once('error', reject);
  });

async function waitForProbe(client: CsiClient): Promise<boolean> {
  for (let i = 0; i < 100; i += 1) {
    try {
      return (await client.identity.Probe({}, { timeoutMs: 1000 })).ready?.value ?? false;
    } catch {
      await sleep(50);
    }
  }
  return false;
}

it('replaces a stale socket, serves, and shuts down on SIGTERM removing its socket', async () => {
  const socket = join(work, 'csi.sock');
  // A socket file left by a killed predecessor: still there, and nothing answers on it.
  await leaveStaleSocket(socket);
  expect((await lstat(socket)).isSocket()).toBe(true);
  await expect(connect(socket)).rejects.toMatchObject({ code: 'ECONNREFUSED' });
  await writeFile(join(work, 'marker'), '');
  const child = execa(
    'node',
    [
      MAIN,
      '--endpoint',
      `unix://${socket}`,
      '--node-id',
      'cli-node',
      '--state-dir',
      join(work, 'state'),
      '--mode',
      'controller',
    ],
    {
      reject: false,
    },
  );
  const client = new CsiClient(`unix://${socket}`);
  try {
    expect(await waitForProbe(client)).toBe(true);
    const info = await client.identity.GetPluginInfo({});
    expect(info).toEqual({
      name: 'dataset-cache.csi.dev',
      vendor_version: expect.stringMatching(/^\d+\.\d+\.\d+$/),
      manifest: {},
    });
    expect((await client.identity.GetPluginCapabilities({})).capabilities).toEqual([
      { service: { type: 'CONTROLLER_SERVICE' }, type: 'service' },
    ]);
  } finally {
    client.close();
    child.kill('SIGTERM');
  }
  const result = await child;
  expect(result.exitCode).toBe(0);
  expect(String(result.stderr)).toMatch(/"msg":"shutting down"/);
  await expect(lstat(socket)).rejects.toMatchObject({ code: 'ENOENT' });
});

it('refuses what it cannot serve, with a message and a non-zero exit', async () => {
  const long = `unix:///${'d/'.repeat(60)}csi.sock`;
  const tooLong = await execa(
    'node',
    [MAIN, '--endpoint', long, '--node-id', 'n', '--state-dir', join(work, 's2')],
    { reject: false },
  );
  expect(tooLong.exitCode).toBe(1);
  expect(String(tooLong.stderr)).toMatch(/unix sockets allow at most 107/);

  const notSocket = join(work, 'regular-file');
  await writeFile(notSocket, 'keep me');
  const refused = await execa(
    'node',
    [MAIN, '--endpoint', `unix://${notSocket}`, '--node-id', 'n', '--state-dir', join(work, 's3')],
    { reject: false },
  );
  expect(refused.exitCode).toBe(1);
  expect(String(refused.stderr)).toMatch(/is not a socket; refusing to remove it/);
  expect((await lstat(notSocket)).isFile()).toBe(true);

  const usage = await execa('node', [MAIN, '--endpoint', 'unix:///tmp/x.sock'], {
    reject: false,
    env: { KUBE_NODE_NAME: '' },
  });
  expect(usage.exitCode).toBe(2);
  expect(String(usage.stderr)).toMatch(/nodeId.*\n.*usage: dataset-cache-csi/s);
});

it('has npm scripts that point at files the build produces (the README quick start)', async () => {
  const pkg = JSON.parse(
    await readFile(new URL('../../package.json', import.meta.url), 'utf8'),
  ) as {
    scripts: Record<string, string>;
  };
  for (const name of ['demo', 'bench']) {
    const entry = /node (dist\/\S+\.js)/.exec(pkg.scripts[name] ?? '')?.[1];
    expect(entry).toBeDefined();
    await expect(
      lstat(fileURLToPath(new URL(`../../${entry}`, import.meta.url))),
    ).resolves.toBeDefined();
  }
});
