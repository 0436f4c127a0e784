/**
 * Every source kind against a real server on loopback started here: S3 (s3rver), SFTP and HTTP
 * (rclone serve), local. Each: stage, publish into two targets, checksum a 100 MiB file and a tree
 * of small files through both, write where the source allows it, unstage, no leftovers; and the
 * credentials never show up in the client's argv, the logs or the state directory.
 */
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { LoopbackServer } from '../../src/demo/loopback-server.js';
import { MountTable } from '../../src/kernel/mountinfo.js';
import { recordedClients } from '../helpers/cleanup.js';
import { mountCapability, startTestDriver, type TestDriver } from '../helpers/driver.js';
import { sha256File, treeDigest, writeRandomFile, writeTree } from '../helpers/files.js';
import { pidsWithArgs } from '../helpers/processes.js';
import { S3Server } from '../../src/demo/s3-server.js';
import { execa } from 'execa';

const MiB = 1 << 20;
let driver: TestDriver;
let data: string;
let bigDigest: string;
let treeExpected: Record<string, string>;

beforeAll(async () => {
  driver = await startTestDriver();
  data = join(driver.work, 'data');
  await mkdir(data);
  await writeRandomFile(join(data, 'big.bin'), 100 * MiB);
  await writeTree(join(data, 'tree'), 10, 30);
  bigDigest = await sha256File(join(data, 'big.bin'));
  treeExpected = await treeDigest(join(data, 'tree'));
}, 120_000);

afterAll(async () => {
  await driver.dispose();
});

/** Credentials proper; endpoint and region travel in the secrets too but are connection settings. */
const CREDENTIAL_KEYS = ['accessKeyId', 'secretAccessKey', 'password', 'privateKey'];
const credentials = (secrets: Record<string, string> = {}) =>
  Object.entries(secrets)
    .filter(([key]) => CREDENTIAL_KEYS.includes(key))
    .map(([, value]) => value);

interface Scenario {
  parameters: Record<string, string>;
  secrets?: Record<string, string>;
  writable: boolean;
  /** Where a file written through the mount must appear. */
  readBack?: (name: string) => Promise<string>;
}

async function exercise(name: string, scenario: Scenario): Promise<void> {
  const writer = scenario.writable ? 'MULTI_NODE_MULTI_WRITER' : 'MULTI_NODE_READER_ONLY';
  const cap = mountCapability(writer);
  const { volume } = await driver.client.controller.CreateVolume({
    name,
    volume_capabilities: [cap],
    parameters: scenario.parameters,
  });
  if (!volume) throw new Error('no volume');
  const staging = join(driver.work, 'kubelet', 'staging', volume.volume_id);
  const targets = ['a', 'b'].map((pod) =>
    join(driver.work, 'kubelet', 'pods', `${name}-${pod}`, 'data'),
  );
  await driver.client.node.NodeStageVolume({
    volume_id: volume.volume_id,
    staging_target_path: staging,
    volume_capability: cap,
    volume_context: volume.volume_context,
    secrets: scenario.secrets ?? {},
  });
  try {
    for (const target of targets) {
      await driver.client.node.NodePublishVolume({
        volume_id: volume.volume_id,
        staging_target_path: staging,
        target_path: target,
        volume_capability: cap,
      });
    }
    for (const target of targets) {
      expect(await sha256File(join(target, 'big.bin'))).toBe(bigDigest);
      expect(await treeDigest(join(target, 'tree'))).toEqual(treeExpected);
    }
    const written = join(targets[0] as string, `written-${name}.txt`);
    if (scenario.writable) {
      await writeFile(written, `written through ${name}\n`);
      expect(await readFile(join(targets[1] as string, `written-${name}.txt`), 'utf8')).toBe(
        `written through ${name}\n`,
      );
    } else {
      await expect(writeFile(written, 'x')).rejects.toMatchObject({ code: 'EROFS' });
    }
    const [client] = await recordedClients(driver.stateDir);
    const cmdline = await readFile(`/proc/${client?.pid}/cmdline`, 'utf8');
    for (const secret of credentials(scenario.secrets)) expect(cmdline).not.toContain(secret);
  } finally {
    // Teardown runs even when a check failed, so one source's failure does not spill into the next.
    for (const target of targets) {
      await driver.client.node.NodeUnpublishVolume({
        volume_id: volume.volume_id,
        target_path: target,
      });
    }
    await driver.client.node.NodeUnstageVolume({
      volume_id: volume.volume_id,
      staging_target_path: staging,
    });
    await driver.client.controller.DeleteVolume({ volume_id: volume.volume_id });
  }
  if (scenario.writable && scenario.readBack) {
    expect(await scenario.readBack(`written-${name}.txt`)).toBe(`written through ${name}\n`);
  }
  expect((await MountTable.read()).under(driver.work)).toEqual([]);
  expect((await MountTable.read()).under(driver.memCacheDir)).toEqual([]);
  expect(await recordedClients(driver.stateDir)).toEqual([]);
  expect(await pidsWithArgs('rclone', 'mount', driver.stateDir)).toEqual([]);
  const log = await driver.log();
  const stateFiles = await readdir(driver.stateDir, { recursive: true, withFileTypes: true });
  const state = await Promise.all(
    stateFiles.filter((e) => e.isFile()).map((e) => readFile(join(e.parentPath, e.name), 'utf8')),
  );
  for (const secret of credentials(scenario.secrets)) {
    expect(log).not.toContain(secret);
    for (const text of state) expect(text).not.toContain(secret);
  }
}

