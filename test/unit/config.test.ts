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
    });
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
