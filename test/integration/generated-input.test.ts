/**
 * Generated requests (fast-check) through the real socket, beside the hand-written corpus: ids,
 * parameters, paths, secrets and capabilities nobody thought of. Never INTERNAL or UNKNOWN, never
 * OK for input that is invalid by construction, nothing mounted outside the kubelet, state and
 * cache directories, no secret in a log line, and the driver still serving afterwards.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import fc from 'fast-check';
import { LoopbackServer } from '../../src/demo/loopback-server.js';
import { KNOWN_KEYS } from '../../src/dataset/params.js';
import { MountTable } from '../../src/kernel/mountinfo.js';
import { recordedClients, unmountUnder } from '../helpers/cleanup.js';
import { startTestDriver, type TestDriver } from '../helpers/driver.js';
import { pidsWithArgs } from '../helpers/processes.js';

const S = grpc.status;
const SECRET = `generated-secret-${randomBytes(12).toString('hex')}`;
// The kubelet directory is the driver's flag, so it exists before the driver starts.
const root = mkdtempSync('/tmp/dcsi-gen-');
const kubelet = join(root, 'kubelet');
const source = join(root, 'source');
let driver: TestDriver;
let server: LoopbackServer;

beforeAll(async () => {
  await mkdir(kubelet);
  await mkdir(source);
  await writeFile(join(source, 'file.txt'), 'data\n');
  driver = await startTestDriver({ kubeletDir: kubelet });
  server = await LoopbackServer.start(source, 'webdav');
});

// Cleans what beforeAll got to make; a failed start must not add an error that hides its own.
afterAll(async () => {
  await server?.stop();
  await driver?.dispose();
  await unmountUnder(root);
  await rm(root, { recursive: true, force: true });
});

// ---- what is generated ----------------------------------------------------------------------

/** Strings that broke drivers before: traversal, options, object property names, odd bytes. */
const awkward = fc.constantFrom(
  '__proto__',
  'constructor',
  'toString',
  'hasOwnProperty',
  '..',
  '.',
  '../../../../etc',
  'a/b/../../../c',
  '/abs/path',
  '-x',
  '--flag=1',
  '$(id)',
  '`id`',
  'x'.repeat(129),
  'nul\0byte',
  'line\nbreak',
  'ü',
  '',
);
const text = fc.oneof(
  awkward,
  fc.string({ maxLength: 24 }),
  fc.string({ unit: 'binary', maxLength: 24 }),
);
/** Hosts are loopback or invalid, so no generated request ever reaches the network. */
const host = fc.constantFrom('127.0.0.1:1', '[::1]:1', '-x', '-oProxyCommand=x', 'h=x', 'a!b');
const sourceValue = fc.oneof(
  { weight: 4, arbitrary: fc.constant(`local://${source}`) },
  // Mapped when generated: the server's port is known by then.
  { weight: 4, arbitrary: fc.constant(0).map(() => `webdav://127.0.0.1:${server.port}/`) },
  fc.constantFrom('local:///etc', 'local:///', 'local://h/x'),
  fc
    .tuple(fc.constantFrom('s3', 'sftp', 'webdav', 'webdavs', 'http', 'https', 'ftp'), host, text)
    .map(([scheme, h, path]) => `${scheme}://${h}/${encodeURI(path)}`),
  fc
    .tuple(text, text)
    .map(([user, path]) => `sftp://${encodeURIComponent(user)}@127.0.0.1:1/${path}`),
  text.map((path) => `local://${source}/${path}`),
  text,
);
/** Values a StorageClass would hold, per known key. */
const GOOD_VALUES: Record<string, string[]> = {
  engine: ['rclone'],
  readOnly: ['true', 'false'],
  cacheMedium: ['MEM'],
  cacheQuota: ['64Mi', '128Mi'],
  layout: ['shared'],
  onDelete: ['retain', 'delete'],
  subPath: ['', 'dir'],
  prefetch: ['**', '*.txt', 'dir/'],
  localCopy: ['false'],
  keepWarm: ['10m', '0s'],
  bandwidthLimit: ['10M'],
  uid: ['1000'],
  dirMode: ['0775'],
  'csi.storage.k8s.io/pod.namespace': ['team-a'],
};
const knownKey = fc.constantFrom(...Object.keys(GOOD_VALUES), 'cachePath');
/** One change to a valid request's parameters: a good value, a bad one, or a key nobody knows. */
const parameterChange = fc.oneof(
  {
    weight: 3,
    arbitrary: fc
      .constantFrom(...Object.entries(GOOD_VALUES))
      .chain(([key, values]) => fc.tuple(fc.constant(key), fc.constantFrom(...values))),
  },
  fc.tuple(
    knownKey,
    fc.oneof(text, fc.constantFrom('SSD', 's3fs', 'subdir', '1e309', '-1', '169h')),
  ),
  fc.tuple(text, text),
);
const parameters = fc
  .tuple(
    fc.option(sourceValue, { nil: undefined, freq: 12 }),
    fc.array(parameterChange, { maxLength: 3 }),
  )
  .map(([src, changes]) => ({
    ...(src === undefined ? {} : { source: src }),
    ...Object.fromEntries(changes),
  }));
