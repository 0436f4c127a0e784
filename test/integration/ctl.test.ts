/** The human CLI over the socket: a whole volume lifecycle by hand, and a failed call. */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { MountTable } from '../../src/kernel/mountinfo.js';
import { startTestDriver, type TestDriver } from '../helpers/driver.js';

const MAIN = fileURLToPath(new URL('../../dist/main.js', import.meta.url));
let driver: TestDriver;

beforeAll(async () => {
  driver = await startTestDriver();
});
afterAll(async () => {
  await driver.dispose();
});

const ctl = (...args: string[]) =>
  execa('node', [MAIN, 'ctl', ...args, `--endpoint=${driver.endpoint}`], { reject: false });

it('runs identity, create, stage, publish, stats, unpublish, unstage, delete', async () => {
  const data = join(driver.work, 'data');
  await mkdir(data);
  await writeFile(join(data, 'hello.txt'), 'hello\n');
  const identity = await ctl('identity');
  expect(identity.exitCode).toBe(0);
  expect(JSON.parse(identity.stdout)).toMatchObject({
    info: { name: 'dataset-cache.csi.dev' },
    probe: { ready: { value: true } },
  });

  const created = await ctl('create', 'by-hand', '--param', `source=local://${data}`);
  expect(created.exitCode).toBe(0);
  const { volume } = JSON.parse(created.stdout) as {
    volume: { volume_id: string; volume_context: Record<string, string> };
  };
  const staging = join(driver.work, 'kubelet', 'staging', 'by-hand');
  const target = join(driver.work, 'kubelet', 'pods', 'debug', 'data');
  const context = Object.entries(volume.volume_context).flatMap(([k, v]) => [
    '--param',
    `${k}=${v}`,
  ]);
  expect(
    (await ctl('stage', volume.volume_id, '--staging-path', staging, ...context)).exitCode,
  ).toBe(0);
  const published = await ctl(
    'publish',
    volume.volume_id,
    '--staging-path',
    staging,
    '--target-path',
    target,
    '--readonly',
  );
  expect(published.exitCode).toBe(0);
  expect(await readFile(join(target, 'hello.txt'), 'utf8')).toBe('hello\n');
  // --readonly reached the driver: the target refuses writes (the dataset itself is writable).
  await expect(writeFile(join(target, 'nope.txt'), 'x')).rejects.toMatchObject({ code: 'EROFS' });
  const stats = await ctl('stats', volume.volume_id, '--path', target);
  expect(JSON.parse(stats.stdout)).toMatchObject({ volume_condition: { abnormal: false } });
  expect((await ctl('list')).stdout).toContain(volume.volume_id);

  // A call the driver refuses: its code and message, exit 1.
  const refused = await ctl('unstage', volume.volume_id, '--staging-path', staging);
  expect(refused.exitCode).toBe(1);
  expect(refused.stderr).toMatch(/FAILED_PRECONDITION: volume dcv-\w+ is still published at/);

  for (const args of [
    ['unpublish', volume.volume_id, '--target-path', target],
    ['unstage', volume.volume_id, '--staging-path', staging],
    ['delete', volume.volume_id],
  ]) {
    expect((await ctl(...args)).exitCode).toBe(0);
  }
  expect((await MountTable.read()).under(driver.work)).toEqual([]);
});

it('explains what is missing', async () => {
  const missing = await ctl('stage', 'vol-1');
  expect(missing.exitCode).toBe(2);
  expect(missing.stderr).toContain('stage needs --staging-path');
  const unknown = await ctl('frobnicate');
  expect(unknown.exitCode).toBe(2);
  expect(unknown.stderr).toContain('unknown command frobnicate');
});
