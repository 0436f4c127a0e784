// Volume parameters, sources, dataset keys and quantities: what a StorageClass may say and what it means.
import { datasetKey, KNOWN_KEYS, parseVolumeParameters } from '../../src/dataset/params.js';
import { ParameterError } from '../../src/dataset/parameter-error.js';
import { parseDuration, parseQuantity } from '../../src/dataset/quantity.js';
import { formatSource, parseSource } from '../../src/dataset/source.js';

describe('parseSource', () => {
  it.each([
    ['s3://bucket/prefix/', 's3', 'bucket', '/prefix'],
    ['sftp://alice@Host.example:2222/data', 'sftp', 'host.example:2222', '/data'],
    ['webdav://127.0.0.1:8080/dav//sets/', 'webdav', '127.0.0.1:8080', '/dav/sets'],
    ['webdavs://nas/x', 'webdav', 'nas', '/x'],
    ['https://example.org/files', 'http', 'example.org', '/files'],
    ['local:///mnt/nfs/imagenet', 'local', '', '/mnt/nfs/imagenet'],
  ])('%s', (url, kind, authority, path) => {
    const source = parseSource(url);
    expect(source).toMatchObject({ kind, authority, path });
  });

  it('normalizes equal locations to equal text', () => {
    expect(formatSource(parseSource('webdav://HOST:80/a/b/'))).toBe(
      formatSource(parseSource('webdav://host:80/a//b')),
    );
    expect(formatSource(parseSource('sftp://bob@h/p'))).toBe('sftp://bob@h/p');
  });

  it.each([
    ['ftp://host/x', /scheme/],
    ['not a url', /not a URL/],
    ['webdav://user:pw@host/x', /password/],
    ['local://host/x', /local:\/\/\/absolute/],
    ['local:///', /below \//],
    ['local:///data/../etc', /'\.\.'/],
    ['webdav://host/a%2F..%2Fb', /'\.\.'/],
    ['http://host/x?token=1', /query/],
    ['s3://bucket:9000/x', /endpoint/],
  ])('rejects %s', (url, message) => {
    expect(() => parseSource(url)).toThrow(message);
  });
});

describe('parseVolumeParameters', () => {
  it('applies defaults', () => {
    const params = parseVolumeParameters({ source: 'webdav://h/x' });
    expect(params.dataset).toMatchObject({
      engine: 'rclone',
      readOnly: false,
      cache: { medium: 'MEM', quotaBytes: 2 * 2 ** 30 },
    });
    expect(params).toMatchObject({
      layout: 'shared',
      onDelete: 'retain',
      subPath: '',
      prefetch: [],
      // Sweep fills are on unless a volume turns them off.
      autoPrefetch: true,
      keepWarmMs: 0,
    });
  });

  it('reads every supported key', () => {
    const given: Record<string, string> = {
      source: 'sftp://h/data',
      engine: 'rclone',
      cacheMedium: 'SSD',
      cachePath: '/var/cache/dcsi/',
      cacheQuota: '15Gi',
      layout: 'subdir',
      onDelete: 'delete',
      readOnly: 'true',
      bandwidthLimit: '100M',
      subPath: 'team-a/./set/',
      prefetch: 'train/**/*.jpg, meta/ ,*.parquet',
      autoPrefetch: 'false',
      keepWarm: '1h30m',
      localCopy: 'true',
      clusterTier: 'true',
      uid: '1000',
      gid: '2000',
      fileMode: '0640',
      dirMode: '750',
    };
    // Every key the parser knows is given here: a key added to the schema fails this test until
    // it is read (and asserted) below.
    expect(Object.keys(given).sort()).toEqual([...KNOWN_KEYS].sort());
    const params = parseVolumeParameters({ ...given, 'csi.storage.k8s.io/pvc/name': 'claim' });
    expect(params.prefetch).toEqual([
      { glob: 'train/**/*.jpg', metadataOnly: false },
      { glob: 'meta/**', metadataOnly: true },
      { glob: '*.parquet', metadataOnly: false },
    ]);
    expect(params.autoPrefetch).toBe(false);
    expect(params.keepWarmMs).toBe(90 * 60_000);
    expect(params.dataset.source).toMatchObject({ kind: 'sftp', authority: 'h', path: '/data' });
    expect(params.dataset.engine).toBe('rclone');
    expect(params.dataset.cache).toEqual({
      medium: 'SSD',
      path: '/var/cache/dcsi',
      quotaBytes: 15 * 2 ** 30,
    });
    expect(params.dataset.bandwidthLimit).toBe(100e6);
    expect(params.dataset.readOnly).toBe(true);
    expect(params.dataset.localCopy).toBe(true);
    expect(params.dataset.clusterTier).toBe(true);
    expect(params.dataset.ownership).toEqual({
      uid: 1000,
      gid: 2000,
      fileMode: 0o640,
      dirMode: 0o750,
    });
    expect(params.subPath).toBe('team-a/set');
    expect(params.layout).toBe('subdir');
    expect(params.onDelete).toBe('delete');
  });

  it('reads localCopy and clusterTier as given, not only as defaulted', () => {
    // localCopy defaults to true for read-only rclone datasets: "false" must turn it off.
    const off = parseVolumeParameters({ source: 'http://h/x', localCopy: 'false' });
    expect(off.dataset.localCopy).toBe(false);
    expect(off.dataset.clusterTier).toBeUndefined();
    const on = parseVolumeParameters({ source: 'http://h/x' });
    expect(on.dataset.localCopy).toBe(true);
    expect(on.dataset.clusterTier).toBeUndefined();
    expect(
      parseVolumeParameters({ source: 'http://h/x', clusterTier: 'false' }).dataset.clusterTier,
    ).toBeUndefined();
  });

  it('makes HTTP sources read-only', () => {
    expect(parseVolumeParameters({ source: 'http://h/x' }).dataset.readOnly).toBe(true);
  });

  it.each([
    [{}, /source is required/],
    [{ source: 'webdav://h/x', colour: 'blue' }, /unknown parameter "colour"/],
    [{ source: 'webdav://h/x', engine: 'juicefs' }, /engine="juicefs"/],
    [{ source: 'webdav://h/x', cacheMedium: 'RAM' }, /cacheMedium="RAM"/],
    [{ source: 'webdav://h/x', cacheQuota: '15 GB' }, /cacheQuota="15 GB"/],
    [{ source: 'webdav://h/x', cacheQuota: '0' }, /cacheQuota="0"/],
    [{ source: 'webdav://h/x', cachePath: '/x' }, /cachePath applies only/],
    [{ source: 'webdav://h/x', cacheMedium: 'SSD', cachePath: 'rel' }, /cachePath="rel"/],
    [{ source: 'webdav://h/x', readOnly: 'yes' }, /readOnly="yes"/],
    [{ source: 'webdav://h/x', subPath: '../other' }, /subPath/],
    [{ source: 'webdav://h/x', subPath: '/abs' }, /subPath/],
    [{ source: 'webdav://h/x', bandwidthLimit: 'fast' }, /bandwidthLimit="fast"/],
    [
      { source: 'webdav://h/x', prefetch: '/etc/**' },
      /prefetch pattern "\/etc\/\*\*" must be relative/,
    ],
    [{ source: 'webdav://h/x', prefetch: 'a/../../b' }, /must not contain '\.\.'/],
    [{ source: 'webdav://h/x', keepWarm: '10 minutes' }, /keepWarm="10 minutes"/],
    [{ source: 'webdav://h/x', keepWarm: '200h' }, /at most 168h/],
    [
      { source: 's3://b', engine: 's3fs', bandwidthLimit: '10M' },
      /bandwidthLimit needs engine rclone/,
    ],
    [{ source: 'webdav://h/x', layout: 'nested' }, /layout="nested"/],
    [{ source: 'webdav://h/x', engine: 's3fs' }, /engine=s3fs serves only s3:\/\/ sources/],
    [{ source: 'webdav://h/x', uid: '-1' }, /uid="-1" is not a numeric id/],
    [{ source: 'webdav://h/x', gid: '1e3' }, /gid="1e3" is not a numeric id/],
    [{ source: 'webdav://h/x', uid: '4294967295' }, /uid="4294967295" is not a numeric id/],
    [{ source: 'webdav://h/x', fileMode: '4755' }, /fileMode="4755" is not an octal mode/],
    [{ source: 'webdav://h/x', dirMode: '0999' }, /dirMode="0999" is not an octal mode/],
    [{ source: 'webdav://h/x', dirMode: 'rwxr-x---' }, /dirMode="rwxr-x---"/],
    [{ source: 's3://b', engine: 's3fs', fileMode: '0644' }, /fileMode needs engine rclone/],
    [{ source: 'webdav://h/x', clusterTier: 'true' }, /clusterTier=true needs a local copy/],
    [
      { source: 'http://h/x', clusterTier: 'true', localCopy: 'false' },
      /clusterTier=true needs a local copy/,
    ],
    [{ source: 'http://h/x', clusterTier: 'yes' }, /clusterTier="yes"/],
  ])('rejects %j', (params, message) => {
    expect(() => parseVolumeParameters(params as Record<string, string>)).toThrow(ParameterError);
    expect(() => parseVolumeParameters(params as Record<string, string>)).toThrow(message);
  });
});

describe('datasetKey', () => {
  const key = (params: Record<string, string>) => datasetKey(parseVolumeParameters(params).dataset);

  it('is shared by equal data and ignores tuning', () => {
    expect(key({ source: 'webdav://h/x/' })).toBe(
      key({ source: 'webdav://H/x', cacheQuota: '9Gi', bandwidthLimit: '1M' }),
    );
    expect(key({ source: 'webdav://h/x' })).toMatch(/^ds-[0-9a-f]{16}$/);
    // The cluster tier changes where bytes come from, never which bytes.
    expect(key({ source: 'http://h/x', clusterTier: 'true' })).toBe(key({ source: 'http://h/x' }));
  });

  it('takes owner and modes as given', () => {
    expect(
      parseVolumeParameters({
        source: 'webdav://h/x',
        uid: '1000',
        gid: '0',
        fileMode: '664',
        dirMode: '0775',
      }).dataset.ownership,
    ).toEqual({ uid: 1000, gid: 0, fileMode: 0o664, dirMode: 0o775 });
    expect(parseVolumeParameters({ source: 'webdav://h/x' }).dataset.ownership).toBeUndefined();
  });

  it('differs for another owner or mode: a reader sees other permissions', () => {
    expect(key({ source: 'webdav://h/x' })).not.toBe(key({ source: 'webdav://h/x', uid: '1000' }));
    expect(key({ source: 'webdav://h/x', dirMode: '0775' })).not.toBe(
      key({ source: 'webdav://h/x', dirMode: '0770' }),
    );
  });

  it('differs for other data or writability', () => {
    expect(key({ source: 'webdav://h/x' })).not.toBe(key({ source: 'webdav://h/y' }));
    expect(key({ source: 'webdav://h/x' })).not.toBe(
      key({ source: 'webdav://h/x', readOnly: 'true' }),
    );
  });
});

describe('quantities', () => {
  it.each([
    ['1Gi', 2 ** 30],
    ['500Mi', 500 * 2 ** 20],
    ['1.5Ki', 1536],
    ['100M', 1e8],
    ['42', 42],
    ['1e3', undefined],
    ['-1Gi', undefined],
    ['Gi', undefined],
  ])('parseQuantity(%s)', (text, bytes) => expect(parseQuantity(text)).toBe(bytes));

  it.each([
    ['10m', 600_000],
    ['1h30m', 5_400_000],
    ['250ms', 250],
    ['10', undefined],
  ])('parseDuration(%s)', (text, ms) => expect(parseDuration(text)).toBe(ms));
});