const secrets = fc.dictionary(
  fc.oneof(
    fc.constantFrom('accessKeyId', 'secretAccessKey', 'password', 'user', 'privateKey'),
    text,
  ),
  fc.constant(SECRET),
  { maxKeys: 3 },
);
/** Names kubelet would make (pod uids, volume names). */
const plainName = fc.stringMatching(/^[a-z0-9][a-z0-9-]{0,15}$/);
const path = fc.oneof(
  { weight: 8, arbitrary: plainName.map((p) => `${kubelet}/pods/${p}/volumes/data`) },
  { weight: 2, arbitrary: text.map((p) => `${kubelet}/pods/${p}`) },
  text,
  fc.constantFrom('/etc', '/', '/proc/self'),
  text.map((p) => `${kubelet}-evil/${p}`),
);
const capability = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.constantFrom('SINGLE_NODE_WRITER', 'MULTI_NODE_READER_ONLY').map((mode) => ({
      mount: {},
      access_mode: { mode },
    })),
  },
  fc
    .tuple(
      fc.constantFrom('mount', 'block', undefined),
      fc.constantFrom('MULTI_NODE_MULTI_WRITER', 'UNKNOWN', undefined),
    )
    .map(([type, mode]) => ({
      ...(type === undefined ? {} : { [type]: {} }),
      ...(mode === undefined ? {} : { access_mode: { mode } }),
    })),
  fc.constant(null),
);

type Call =
  | { rpc: 'CreateVolume'; name: string; parameters: Record<string, string> }
  | { rpc: 'DeleteVolume'; id: string }
  | {
      rpc: 'NodeStageVolume' | 'NodePublishEphemeral';
      id: string;
      path: string;
      capability: object | null;
      context: Record<string, string>;
      secrets: Record<string, string>;
      readonly: boolean;
    }
  | {
      rpc: 'NodeUnstageVolume' | 'NodeUnpublishVolume' | 'NodeGetVolumeStats';
      id: string;
      path: string;
    };

const id = fc.oneof({ weight: 3, arbitrary: plainName }, { weight: 2, arbitrary: text });

const call: fc.Arbitrary<Call> = fc.oneof(
  fc.record({ rpc: fc.constant('CreateVolume' as const), name: id, parameters }),
  fc.record({ rpc: fc.constant('DeleteVolume' as const), id: text }),
  fc.record({
    rpc: fc.constantFrom('NodeStageVolume' as const, 'NodePublishEphemeral' as const),
    id,
    path,
    capability,
    context: parameters,
    secrets,
    readonly: fc.boolean(),
  }),
  fc.record({
    rpc: fc.constantFrom(
      'NodeUnstageVolume' as const,
      'NodeUnpublishVolume' as const,
      'NodeGetVolumeStats' as const,
    ),
    id,
    path,
  }),
);

// ---- what must hold --------------------------------------------------------------------------

// eslint-disable-next-line no-control-regex
const CONTROL = /[\0-\x1f\x7f]/;
const badId = (id: string) => id === '' || Buffer.byteLength(id) > 128 || CONTROL.test(id);
const badPath = (p: string) =>
  !p.startsWith(`${kubelet}/`) || p.split('/').includes('..') || CONTROL.test(p);
const badKeys = (params: Record<string, string>) =>
  Object.keys(params).some((k) => !KNOWN_KEYS.has(k) && !k.startsWith('csi.storage.k8s.io/'));

/** Why a request is invalid whatever the driver's state, or undefined when it may be valid. */
function invalidByConstruction(
  c: Call,
  path: string,
  params: Record<string, string>,
): string | undefined {
  if (c.rpc === 'CreateVolume') {
    if (badId(c.name)) return 'name';
    return badKeys(params) ? 'unknown parameter' : undefined;
  }
  if (badId(c.id)) return 'volume_id';
  if (c.rpc === 'DeleteVolume') return undefined;
  if (c.rpc === 'NodeGetVolumeStats') return path === '' ? 'volume_path' : undefined;
  if (badPath(path)) return 'path';
  if (c.rpc === 'NodeStageVolume' || c.rpc === 'NodePublishEphemeral') {
    if (c.capability === null) return 'capability';
    return badKeys(params) ? 'unknown parameter' : undefined;
  }
  return undefined;
}

async function send(c: Call, path: string, params: Record<string, string>): Promise<void> {
  const { controller, node } = driver.client;
  const capability =
    c.rpc === 'NodeStageVolume' || c.rpc === 'NodePublishEphemeral' ? c.capability : null;
  switch (c.rpc) {
    case 'CreateVolume':
      await controller.CreateVolume({
        name: c.name,
        volume_capabilities: [{ mount: {}, access_mode: { mode: 'MULTI_NODE_READER_ONLY' } }],
        parameters: params,
      });
      return;
    case 'DeleteVolume':
      await controller.DeleteVolume({ volume_id: c.id });
      return;
    case 'NodeStageVolume':
      await node.NodeStageVolume({
        volume_id: c.id,
        staging_target_path: path,
        volume_capability: capability,
        volume_context: params,
        secrets: c.secrets,
      });
      return;
    case 'NodePublishEphemeral':
      await node.NodePublishVolume({
        volume_id: c.id,
        target_path: path,
        volume_capability: capability,
        readonly: c.readonly,
        volume_context: { ...params, 'csi.storage.k8s.io/ephemeral': 'true' },
        secrets: c.secrets,
      });
      return;
    case 'NodeUnstageVolume':
      await node.NodeUnstageVolume({ volume_id: c.id, staging_target_path: path });
      return;
    case 'NodeUnpublishVolume':
      await node.NodeUnpublishVolume({ volume_id: c.id, target_path: path });
      return;
    case 'NodeGetVolumeStats':
      await node.NodeGetVolumeStats({ volume_id: c.id, volume_path: path });
      return;
  }
}

