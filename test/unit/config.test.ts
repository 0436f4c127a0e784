import { ConfigError, parseConfig } from '../../src/config.js';
import { socketPathFromEndpoint } from '../../src/csi/server.js';

describe('parseConfig', () => {
  it('reads flags and defaults', () => {
    const config = parseConfig(['--endpoint', 'unix:///csi/csi.sock', '--node-id', 'n1'], {});
    expect(config).toMatchObject({
      endpoint: 'unix:///csi/csi.sock',
      nodeId: 'n1',
      mode: 'all',
      stateDir: '/var/lib/dataset-cache-csi',
      diskCacheLimitBytes: 100 * 2 ** 30,
      cacheRetentionMs: 168 * 3_600_000,
      flushTimeoutMs: 120_000,
    });
  });

  it('reads the node cache budgets', () => {
    const config = parseConfig(
      [
        '--endpoint=unix:///s.sock',
        '--node-id=n',
        '--disk-cache-limit=500Gi',
        '--cache-retention=36h',
        '--flush-timeout=30s',
      ],
      {},
    );
    expect(config).toMatchObject({
      diskCacheLimitBytes: 500 * 2 ** 30,
      cacheRetentionMs: 36 * 3_600_000,
      flushTimeoutMs: 30_000,
    });
  });

  it('reads the cluster tier', () => {
    const config = parseConfig(
      [
        '--endpoint=unix:///s.sock',
        '--node-id=n',
        '--cluster-tier=s3://datasets-cache/tier',
        '--cluster-tier-endpoint=http://minio.storage:9000',
        '--cluster-tier-region=us-east-1',
        '--cluster-tier-credentials=/etc/dataset-cache-csi/cluster-tier',
        '--cluster-tier-upload-limit=50M',
        '--cluster-tier-member-refresh=2s',
      ],
      {},
    );
    expect(config.clusterTier).toEqual({
      location: 's3://datasets-cache/tier',
      endpoint: 'http://minio.storage:9000',
      region: 'us-east-1',
      credentialsDir: '/etc/dataset-cache-csi/cluster-tier',
      transfers: 8,
      uploadBandwidth: 50e6,
      memberRefreshMs: 2000,
    });
    const tierFlags = ['--endpoint=unix:///s.sock', '--node-id=n', '--cluster-tier=s3://b/t'];
    expect(parseConfig(tierFlags, {}).clusterTier?.memberRefreshMs).toBe(5000);
    for (const refresh of ['50ms', 'soon', '1h']) {
      expect(() =>
        parseConfig([...tierFlags, `--cluster-tier-member-refresh=${refresh}`], {}),
      ).toThrow(/cluster-tier-member-refresh must be/);
    }
    expect(
      parseConfig(['--endpoint=unix:///s.sock', '--node-id=n'], {}).clusterTier,
    ).toBeUndefined();
  });

  it('takes the node id from KUBE_NODE_NAME', () => {
    expect(
      parseConfig(['--endpoint', 'unix:///s.sock'], { KUBE_NODE_NAME: 'worker-7' }).nodeId,
    ).toBe('worker-7');
  });

  it.each([
    [['--node-id', 'n'], /endpoint/],
    [['--endpoint', 'unix:///s.sock'], /nodeId/],
    [['--endpoint', 'tcp://1.2.3.4:5', '--node-id', 'n'], /unix:\/\/\//],
    [['--endpoint', 'unix:///s.sock', '--node-id', 'n', '--mode', 'both'], /mode/],
    [['--endpoint', 'unix:///s.sock', '--node-id', 'n', '--driver-name', '9bad'], /driver-name/],
    [['--endpoint', 'unix:///s.sock', '--node-id', 'n', '--state-dir', 'rel'], /state-dir/],
    [['--bogus'], /bogus/],
    [['--endpoint=unix:///s.sock', '--node-id=n', '--disk-cache-limit=lots'], /disk-cache-limit/],
    [['--endpoint=unix:///s.sock', '--node-id=n', '--cache-retention=7d'], /cache-retention/],
    [['--endpoint=unix:///s.sock', '--node-id=n', '--cluster-tier=http://x/y'], /cluster-tier/],
    [['--endpoint=unix:///s.sock', '--node-id=n', '--cluster-tier=s3://b/../c'], /cluster-tier/],
    [
      ['--endpoint=unix:///s.sock', '--node-id=n', '--cluster-tier-region=eu-1'],
      /--cluster-tier-region needs --cluster-tier/,
    ],
    [
      [
        '--endpoint=unix:///s.sock',
        '--node-id=n',
        '--cluster-tier=s3://b',
        '--cluster-tier-endpoint=minio',
      ],
      /cluster-tier-endpoint/,
    ],
    [
      [
        '--endpoint=unix:///s.sock',
        '--node-id=n',
        '--cluster-tier=s3://b',
        '--cluster-tier-credentials=rel',
      ],
      /cluster-tier-credentials/,
    ],
    [
      [
        '--endpoint=unix:///s.sock',
        '--node-id=n',
        '--cluster-tier=s3://b',
        '--cluster-tier-upload-limit=fast',
      ],
      /cluster-tier-upload-limit/,
    ],
  ])('rejects %j', (argv, message) => {
    expect(() => parseConfig(argv, {})).toThrow(ConfigError);
    expect(() => parseConfig(argv, {})).toThrow(message);
  });
});

describe('socketPathFromEndpoint', () => {
  it('rejects paths the kernel would truncate', () => {
    expect(socketPathFromEndpoint(`unix:///${'a'.repeat(106)}`)).toHaveLength(107);
    expect(() => socketPathFromEndpoint(`unix:///${'a'.repeat(107)}`)).toThrow(
      /108 bytes|at most 107/,
    );
  });
});
