/**
 * The bad-input corpus: every case goes through the real socket of a driver that runs with
 * --kubelet-dir, and must get its precise gRPC code and a message naming the field. Afterwards the
 * driver still serves, and nothing is mounted or running.
 */
import { mkdirSync, mkdtempSync } from 'node:fs';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { MountTable } from '../../src/kernel/mountinfo.js';
import { recordedClients, unmountUnder } from '../helpers/cleanup.js';
import { mountCapability, startTestDriver, type TestDriver } from '../helpers/driver.js';
import { pidsWithArgs } from '../helpers/processes.js';

// Known when the cases are listed (before any hook runs), so they are made here.
const root = mkdtempSync('/tmp/dcsi-bad-');
const kubelet = join(root, 'kubelet');
const source = join(root, 'source');
mkdirSync(kubelet);
mkdirSync(source);
let driver: TestDriver;

const S = grpc.status;
const cap = mountCapability('MULTI_NODE_MULTI_WRITER');
const ro = mountCapability('MULTI_NODE_READER_ONLY');
const block = { block: {}, access_mode: { mode: 'SINGLE_NODE_WRITER' as const } };

type Call = (d: TestDriver) => Promise<unknown>;
interface Case {
  name: string;
  call: Call;
  code: grpc.status;
  message: RegExp;
}

const create =
  (parameters: Record<string, string>, extra: object = {}): Call =>
  (d) =>
    d.client.controller.CreateVolume({
      name: 'bad',
      volume_capabilities: [cap],
      parameters,
      ...extra,
    });
const withSource = (more: Record<string, string>) => ({ source: `local://${source}`, ...more });
const stage =
  (req: object): Call =>
  (d) =>
    d.client.node.NodeStageVolume({
      volume_id: 'vol',
      staging_target_path: join(kubelet, 'plugins', 'staging', 'vol'),
      volume_capability: cap,
      volume_context: { source: `local://${source}` },
      ...req,
    });
const publish =
  (req: object): Call =>
  (d) =>
    d.client.node.NodePublishVolume({
      volume_id: 'vol',
      staging_target_path: join(kubelet, 'plugins', 'staging', 'vol'),
      target_path: join(kubelet, 'pods', 'p', 'volumes', 'v'),
      volume_capability: cap,
      ...req,
    });

