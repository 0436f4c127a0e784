/**
 * The client launcher over its real unix socket: it starts the cache-client programs it allows,
 * exactly as named, and refuses anything else (a shell, a program of another directory that is
 * also called rclone), leaving no trace of the refused command.
 */
import { mkdtemp, readFile, rm, stat, writeFile, chmod, mkdir } from 'node:fs/promises';
import { request } from 'node:http';
import { join } from 'node:path';
import { processStartTime } from '../../src/kernel/proc.js';
import { createLogger } from '../../src/log.js';
import { LauncherRunner, startLauncher, type Launcher } from '../../src/supervisor/launcher.js';
import { pathExists } from '../helpers/files.js';
import { until } from '../helpers/wait.js';

let work: string;
let launcher: Launcher;
let runner: LauncherRunner;
let logFile: string;

beforeAll(async () => {
  work = await mkdtemp('/tmp/dcsi-launcher-');
  logFile = join(work, 'launcher.log');
  const socket = join(work, 'run', 'launcher.sock');
  launcher = await startLauncher(socket, createLogger('info', logFile));
  runner = new LauncherRunner(socket);
});

afterAll(async () => {
  await launcher?.close();
  await rm(work, { recursive: true, force: true });
});

const options = () => ({
  env: { PATH: '/usr/bin:/bin' },
  cwd: work,
  logFile: join(work, 'client.log'),
});

it('starts a cache-client program and reports its exit', async () => {
  const child = await runner.spawnDetached('rclone', ['version'], options());
  expect(child.pid).toBeGreaterThan(0);
  expect(await child.exited).toBe(0);
  expect(await readFile(join(work, 'client.log'), 'utf8')).toMatch(/^rclone v/m);
});

it('still reports the exit of a child that ended before anyone asked', async () => {
  const socketPath = join(work, 'run', 'launcher.sock');
  const ask = (method: string, path: string, body?: unknown) =>
    new Promise<{ status: number; body: Record<string, unknown> }>((resolve, reject) => {
      const req = request({ socketPath, method, path }, (res) => {
        let text = '';
        res.on('data', (chunk: Buffer) => (text += chunk.toString()));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            body: JSON.parse(text) as Record<string, unknown>,
          }),
        );
      });
      req.on('error', reject);
      req.end(body === undefined ? undefined : JSON.stringify(body));
    });
  const spawned = await ask('POST', '/spawn', {
    command: 'rclone',
    args: ['version'],
    options: options(),
  });
  expect(spawned.status).toBe(200);
  const pid = Number(spawned.body.pid);
  // Nobody asks yet: the child ends, and the launcher sees its exit (and logs it) on its own.
  await until(
    'the launcher to see the child exit',
    async () =>
      (await readFile(logFile, 'utf8'))
        .split('\n')
        .filter((line) => line.includes('launched process exited'))
        .some((line) => (JSON.parse(line) as { pid?: number }).pid === pid)
        ? true
        : undefined,
    10_000,
  );
  expect(await processStartTime(pid)).toBeUndefined();
  expect(await ask('GET', `/wait?pid=${pid}`)).toEqual({
    status: 200,
    body: { exitCode: 0 },
  });
});

it('is reachable by root only', async () => {
  expect((await stat(join(work, 'run', 'launcher.sock'))).mode & 0o077).toBe(0);
});

it.each([
  ['a shell', 'sh', ['-c', `touch ${'/tmp/dcsi-launcher-pwned'}`]],
  ['a path to a shell', '/bin/sh', ['-c', `touch ${'/tmp/dcsi-launcher-pwned'}`]],
])('refuses %s', async (_what, command, args) => {
  await expect(runner.spawnDetached(command, args, options())).rejects.toThrow(
    `launcher: ${command} is not a cache-client program`,
  );
  expect(await pathExists('/tmp/dcsi-launcher-pwned')).toBe(false);
});

it('refuses a program of another directory named like a cache client', async () => {
  const fake = join(work, 'evil', 'rclone');
  await mkdir(join(work, 'evil'));
  await writeFile(fake, `#!/bin/sh\ntouch ${join(work, 'pwned')}\n`);
  await chmod(fake, 0o755);
  await expect(runner.spawnDetached(fake, [], options())).rejects.toThrow(
    /is not a cache-client program/,
  );
  expect(await pathExists(join(work, 'pwned'))).toBe(false);
  expect(await readFile(logFile, 'utf8')).toContain(
    'refused to launch a program that is not a cache client',
  );
});