it('local', async () => {
  await exercise('local', {
    parameters: { source: `local://${data}` },
    writable: true,
    readBack: (n) => readFile(join(data, n), 'utf8'),
  });
});

it('s3 (s3rver on loopback) with the s3fs and rclone engines', async () => {
  const store = join(driver.work, 's3-store');
  await mkdir(store);
  const s3 = await S3Server.start(store, ['datasets']);
  try {
    await s3.upload(data, 'datasets/imagenet');
    const readBack = (n: string) => s3.cat(`datasets/imagenet/${n}`);
    for (const engine of ['s3fs', 'rclone']) {
      await exercise(`s3-${engine}`, {
        parameters: { source: 's3://datasets/imagenet', engine },
        secrets: s3.secrets(),
        writable: true,
        readBack,
      });
    }
  } finally {
    await s3.stop();
  }
});

it('sftp (rclone serve sftp, password from the secrets)', async () => {
  const password = `sftp-${Math.random().toString(36).slice(2)}-pw`;
  const server = await LoopbackServer.start(data, 'sftp', [
    '--user',
    'trainer',
    '--pass',
    password,
  ]);
  try {
    await exercise('sftp', {
      parameters: { source: `sftp://127.0.0.1:${server.port}/` },
      secrets: { user: 'trainer', password },
      writable: true,
      readBack: (n) => readFile(join(data, n), 'utf8'),
    });
  } finally {
    await server.stop();
  }
});

it('http (rclone serve http, read-only)', async () => {
  const server = await LoopbackServer.start(data, 'http');
  try {
    await exercise('http', {
      parameters: { source: `http://127.0.0.1:${server.port}/` },
      writable: false,
    });
  } finally {
    await server.stop();
  }
});

it('sftp with a private key (rclone serve sftp --authorized-keys)', async () => {
  const keys = join(driver.work, 'ssh');
  await mkdir(keys);
  await execa('ssh-keygen', [
    '-q',
    '-t',
    'ed25519',
    '-N',
    '',
    '-f',
    join(keys, 'id'),
    '-C',
    'trainer',
  ]);
  const privateKey = await readFile(join(keys, 'id'), 'utf8');
  const server = await LoopbackServer.start(data, 'sftp', [
    '--user',
    'trainer',
    '--authorized-keys',
    join(keys, 'id.pub'),
  ]);
  try {
    await exercise('sftp-key', {
      parameters: { source: `sftp://trainer@127.0.0.1:${server.port}/` },
      secrets: { privateKey },
      writable: true,
      readBack: (n) => readFile(join(data, n), 'utf8'),
    });
  } finally {
    await server.stop();
  }
});

it('webdavs and https with a certificate of a private CA (caCert secret)', async () => {
  const tls = join(driver.work, 'tls');
  await mkdir(tls);
  await execa('openssl', [
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:prime256v1',
    '-nodes',
    '-days',
    '1',
    '-subj',
    '/CN=dataset-cache-csi test',
    '-addext',
    'subjectAltName=IP:127.0.0.1',
    '-keyout',
    join(tls, 'key.pem'),
    '-out',
    join(tls, 'cert.pem'),
  ]);
  const caCert = await readFile(join(tls, 'cert.pem'), 'utf8');
  const certArgs = ['--cert', join(tls, 'cert.pem'), '--key', join(tls, 'key.pem')];
  for (const [protocol, scheme, writable] of [
    ['webdav', 'webdavs', true],
    ['http', 'https', false],
  ] as const) {
    const server = await LoopbackServer.start(data, protocol, certArgs);
    try {
      const source = `${scheme}://127.0.0.1:${server.port}/`;
      // Without the CA the certificate is refused, and the stage says so.
      const cap = mountCapability('MULTI_NODE_READER_ONLY');
      await expect(
        driver.client.node.NodeStageVolume({
          volume_id: `${scheme}-untrusted`,
          staging_target_path: join(driver.work, 'kubelet', 'staging', `${scheme}-untrusted`),
          volume_capability: cap,
          volume_context: { source },
        }),
      ).rejects.toMatchObject({ details: expect.stringMatching(/certificate|x509/) });
      expect(await recordedClients(driver.stateDir)).toEqual([]);
      await exercise(scheme, {
        parameters: { source },
        secrets: { caCert },
        writable,
        ...(writable ? { readBack: (n: string) => readFile(join(data, n), 'utf8') } : {}),
      });
    } finally {
      await server.stop();
    }
  }
});