const cases = (): Case[] => [
  // CreateVolume: request fields
  {
    name: 'create without name',
    call: (d) =>
      d.client.controller.CreateVolume({ volume_capabilities: [cap], parameters: withSource({}) }),
    code: S.INVALID_ARGUMENT,
    message: /name is required/,
  },
  {
    name: 'create with 129-byte name',
    call: (d) =>
      d.client.controller.CreateVolume({
        name: 'n'.repeat(129),
        volume_capabilities: [cap],
        parameters: withSource({}),
      }),
    code: S.INVALID_ARGUMENT,
    message: /name is 129 bytes/,
  },
  {
    name: 'create with NUL in name',
    call: (d) =>
      d.client.controller.CreateVolume({
        name: 'a\0b',
        volume_capabilities: [cap],
        parameters: withSource({}),
      }),
    code: S.INVALID_ARGUMENT,
    message: /name contains control/,
  },
  {
    name: 'create with newline in name',
    call: (d) =>
      d.client.controller.CreateVolume({
        name: 'a\nb',
        volume_capabilities: [cap],
        parameters: withSource({}),
      }),
    code: S.INVALID_ARGUMENT,
    message: /name contains control/,
  },
  {
    name: 'create without capabilities',
    call: (d) => d.client.controller.CreateVolume({ name: 'bad', parameters: withSource({}) }),
    code: S.INVALID_ARGUMENT,
    message: /volume_capabilities is required/,
  },
  {
    name: 'create with block access',
    call: (d) =>
      d.client.controller.CreateVolume({
        name: 'bad',
        volume_capabilities: [block],
        parameters: withSource({}),
      }),
    code: S.INVALID_ARGUMENT,
    message: /volume_capabilities\[0\]: block access/,
  },
  {
    name: 'create with capability without access type',
    call: (d) =>
      d.client.controller.CreateVolume({
        name: 'bad',
        volume_capabilities: [{ access_mode: { mode: 'SINGLE_NODE_WRITER' } }],
        parameters: withSource({}),
      }),
    code: S.INVALID_ARGUMENT,
    message: /access type is required/,
  },
  {
    name: 'create with unknown access mode',
    call: (d) =>
      d.client.controller.CreateVolume({
        name: 'bad',
        volume_capabilities: [{ mount: {}, access_mode: { mode: 'UNKNOWN' } }],
        parameters: withSource({}),
      }),
    code: S.INVALID_ARGUMENT,
    message: /access mode UNKNOWN/,
  },
  {
    name: 'create with required > limit',
    call: create(withSource({}), { capacity_range: { required_bytes: '200', limit_bytes: '100' } }),
    code: S.OUT_OF_RANGE,
    message: /required_bytes exceeds limit_bytes/,
  },
  {
    name: 'create with negative size',
    call: create(withSource({}), { capacity_range: { required_bytes: '-1' } }),
    code: S.OUT_OF_RANGE,
    message: /must not be negative/,
  },
  {
    name: 'create from a snapshot',
    call: create(withSource({}), { volume_content_source: { snapshot: { snapshot_id: 's' } } }),
    code: S.INVALID_ARGUMENT,
    message: /volume_content_source is not supported/,
  },
  {
    name: 'create writer volume of a read-only dataset',
    call: create(withSource({ readOnly: 'true' })),
    code: S.INVALID_ARGUMENT,
    message: /dataset is read-only/,
  },
  // CreateVolume: parameters
  { name: 'no source', call: create({}), code: S.INVALID_ARGUMENT, message: /source is required/ },
  {
    name: 'empty source',
    call: create({ source: '' }),
    code: S.INVALID_ARGUMENT,
    message: /source is required/,
  },
  {
    name: 'unknown parameter',
    call: create(withSource({ colour: 'blue' })),
    code: S.INVALID_ARGUMENT,
    message: /unknown parameter "colour"/,
  },
  {
    name: 'unknown parameter with a newline in its name',
    call: create(withSource({ 'a\nb': 'x' })),
    code: S.INVALID_ARGUMENT,
    message: /unknown parameter "a\\nb"/,
  },
  {
    name: 'unsupported scheme',
    call: create({ source: 'ftp://h/x' }),
    code: S.INVALID_ARGUMENT,
    message: /source scheme "ftp:"/,
  },
  {
    name: 'source is not a URL',
    call: create({ source: 'just words' }),
    code: S.INVALID_ARGUMENT,
    message: /is not a URL/,
  },
  {
    name: 'password in source',
    call: create({ source: 'webdav://u:pw@h/x' }),
    code: S.INVALID_ARGUMENT,
    message: /must not carry a password/,
  },
  {
    name: 'query in source',
    call: create({ source: 'https://h/x?sig=1' }),
    code: S.INVALID_ARGUMENT,
    message: /query or fragment/,
  },
  {
    name: 'local source with a host',
    call: create({ source: 'local://host/x' }),
    code: S.INVALID_ARGUMENT,
    message: /local:\/\/\/absolute/,
  },
  {
    name: 'local source at /',
    call: create({ source: 'local:///' }),
    code: S.INVALID_ARGUMENT,
    message: /below \//,
  },
  {
    name: 'dot-dot in source',
    call: create({ source: `local://${source}/../../etc` }),
    code: S.INVALID_ARGUMENT,
    message: /must not contain '\.\.'/,
  },
  {
    name: 'encoded dot-dot in source',
    call: create({ source: `local://${source}/%2e%2E/etc` }),
    code: S.INVALID_ARGUMENT,
    message: /must not contain '\.\.'/,
  },
  {
    name: 'encoded slash dot-dot in source',
    call: create({ source: 'webdav://h/a%2F..%2Fb' }),
    code: S.INVALID_ARGUMENT,
    message: /must not contain '\.\.'/,
  },
  {
    name: 'newline in source',
    call: create({ source: 'webdav://h/a\nb' }),
    code: S.INVALID_ARGUMENT,
    message: /control characters/,
  },
  // Option-shaped or impossible hosts and users, for every remote kind.
  ...[
    'sftp://-oProxyCommand=x/data',
    's3://-bucket/x',
    'webdav://-h/x',
    'https://h=x/x',
    'webdavs://a!b/x',
  ].map((value): Case => ({
    name: `option-shaped host in ${value}`,
    call: create({ source: value }),
    code: S.INVALID_ARGUMENT,
    message: /parameter source host ".*" is not a host name/,
  })),
  ...['sftp://-oProxyCommand=x@h/data', 'webdav://--user@h/x', 'sftp://a%20b@h/x'].map(
    (value): Case => ({
      name: `option-shaped user in ${value}`,
      call: create({ source: value }),
      code: S.INVALID_ARGUMENT,
      message: /parameter source user ".*" is not a user name/,
    }),
  ),
  {
    name: 'NUL in source',
    call: create({ source: 'local:///data\0/x' }),
    code: S.INVALID_ARGUMENT,
    message: /control characters/,
  },
  {
    name: 's3 source with a port',
    call: create({ source: 's3://bucket:9000/x' }),
    code: S.INVALID_ARGUMENT,
    message: /endpoint in the secrets/,
  },
  {
    name: 'oversized source',
    call: create({ source: `webdav://h/${'a'.repeat(5000)}` }),
    code: S.INVALID_ARGUMENT,
    message: /source is longer than 4096/,
  },
  {
    name: 'unknown engine',
    call: create(withSource({ engine: 'juicefs' })),
    code: S.INVALID_ARGUMENT,
    message: /engine="juicefs"/,
  },
  {
    name: 'engine with injected flag',
    call: create(withSource({ engine: 'rclone --config=/etc/x' })),
    code: S.INVALID_ARGUMENT,
    message: /parameter engine=/,
  },
  {
    name: 'bad cache medium',
    call: create(withSource({ cacheMedium: 'RAM' })),
    code: S.INVALID_ARGUMENT,
    message: /cacheMedium="RAM"/,
  },
  {
    name: 'malformed quota',
    call: create(withSource({ cacheQuota: '15 GB' })),
    code: S.INVALID_ARGUMENT,
    message: /cacheQuota="15 GB"/,
  },
  {
    name: 'negative quota',
    call: create(withSource({ cacheQuota: '-1Gi' })),
    code: S.INVALID_ARGUMENT,
    message: /cacheQuota="-1Gi"/,
  },
  {
    name: 'zero quota',
    call: create(withSource({ cacheQuota: '0' })),
    code: S.INVALID_ARGUMENT,
    message: /cacheQuota="0"/,
  },
  {
    name: 'overflowing quota',
    call: create(withSource({ cacheQuota: '99999999999Ti' })),
    code: S.INVALID_ARGUMENT,
    message: /cacheQuota="99999999999Ti"/,
  },
  {
    name: 'quota with a leading dash (flag injection)',
    call: create(withSource({ cacheQuota: '--rc-no-auth' })),
    code: S.INVALID_ARGUMENT,
    message: /cacheQuota=/,
  },
  {
    name: 'cachePath with MEM',
    call: create(withSource({ cachePath: '/var/cache' })),
    code: S.INVALID_ARGUMENT,
    message: /cachePath applies only/,
  },
  {
    name: 'relative cachePath',
    call: create(withSource({ cacheMedium: 'SSD', cachePath: 'cache' })),
    code: S.INVALID_ARGUMENT,
    message: /cachePath="cache" must be an absolute/,
  },
  {
    name: 'cachePath with dot-dot',
    call: create(withSource({ cacheMedium: 'SSD', cachePath: '/var/../etc' })),
    code: S.INVALID_ARGUMENT,
    message: /cachePath=.* without '\.\.'/,
  },
  {
    name: 'cachePath with newline',
    call: create(withSource({ cacheMedium: 'SSD', cachePath: '/var/cache\n--rc' })),
    code: S.INVALID_ARGUMENT,
    message: /cachePath=/,
  },
  {
    name: 'readOnly not a boolean',
    call: create(withSource({ readOnly: 'yes' })),
    code: S.INVALID_ARGUMENT,
    message: /readOnly="yes"/,
  },
  {
    name: 'bad layout',
    call: create(withSource({ layout: 'nested' })),
    code: S.INVALID_ARGUMENT,
    message: /layout="nested"/,
  },
  {
    name: 'bad onDelete',
    call: create(withSource({ onDelete: 'shred' })),
    code: S.INVALID_ARGUMENT,
    message: /onDelete="shred"/,
  },
  {
    name: 'subdir layout on a read-only source',
    call: create({ source: 'http://127.0.0.1:1/x', layout: 'subdir' }),
    code: S.INVALID_ARGUMENT,
    message: /layout subdir needs a writable dataset; http:\/\/ sources are read-only/,
  },
  {
    name: 'subPath with dot-dot',
    call: create(withSource({ subPath: '../x' })),
    code: S.INVALID_ARGUMENT,
    message: /subPath="\.\.\/x" must not contain/,
  },
  {
    name: 'absolute subPath',
    call: create(withSource({ subPath: '/etc' })),
    code: S.INVALID_ARGUMENT,
    message: /subPath="\/etc" must be a relative/,
  },
  {
    name: 'subPath with NUL',
    call: create(withSource({ subPath: 'a\0b' })),
    code: S.INVALID_ARGUMENT,
    message: /subPath contains control/,
  },
  {
    name: 'bandwidth not a rate',
    call: create(withSource({ bandwidthLimit: 'fast' })),
    code: S.INVALID_ARGUMENT,
    message: /bandwidthLimit="fast"/,
  },
  {
    name: 'bandwidth with a leading dash',
    call: create(withSource({ bandwidthLimit: '-5M' })),
    code: S.INVALID_ARGUMENT,
    message: /bandwidthLimit="-5M"/,
  },
  {
    name: 'prefetch outside the dataset',
    call: create(withSource({ prefetch: 'train/**,../../etc/*' })),
    code: S.INVALID_ARGUMENT,
    message: /prefetch pattern "\.\.\/\.\.\/etc\/\*" must be relative to the dataset/,
  },
  {
    name: 'keepWarm not a duration',
    call: create(withSource({ keepWarm: 'forever' })),
    code: S.INVALID_ARGUMENT,
    message: /keepWarm="forever" is not a duration/,
  },
  // Other controller calls
  {
    name: 'delete without id',
    call: (d) => d.client.controller.DeleteVolume({}),
    code: S.INVALID_ARGUMENT,
    message: /volume_id is required/,
  },
  {
    name: 'delete with 129-byte id',
    call: (d) => d.client.controller.DeleteVolume({ volume_id: 'v'.repeat(129) }),
    code: S.INVALID_ARGUMENT,
    message: /volume_id is 129 bytes/,
  },
  {
    name: 'validate without id',
    call: (d) => d.client.controller.ValidateVolumeCapabilities({ volume_capabilities: [cap] }),
    code: S.INVALID_ARGUMENT,
    message: /volume_id is required/,
  },
  {
    name: 'validate without capabilities',
    call: (d) => d.client.controller.ValidateVolumeCapabilities({ volume_id: 'x' }),
    code: S.INVALID_ARGUMENT,
    message: /volume_capabilities is required/,
  },
  {
    name: 'validate an unknown volume',
    call: (d) =>
      d.client.controller.ValidateVolumeCapabilities({
        volume_id: 'nope',
        volume_capabilities: [cap],
      }),
    code: S.NOT_FOUND,
    message: /volume nope does not exist/,
  },
  {
    name: 'list with a forged token',
    call: (d) => d.client.controller.ListVolumes({ starting_token: 'eyJhZnRlciI6MX0' }),
    code: S.ABORTED,
    message: /starting_token/,
  },
  {
    name: 'list with a garbage token',
    call: (d) => d.client.controller.ListVolumes({ starting_token: '%%%' }),
    code: S.ABORTED,
    message: /starting_token/,
  },
  {
    name: 'list with negative max_entries',
    call: (d) => d.client.controller.ListVolumes({ max_entries: -1 }),
    code: S.INVALID_ARGUMENT,
    message: /max_entries/,
  },
  {
    name: 'GetCapacity',
    call: (d) => d.client.controller.GetCapacity({}),
    code: S.UNIMPLEMENTED,
    message: /GetCapacity is not supported/,
  },
  {
    name: 'ControllerPublishVolume',
    call: (d) => d.client.controller.ControllerPublishVolume({ volume_id: 'v', node_id: 'n' }),
    code: S.UNIMPLEMENTED,
    message: /ControllerPublishVolume is not supported/,
  },
  {
    name: 'CreateSnapshot',
    call: (d) => d.client.controller.CreateSnapshot({ name: 's', source_volume_id: 'v' }),
    code: S.UNIMPLEMENTED,
    message: /CreateSnapshot/,
  },
  // NodeStageVolume
  {
    name: 'stage without id',
    call: stage({ volume_id: '' }),
    code: S.INVALID_ARGUMENT,
    message: /volume_id is required/,
  },
  {
    name: 'stage with 129-byte id',
    call: stage({ volume_id: 'v'.repeat(129) }),
    code: S.INVALID_ARGUMENT,
    message: /volume_id is 129 bytes/,
  },
  {
    name: 'stage without staging path',
    call: stage({ staging_target_path: '' }),
    code: S.INVALID_ARGUMENT,
    message: /staging_target_path is required/,
  },
  {
    name: 'stage at a relative path',
    call: stage({ staging_target_path: 'var/lib/x' }),
    code: S.INVALID_ARGUMENT,
    message: /staging_target_path must be an absolute path/,
  },
  {
    name: 'stage outside the kubelet dir',
    call: stage({ staging_target_path: '/etc/cron.d' }),
    code: S.INVALID_ARGUMENT,
    message: /staging_target_path \/etc\/cron.d is outside the kubelet directory/,
  },
  {
    name: 'stage escaping the kubelet dir with dot-dot',
    call: stage({ staging_target_path: `${kubelet}/../../etc` }),
    code: S.INVALID_ARGUMENT,
    message: /staging_target_path must not contain '\.\.'/,
  },
  {
    name: 'stage at a path with NUL',
    call: stage({ staging_target_path: `${kubelet}/a\0b` }),
    code: S.INVALID_ARGUMENT,
    message: /staging_target_path contains control/,
  },
  {
    name: 'stage at an oversized path',
    call: stage({ staging_target_path: `${kubelet}/${'p'.repeat(5000)}` }),
    code: S.INVALID_ARGUMENT,
    message: /staging_target_path is longer than 4096/,
  },
  {
    name: 'stage without capability',
    call: stage({ volume_capability: null }),
    code: S.INVALID_ARGUMENT,
    message: /volume_capability is required/,
  },
  {
    name: 'stage with block capability',
    call: stage({ volume_capability: block }),
    code: S.INVALID_ARGUMENT,
    message: /volume_capability: block access/,
  },
  {
    name: 'stage without volume context',
    call: stage({ volume_context: {} }),
    code: S.INVALID_ARGUMENT,
    message: /volume_context: parameter source is required/,
  },
  {
    name: 'stage with unknown context key',
    call: stage({ volume_context: { source: `local://${source}`, hostPath: '/' } }),
    code: S.INVALID_ARGUMENT,
    message: /volume_context: unknown parameter "hostPath"/,
  },
  {
    name: 'stage with traversing subPath',
    call: stage({ volume_context: { source: `local://${source}`, subPath: 'a/../../..' } }),
    code: S.INVALID_ARGUMENT,
    message: /volume_context: parameter subPath/,
  },
  {
    name: 'stage with a missing subPath',
    call: stage({
      volume_id: 'missing-sub',
      volume_context: { source: `local://${source}`, subPath: 'not/there' },
    }),
    code: S.FAILED_PRECONDITION,
    message: /sub-directory "not\/there" does not exist/,
  },
  {
    name: 'stage of a source that looks like a flag',
    call: stage({ volume_context: { source: 'local:///--config=/etc/passwd' } }),
    code: S.FAILED_PRECONDITION,
    message: /source directory \/--config=\/etc\/passwd does not exist on this node/,
  },
  {
    name: 'stage with an s3fs option smuggled in through the endpoint secret',
    call: stage({
      volume_context: { source: 's3://bucket/x', engine: 's3fs' },
      secrets: {
        endpoint: 'http://127.0.0.1:1,allow_root',
        accessKeyId: 'a',
        secretAccessKey: 'b',
      },
    }),
    code: S.INVALID_ARGUMENT,
    message: /secret endpoint must not contain commas/,
  },
  {
    name: 'stage of s3fs with a key id that would move the passwd separator',
    call: stage({
      volume_context: { source: 's3://bucket/x', engine: 's3fs' },
      secrets: { accessKeyId: 'a:b', secretAccessKey: 'c' },
    }),
    code: S.INVALID_ARGUMENT,
    message: /accessKeyId must not contain colons/,
  },
  {
    name: 'stage of s3fs with half the credentials',
    call: stage({
      volume_context: { source: 's3://bucket/x', engine: 's3fs' },
      secrets: { accessKeyId: 'a' },
    }),
    code: S.INVALID_ARGUMENT,
    message: /accessKeyId and secretAccessKey must be given together/,
  },
  // NodePublishVolume
  {
    name: 'publish without id',
    call: publish({ volume_id: '' }),
    code: S.INVALID_ARGUMENT,
    message: /volume_id is required/,
  },
  {
    name: 'publish without target',
    call: publish({ target_path: '' }),
    code: S.INVALID_ARGUMENT,
    message: /target_path is required/,
  },
  {
    name: 'publish onto /etc',
    call: publish({ target_path: '/etc' }),
    code: S.INVALID_ARGUMENT,
    message: /target_path \/etc is outside the kubelet directory/,
  },
  {
    name: 'publish onto the kubelet dir itself',
    call: publish({ target_path: kubelet }),
    code: S.INVALID_ARGUMENT,
    message: /outside the kubelet directory/,
  },
  {
    name: 'publish onto a sibling with the same prefix',
    call: publish({ target_path: `${kubelet}-evil/x` }),
    code: S.INVALID_ARGUMENT,
    message: /outside the kubelet directory/,
  },
  {
    name: 'publish onto a relative target',
    call: publish({ target_path: 'pods/x' }),
    code: S.INVALID_ARGUMENT,
    message: /target_path must be an absolute path/,
  },
  {
    name: 'publish with dot-dot target',
    call: publish({ target_path: `${kubelet}/pods/../../../root` }),
    code: S.INVALID_ARGUMENT,
    message: /target_path must not contain '\.\.'/,
  },
  {
    name: 'publish without staging path',
    call: publish({ staging_target_path: '' }),
    code: S.INVALID_ARGUMENT,
    message: /staging_target_path is required/,
  },
  {
    name: 'publish without capability',
    call: publish({ volume_capability: null }),
    code: S.INVALID_ARGUMENT,
    message: /volume_capability is required/,
  },
  {
    name: 'publish a volume that is not staged',
    call: publish({ volume_id: 'never-staged' }),
    code: S.FAILED_PRECONDITION,
    message: /not staged on this node/,
  },
  // Unpublish, unstage, stats, expand
  {
    name: 'unpublish without id',
    call: (d) => d.client.node.NodeUnpublishVolume({ target_path: `${kubelet}/pods/x` }),
    code: S.INVALID_ARGUMENT,
    message: /volume_id is required/,
  },
  {
    name: 'unpublish without target',
    call: (d) => d.client.node.NodeUnpublishVolume({ volume_id: 'v' }),
    code: S.INVALID_ARGUMENT,
    message: /target_path is required/,
  },
  {
    name: 'unpublish outside the kubelet dir',
    call: (d) => d.client.node.NodeUnpublishVolume({ volume_id: 'v', target_path: '/proc' }),
    code: S.INVALID_ARGUMENT,
    message: /outside the kubelet directory/,
  },
  {
    name: 'unstage without id',
    call: (d) => d.client.node.NodeUnstageVolume({ staging_target_path: `${kubelet}/s` }),
    code: S.INVALID_ARGUMENT,
    message: /volume_id is required/,
  },
  {
    name: 'unstage without path',
    call: (d) => d.client.node.NodeUnstageVolume({ volume_id: 'v' }),
    code: S.INVALID_ARGUMENT,
    message: /staging_target_path is required/,
  },
  {
    name: 'unstage outside the kubelet dir',
    call: (d) => d.client.node.NodeUnstageVolume({ volume_id: 'v', staging_target_path: '/' }),
    code: S.INVALID_ARGUMENT,
    message: /outside the kubelet directory/,
  },
  {
    name: 'stats without id',
    call: (d) => d.client.node.NodeGetVolumeStats({ volume_path: '/x' }),
    code: S.INVALID_ARGUMENT,
    message: /volume_id is required/,
  },
  {
    name: 'stats without path',
    call: (d) => d.client.node.NodeGetVolumeStats({ volume_id: 'v' }),
    code: S.INVALID_ARGUMENT,
    message: /volume_path is required/,
  },
  {
    name: 'stats of an unknown volume',
    call: (d) => d.client.node.NodeGetVolumeStats({ volume_id: 'v', volume_path: '/x' }),
    code: S.NOT_FOUND,
    message: /not staged or published on this node/,
  },
  {
    name: 'expand',
    call: (d) => d.client.node.NodeExpandVolume({ volume_id: 'v', volume_path: '/x' }),
    code: S.UNIMPLEMENTED,
    message: /NodeExpandVolume is not supported/,
  },
];

