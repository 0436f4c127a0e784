// S3 credentials are checked as S3 checks them: the test server's signature front answers wrong secrets and unknown keys with S3's errors, and a stage with them fails naming the refusal, per engine.
import { request } from 'node:http';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { Hash } from '@smithy/hash-node';
import { SignatureV4 } from '@smithy/signature-v4';
import { S3Server } from '../../src/demo/s3-server.js';
import { MountTable } from '../../src/kernel/mountinfo.js';
import { recordedClients } from '../helpers/cleanup.js';
import { mountCapability, startTestDriver, type TestDriver } from '../helpers/driver.js';
import { sha256File, writeRandomFile } from '../helpers/files.js';
import { Kubelet } from '../helpers/kubelet.js';

const MiB = 2 ** 20;
const cap = mountCapability('MULTI_NODE_READER_ONLY');
const tenant = { accessKeyId: 'TENANT', secretAccessKey: `t-${Math.random().toString(36)}` };
let driver: TestDriver;
let kubelet: Kubelet;
let s3: S3Server;
let digest: string;

beforeAll(async () => {
  driver = await startTestDriver();
  kubelet = new Kubelet(driver.work, () => driver.client, cap);
  const data = join(driver.work, 'data');
  await mkdir(data);
  await writeRandomFile(join(data, 'weights.bin'), 8 * MiB);
  await writeFile(join(data, 'README'), 'a dataset\n');
  digest = await sha256File(join(data, 'weights.bin'));
  await mkdir(join(driver.work, 's3'));
  s3 = await S3Server.start(join(driver.work, 's3'), ['datasets'], [tenant]);
  await s3.upload(data, 'datasets/set');
}, 120_000);

afterAll(async () => {
  await s3?.stop();
  await driver?.dispose();
});

interface Answer {
  status: number;
  body: string;
  /** Whether the server asked for the body (100 Continue) before it answered. */
  continued: boolean;
}

interface Outgoing {
  method: string;
  path: string;
  query?: Record<string, string>;
  headers?: Record<string, string>;
  body?: string;
}

/** A request as smithy's signer takes and returns it. */
interface Wire {
  method: string;
  protocol: string;
  hostname: string;
  port?: number;
  path: string;
  query?: Record<string, string | string[] | null>;
  headers: Record<string, string>;
}

/** The request line and headers as the client sends them: `host` is part of what is signed. */
function unsigned({ method, path, query = {}, headers = {} }: Outgoing): Wire {
  const { hostname, port } = new URL(s3.endpoint);
  return {
    method,
    protocol: 'http:',
    hostname,
    port: Number(port),
    path,
    query,
    headers: { host: `${hostname}:${port}`, ...headers },
  };
}

const signer = (keys: { accessKeyId: string; secretAccessKey: string }) =>
  new SignatureV4({
    credentials: keys,
    region: 'us-east-1',
    service: 's3',
    sha256: Hash.bind(null, 'sha256'),
    // S3's canonical path is the path encoded once (smithy's default encodes it twice).
    uriEscapePath: false,
  });

/** Sends a request as smithy built it; waits for 100 Continue before a body when it asks to. */
function send(built: Wire, body: string | undefined): Promise<Answer> {
  const search = new URLSearchParams(
    Object.entries(built.query ?? {}).flatMap(([name, value]) =>
      [value ?? ''].flat().map((one): [string, string] => [name, one]),
    ),
  )
    .toString()
    .replace(/\+/g, '%20');
  return new Promise((resolve, reject) => {
    let continued = false;
    const req = request(
      {
        method: built.method,
        host: built.hostname,
        port: built.port,
        path: search === '' ? built.path : `${built.path}?${search}`,
        headers: built.headers,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => {
          // A refused upload's body stays unsent: the request ends here.
          if (!req.writableEnded) req.destroy();
          resolve({
            status: res.statusCode ?? 0,
            body: Buffer.concat(chunks).toString(),
            continued,
          });
        });
      },
    );
    req.on('error', reject);
    if (built.headers.expect === '100-continue') {
      req.on('continue', () => {
        continued = true;
        req.end(body);
      });
    } else {
      req.end(body);
    }
  });
}

async function signedSend(
  keys: { accessKeyId: string; secretAccessKey: string },
  outgoing: Outgoing,
): Promise<Answer> {
  const signed = await signer(keys).sign({ ...unsigned(outgoing), body: outgoing.body });
  return send({ ...unsigned(outgoing), headers: signed.headers }, outgoing.body);
}