/** What an accepted stage or publish left is taken down again, as kubelet would. */
async function undo(c: Call, path: string): Promise<void> {
  if (c.rpc === 'NodeStageVolume') {
    await driver.client.node.NodeUnstageVolume({ volume_id: c.id, staging_target_path: path });
  } else if (c.rpc === 'NodePublishEphemeral') {
    await driver.client.node.NodeUnpublishVolume({ volume_id: c.id, target_path: path });
  } else if (c.rpc === 'CreateVolume') {
    for (const entry of (await driver.client.controller.ListVolumes({})).entries) {
      if (entry.volume)
        await driver.client.controller.DeleteVolume({ volume_id: entry.volume.volume_id });
    }
  }
}

/**
 * Where this driver may mount: its own directories and kubelet's (not the rest of the test's root,
 * where `kubelet-evil` lies). Scratch directories of other test drivers of this jest process are
 * not this driver's doing, nor what a container runtime on the same machine mounts meanwhile
 * (its storage and network namespaces: no generated request names them).
 */
const ours = () => [
  `${driver.work}/`,
  `${driver.memCacheDir}/`,
  `${kubelet}/`,
  '/tmp/dcsi-test-',
  '/dev/shm/dcsi-test-',
  '/var/lib/containers/storage/',
  '/run/containers/storage/',
  '/run/netns/',
];

/**
 * A fixed number of generated requests, every one of them run: a time limit would count a run cut
 * short on a slow machine as a pass. Sized to finish well inside the test's timeout on 2 cores
 * (500 runs took 6 s on the 2-core test machine).
 */
const RUNS = 500;

it('answers generated requests precisely and leaves nothing behind', async () => {
  const before = new Set((await MountTable.read()).entries.map((m) => m.mountPoint));
  const codes = new Map<string, number>();
  let executed = 0;
  await fc.assert(
    fc.asyncProperty(call, async (c) => {
      executed += 1;
      const path = 'path' in c ? c.path : '';
      const params = c.rpc === 'CreateVolume' ? c.parameters : 'context' in c ? c.context : {};
      const invalid = invalidByConstruction(c, path, params);
      let code: number = S.OK;
      let details = '';
      try {
        await send(c, path, params);
      } catch (err) {
        ({ code, details } = err as grpc.ServiceError);
      }
      codes.set(`${c.rpc} ${S[code]}`, (codes.get(`${c.rpc} ${S[code]}`) ?? 0) + 1);
      try {
        expect([c.rpc, code, details]).not.toEqual([c.rpc, S.INTERNAL, expect.anything()]);
        expect([c.rpc, code, details]).not.toEqual([c.rpc, S.UNKNOWN, expect.anything()]);
        if (invalid) expect([invalid, S[code]]).toEqual([invalid, 'INVALID_ARGUMENT']);
        expect(details).not.toContain(SECRET);
        const added = (await MountTable.read()).entries
          .map((m) => m.mountPoint)
          .filter((m) => !before.has(m) && !ours().some((dir) => m.startsWith(dir)));
        expect(added).toEqual([]);
      } finally {
        if (code === S.OK) await undo(c, path);
      }
      // Undone, nothing of it is left in kubelet's directories (a client kept warm may stay).
      expect((await MountTable.read()).under(root)).toEqual([]);
    }),
    { numRuns: RUNS },
  );
  // fc.assert ends early only by failing: a pass ran every generated request.
  expect(executed).toBe(RUNS);
  // The run reached the driver's deeper paths, not only its first validation.
  expect([codes.has('NodeStageVolume OK'), codes.has('CreateVolume OK')]).toEqual([true, true]);
  expect((await driver.client.identity.Probe({})).ready?.value).toBe(true);
  // Clients still recorded are the ones keepWarm keeps, and only those run.
  const journal = JSON.parse(await readFile(join(driver.stateDir, 'journal.json'), 'utf8')) as {
    datasets: Record<string, { warmUntil?: string }>;
    volumes: Record<string, unknown>;
  };
  expect(journal.volumes).toEqual({});
  expect(Object.values(journal.datasets).filter((d) => d.warmUntil === undefined)).toEqual([]);
  expect((await pidsWithArgs('rclone', 'mount', driver.stateDir)).length).toBe(
    (await recordedClients(driver.stateDir)).length,
  );
  expect(await driver.log()).not.toContain(SECRET);
}, 300_000);