beforeAll(async () => {
  driver = await startTestDriver({ kubeletDir: kubelet });
});

// Cleans what beforeAll got to make; a failed start must not add an error that hides its own.
afterAll(async () => {
  await driver?.dispose();
  await unmountUnder(root);
  await rm(root, { recursive: true, force: true });
});

describe('bad input', () => {
  it.each(cases().map((c) => [c.name, c] as const))('%s', async (_name, c) => {
    await expect(c.call(driver)).rejects.toEqual(
      expect.objectContaining({ code: c.code, details: expect.stringMatching(c.message) }),
    );
  });
});

it('leaves the driver serving and nothing mounted or running', async () => {
  expect((await driver.client.identity.Probe({})).ready?.value).toBe(true);
  expect((await MountTable.read()).under(kubelet)).toEqual([]);
  expect((await MountTable.read()).under(driver.work)).toEqual([]);
  expect(await recordedClients(driver.stateDir)).toEqual([]);
  expect(await pidsWithArgs('rclone', 'mount', driver.stateDir)).toEqual([]);
});

it('still accepts the same calls when they are well-formed', async () => {
  await writeFile(join(source, 'good.txt'), 'well-formed\n');
  const volume = (
    await driver.client.controller.CreateVolume({
      name: 'good',
      volume_capabilities: [ro],
      parameters: { source: `local://${source}` },
    })
  ).volume;
  expect(volume?.volume_id).toMatch(/\S/);
  if (!volume) throw new Error('no volume');
  expect(
    (await driver.client.controller.ListVolumes({})).entries.map((e) => e.volume?.volume_id),
  ).toEqual([volume.volume_id]);
  const staging = join(kubelet, 'plugins', 'staging', volume.volume_id);
  await driver.client.node.NodeStageVolume({
    volume_id: volume.volume_id,
    staging_target_path: staging,
    volume_capability: ro,
    volume_context: volume.volume_context,
  });
  // Staged: the dataset is mounted at the staging path and serves the source's file.
  expect((await MountTable.read()).under(staging).length).toBeGreaterThan(0);
  expect(await readFile(join(staging, 'good.txt'), 'utf8')).toBe('well-formed\n');
  await driver.client.node.NodeUnstageVolume({
    volume_id: volume.volume_id,
    staging_target_path: staging,
  });
  expect((await MountTable.read()).under(staging)).toEqual([]);
  await driver.client.controller.DeleteVolume({ volume_id: volume.volume_id });
  expect((await driver.client.controller.ListVolumes({})).entries).toEqual([]);
});