const code = (answer: Answer) => /<Code>([^<]*)<\/Code>/.exec(answer.body)?.[1];
const BUILT_IN = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' };
const list: Outgoing = { method: 'GET', path: '/datasets', query: { prefix: 'set/' } };

describe('the signature front of the test S3 server', () => {
  it('passes a request signed with a known key pair and answers the rest as S3 does', async () => {
    for (const keys of [BUILT_IN, tenant]) {
      const answer = await signedSend(keys, list);
      expect(answer.status).toBe(200);
      expect(answer.body).toContain('<Key>set/weights.bin</Key>');
    }

    const wrongSecret = await signedSend({ ...tenant, secretAccessKey: 'guessed' }, list);
    expect(wrongSecret.status).toBe(403);
    expect(code(wrongSecret)).toBe('SignatureDoesNotMatch');
    expect(wrongSecret.body).not.toContain('weights.bin');

    const unknownKey = await signedSend({ accessKeyId: 'NOBODY', secretAccessKey: 'x' }, list);
    expect(unknownKey.status).toBe(403);
    expect(code(unknownKey)).toBe('InvalidAccessKeyId');

    // Real S3 refuses anonymous requests to a private bucket; s3rver alone would answer them.
    const anonymous = await send(unsigned(list), undefined);
    expect(anonymous.status).toBe(403);
    expect(code(anonymous)).toBe('AccessDenied');

    // A signature made for one request does not authorise another (here: another prefix).
    const signed = await signer(BUILT_IN).sign(unsigned(list));
    const replayed = await send(
      { ...unsigned({ ...list, query: { prefix: 'other/' } }), headers: signed.headers },
      undefined,
    );
    expect(replayed.status).toBe(403);
    expect(code(replayed)).toBe('SignatureDoesNotMatch');
  });

  it('checks uploads before their body: hashed, unsigned and streaming payloads', async () => {
    const put = (key: string, payload: string, headers: Record<string, string> = {}): Outgoing => ({
      method: 'PUT',
      path: `/datasets/uploads/${key}`,
      headers: { 'content-length': String(Buffer.byteLength(payload)), ...headers },
      body: payload,
    });
    // A payload digest smithy computes (x-amz-content-sha256 of the body).
    expect((await signedSend(tenant, put('hashed.txt', 'hashed\n'))).status).toBe(200);
    expect(await s3.cat('datasets/uploads/hashed.txt')).toBe('hashed\n');
    const unsignedPayload = { 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD' };
    expect((await signedSend(tenant, put('u.txt', 'u\n', unsignedPayload))).status).toBe(200);
    expect(await s3.cat('datasets/uploads/u.txt')).toBe('u\n');

    // A wrong secret with Expect: 100-continue is refused before the client sends the body.
    const waiting = { ...unsignedPayload, expect: '100-continue' };
    const refused = await signedSend(
      { ...tenant, secretAccessKey: 'guessed' },
      put('refused.txt', 'x'.repeat(MiB), waiting),
    );
    expect(refused).toMatchObject({ status: 403, continued: false });
    expect(code(refused)).toBe('SignatureDoesNotMatch');
    const accepted = await signedSend(tenant, put('waited.txt', 'waited\n', waiting));
    expect(accepted).toMatchObject({ status: 200, continued: true });
    expect(await s3.list('datasets/uploads')).toEqual(['hashed.txt', 'u.txt', 'waited.txt']);

    // Streaming (aws-chunked) uploads: the front verifies the seed signature in the headers; a
    // wrong secret fails there. (Chunk signatures are not verified, nor decoded by s3rver.)
    const streaming = put('streamed.txt', 'ignored', {
      'x-amz-content-sha256': 'STREAMING-AWS4-HMAC-SHA256-PAYLOAD',
      'content-encoding': 'aws-chunked',
      'x-amz-decoded-content-length': '7',
    });
    const wrongSeed = await signedSend({ ...tenant, secretAccessKey: 'guessed' }, streaming);
    expect(wrongSeed.status).toBe(403);
    expect(code(wrongSeed)).toBe('SignatureDoesNotMatch');
    expect(await s3.list('datasets/uploads')).not.toContain('streamed.txt');
  });

  it('verifies presigned URLs (query-string SigV4)', async () => {
    const object: Outgoing = { method: 'GET', path: '/datasets/set/README' };
    // As AWS's S3 presigner does it: the payload is never signed (UNSIGNED-PAYLOAD).
    const presign = (keys: typeof tenant, outgoing: Outgoing) =>
      signer(keys).presign(
        unsigned({ ...outgoing, headers: { 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD' } }),
        { expiresIn: 300 },
      );
    const good = await presign(tenant, object);
    expect(await send(good, undefined)).toMatchObject({ status: 200, body: 'a dataset\n' });
    const wrong = await send(
      await presign({ ...tenant, secretAccessKey: 'guessed' }, object),
      undefined,
    );
    expect(wrong.status).toBe(403);
    expect(code(wrong)).toBe('SignatureDoesNotMatch');
    // The URL's signature covers the path: it opens no other object.
    const moved = await send({ ...good, path: '/datasets/set/weights.bin' }, undefined);
    expect(moved.status).toBe(403);
    expect(code(moved)).toBe('SignatureDoesNotMatch');
  });
});

for (const engine of ['rclone', 's3fs']) {
  it(`${engine}: a stage with a wrong secret fails naming the refusal; the right one reads the data`, async () => {
    const { controller } = driver.client;
    const ids: string[] = [];
    const make = async (name: string) => {
      const { volume } = await controller.CreateVolume({
        name: `${engine}-${name}`,
        volume_capabilities: [cap],
        parameters: { source: 's3://datasets/set', engine },
      });
      if (!volume) throw new Error('no volume');
      ids.push(volume.volume_id);
      return volume;
    };
    const secretsOf = (keys: typeof tenant) => ({ ...s3.secrets(), ...keys });
    try {
      for (const [keys, refusal] of [
        [{ ...tenant, secretAccessKey: 'guessed' }, 'SignatureDoesNotMatch'],
        [{ accessKeyId: 'NOBODY', secretAccessKey: 'guessed' }, 'InvalidAccessKeyId'],
      ] as const) {
        const volume = await make(`refused-${keys.accessKeyId.toLowerCase()}`);
        const err = await kubelet.stage(volume, secretsOf(keys)).then(
          () => undefined,
          (e: { code: number; details: string }) => e,
        );
        expect(err?.code).toBe(grpc.status.UNAVAILABLE);
        if (engine === 'rclone') {
          // rclone's mount logs S3's answer before the driver's listing fails; it is in the tail.
          expect(err?.details).toMatch(new RegExp(`cannot list the remote .*IO error: ${refusal}`));
        } else {
          // s3fs exits on the refusal and its log (written out only at exit) says only "invalid
          // credentials"; whichever of the driver's checks notices first, the message carries
          // S3's own answer.
          expect(err?.details).toMatch(
            new RegExp(
              `(its remote refused a request \\(|the remote answers: )error listing: ${refusal}`,
            ),
          );
        }
        expect(err?.details).not.toContain(keys.secretAccessKey);
        expect((await MountTable.read()).at(kubelet.staging(volume.volume_id))).toBeUndefined();
        expect(await recordedClients(driver.stateDir)).toEqual([]);
      }

      const volume = await make('tenant');
      await kubelet.stage(volume, secretsOf(tenant));
      await kubelet.publish(volume.volume_id, `${engine}-reader`, true);
      expect(await sha256File(join(kubelet.target(`${engine}-reader`), 'weights.bin'))).toBe(
        digest,
      );
      await kubelet.stop(volume.volume_id, [`${engine}-reader`]);
    } finally {
      for (const id of ids) {
        const staged = (await MountTable.read()).at(kubelet.staging(id));
        if (staged) {
          await driver.client.node.NodeUnpublishVolume({
            volume_id: id,
            target_path: kubelet.target(`${engine}-reader`),
          });
          await driver.client.node.NodeUnstageVolume({
            volume_id: id,
            staging_target_path: kubelet.staging(id),
          });
        }
        await controller.DeleteVolume({ volume_id: id });
      }
    }
    expect(await recordedClients(driver.stateDir)).toEqual([]);
    expect((await MountTable.read()).under(driver.work)).toEqual([]);
    expect(await readdir(join(driver.stateDir, 'datasets')).catch(() => [])).toEqual([]);
    expect(await driver.log()).not.toContain(tenant.secretAccessKey);
  });
}
