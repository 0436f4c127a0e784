// An HTTP front that verifies AWS Signature Version 4 before s3rver sees a request: s3rver checks key ids but never the V4 signature itself.
import {
  createServer,
  type IncomingHttpHeaders,
  type RequestListener,
  type Server,
} from 'node:http';
import { timingSafeEqual } from 'node:crypto';
import { Hash } from '@smithy/hash-node';
import { createScope, getCanonicalQuery, getSigningKey } from '@smithy/signature-v4';

export interface S3KeyPair {
  accessKeyId: string;
  secretAccessKey: string;
}

/** What the front answers instead of passing a request on, with S3's own codes and messages. */
export interface Refusal {
  status: number;
  code: string;
  message: string;
  /** Further elements of S3's <Error> document (e.g. the key id, the canonical request). */
  details: Record<string, string>;
}

/** The parts of a request the signature covers; the body is not among them (see checkSignature). */
export interface SignedRequest {
  method?: string;
  url?: string;
  headers: IncomingHttpHeaders;
}

const ALGORITHM = 'AWS4-HMAC-SHA256';

/** A query as smithy's canonical-query helper takes it. */
type QueryParameterBag = NonNullable<Parameters<typeof getCanonicalQuery>[0]['query']>;

/** SHA-256 in the shape smithy's key derivation constructs (`new ctor(secret)`). */
class Sha256 extends Hash {
  constructor(secret?: ConstructorParameters<typeof Hash>[1]) {
    super('sha256', secret);
  }
}

const refusal = (
  status: number,
  code: string,
  message: string,
  details: Record<string, string> = {},
): Refusal => ({ status, code, message, details });

const accessDenied = () => refusal(403, 'AccessDenied', 'Access Denied');

/** RFC 3986 percent-encoding of everything but unreserved characters, as SigV4 requires. */
const escape = (text: string): string =>
  encodeURIComponent(text).replace(
    /[!'()*]/g,
    (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`,
  );

/** A percent-encoded component decoded, or as it is when it is not valid encoding. */
function decode(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

/**
 * SigV4's canonical URI: each path segment encoded once, whatever encoding the client chose on the
 * wire (S3 neither normalises `.`/`..` nor double-encodes).
 */
const canonicalPath = (rawPath: string): string =>
  rawPath
    .split('/')
    .map((segment) => escape(decode(segment)))
    .join('/');

/** The query decoded to names and values ('+' as a space, as s3rver's parser reads it too). */
function parseQuery(rawQuery: string): QueryParameterBag {
  const query: Record<string, string | string[]> = {};
  for (const pair of rawQuery.split('&')) {
    if (pair === '') continue;
    const at = pair.indexOf('=');
    const name = decode((at < 0 ? pair : pair.slice(0, at)).replace(/\+/g, ' '));
    const value = at < 0 ? '' : decode(pair.slice(at + 1).replace(/\+/g, ' '));
    const before = query[name];
    query[name] = before === undefined ? value : [before, value].flat();
  }
  return query;
}

const headerValue = (headers: IncomingHttpHeaders, name: string): string | undefined => {
  const value = headers[name];
  return Array.isArray(value) ? value.join(',') : value;
};

/** One signature's inputs, from the Authorization header or from a presigned URL's query. */
interface Claim {
  accessKeyId: string;
  shortDate: string;
  region: string;
  service: string;
  signedHeaders: string[];
  signature: string;
  longDate: string;
  payloadHash: string;
}

function parseCredential(
  credential: string,
): Omit<Claim, 'signedHeaders' | 'signature' | 'longDate' | 'payloadHash'> | undefined {
  // Key id, then the scope: date, region, service and the terminator.
  const parts = credential.split('/');
  if (parts.length < 5 || parts.at(-1) !== 'aws4_request') return undefined;
  const [shortDate, region, service] = parts.slice(-4) as [string, string, string];
  return { accessKeyId: parts.slice(0, -4).join('/'), shortDate, region, service };
}

function headerClaim(authorization: string, headers: IncomingHttpHeaders): Claim | Refusal {
  const malformed = (why: string) =>
    refusal(400, 'AuthorizationHeaderMalformed', `The authorization header is malformed; ${why}`);
  const fields = new Map(
    authorization
      .slice(ALGORITHM.length)
      .split(',')
      .map((field) => field.trim())
      .map((field) => [field.slice(0, field.indexOf('=')), field.slice(field.indexOf('=') + 1)]),
  );
  const credential = fields.get('Credential');
  const signedHeaders = fields.get('SignedHeaders');
  const signature = fields.get('Signature');
  if (credential === undefined || signedHeaders === undefined || signature === undefined) {
    return malformed('it requires Credential, SignedHeaders and Signature.');
  }
  const scope = parseCredential(credential);
  if (scope === undefined) return malformed(`the Credential is mal-formed: ${credential}.`);
  const longDate = headerValue(headers, 'x-amz-date') ?? '';
  if (!longDate.startsWith(scope.shortDate)) {
    return malformed('Invalid credential date. Date is not the same as X-Amz-Date.');
  }
  const payloadHash = headerValue(headers, 'x-amz-content-sha256');
  if (payloadHash === undefined) {
    return refusal(
      400,
      'InvalidRequest',
      'Missing required header for this request: x-amz-content-sha256',
    );
  }
  return {
    ...scope,
    signedHeaders: signedHeaders.split(';'),
    signature,
    longDate,
    payloadHash,
  };
}

function queryClaim(query: QueryParameterBag): Claim | Refusal {
  const one = (name: string) => {
    const value = query[name];
    return Array.isArray(value) ? undefined : (value ?? undefined);
  };
  const credential = one('X-Amz-Credential');
  const signedHeaders = one('X-Amz-SignedHeaders');
  const signature = one('X-Amz-Signature');
  const longDate = one('X-Amz-Date');
  const scope = credential === undefined ? undefined : parseCredential(credential);
  if (
    one('X-Amz-Algorithm') !== ALGORITHM ||
    scope === undefined ||
    signedHeaders === undefined ||
    signature === undefined ||
    longDate === undefined
  ) {
    return refusal(
      400,
      'AuthorizationQueryParametersError',
      'Query-string authentication version 4 requires the X-Amz-Algorithm, X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires parameters.',
    );
  }
  // s3rver checks X-Amz-Expires itself; the payload of a presigned request is never signed.
  return {
    ...scope,
    signedHeaders: signedHeaders.split(';'),
    signature,
    longDate,
    payloadHash: 'UNSIGNED-PAYLOAD',
  };
}

const isRefusal = (value: Claim | Refusal): value is Refusal => 'code' in value;

/**
 * Whether `request` carries a valid SigV4 signature by one of `secrets` (key id to secret): undefined
 * when it may pass, else S3's answer. Only the request line and headers are read, never the body:
 * a `x-amz-content-sha256` digest is taken as the client states it (S3 would also compare it with
 * the body), and a STREAMING-AWS4-HMAC-SHA256-PAYLOAD upload is verified by its seed signature,
 * the one in the Authorization header, not chunk by chunk. Requests signed the older way (V2) are
 * left to s3rver, which verifies those itself; a request without any signature is refused as S3
 * refuses it for a private bucket.
 */
export async function checkSignature(
  request: SignedRequest,
  secrets: ReadonlyMap<string, string>,
): Promise<Refusal | undefined> {
  const { headers } = request;
  const method = request.method ?? 'GET';
  const url = request.url ?? '/';
  const at = url.indexOf('?');
  const rawPath = at < 0 ? url : url.slice(0, at);
  const query = parseQuery(at < 0 ? '' : url.slice(at + 1));
  const authorization = headerValue(headers, 'authorization');

  let claim: Claim | Refusal;
  if (authorization?.startsWith(`${ALGORITHM} `)) {
    claim = headerClaim(authorization, headers);
  } else if (authorization !== undefined || 'Signature' in query) {
    // Signature V2, in the header or the query: s3rver verifies those itself.
    return undefined;
  } else if ('X-Amz-Signature' in query || 'X-Amz-Algorithm' in query) {
    claim = queryClaim(query);
  } else {
    // A CORS preflight is never signed; anything else unsigned is refused, as for a private bucket.
    return method === 'OPTIONS' ? undefined : accessDenied();
  }
  if (isRefusal(claim)) return claim;

  const secretAccessKey = secrets.get(claim.accessKeyId);
  if (secretAccessKey === undefined) {
    return refusal(
      403,
      'InvalidAccessKeyId',
      'The AWS Access Key Id you provided does not exist in our records.',
      { AWSAccessKeyId: claim.accessKeyId },
    );
  }

  // The host is verified as the client named it: it is part of what was signed.
  const canonicalHeaders = claim.signedHeaders.map(
    (name) => `${name}:${(headerValue(headers, name) ?? '').replace(/\s+/g, ' ').trim()}`,
  );
  const canonicalRequest = [
    method,
    canonicalPath(rawPath),
    getCanonicalQuery({ query } as Parameters<typeof getCanonicalQuery>[0]),
    ...canonicalHeaders,
    '',
    claim.signedHeaders.join(';'),
    claim.payloadHash,
  ].join('\n');
  const digest = new Sha256();
  digest.update(canonicalRequest);
  const scope = createScope(claim.shortDate, claim.region, claim.service);
  const stringToSign = [
    ALGORITHM,
    claim.longDate,
    scope,
    Buffer.from(await digest.digest()).toString('hex'),
  ].join('\n');
  const key = await getSigningKey(
    Sha256,
    { accessKeyId: claim.accessKeyId, secretAccessKey },
    claim.shortDate,
    claim.region,
    claim.service,
  );
  const mac = new Sha256(key);
  mac.update(stringToSign);
  const expected = Buffer.from(await mac.digest());
  const provided = Buffer.from(claim.signature, 'hex');
  if (provided.length === expected.length && timingSafeEqual(provided, expected)) return undefined;
  return refusal(
    403,
    'SignatureDoesNotMatch',
    'The request signature we calculated does not match the signature you provided. Check your key and signing method.',
    {
      AWSAccessKeyId: claim.accessKeyId,
      StringToSign: stringToSign,
      SignatureProvided: claim.signature,
      CanonicalRequest: canonicalRequest,
    },
  );
}

const xmlEscape = (text: string): string =>
  text.replace(/[<>&'"]/g, (c) => `&#${c.charCodeAt(0)};`);

/** S3's XML error document. */
export function errorDocument({ code, message, details }: Refusal, requestId: string): string {
  const elements = Object.entries({
    Code: code,
    Message: message,
    ...details,
    RequestId: requestId,
  })
    .map(([name, value]) => `<${name}>${xmlEscape(value)}</${name}>`)
    .join('');
  return `<?xml version="1.0" encoding="UTF-8"?>\n<Error>${elements}</Error>`;
}

/**
 * An HTTP server that hands each request whose signature verifies to `next` (s3rver's handler in
 * the same process: the request stream itself, so bodies are never copied or buffered) and answers
 * the rest. A client that waits for `100 Continue` gets the refusal instead, before it sends a body.
 */
export function signatureFront(keys: readonly S3KeyPair[], next: RequestListener): Server {
  const secrets = new Map(keys.map((key) => [key.accessKeyId, key.secretAccessKey]));
  let requests = 0;
  const handle =
    (expectsContinue: boolean): RequestListener =>
    (req, res) => {
      checkSignature(req, secrets).then(
        (refused) => {
          if (refused === undefined) {
            if (expectsContinue) res.writeContinue();
            next(req, res);
            return;
          }
          const requestId = `FRONT${(++requests).toString(16).padStart(11, '0')}`;
          const body = errorDocument(refused, requestId);
          res.writeHead(refused.status, {
            'content-type': 'application/xml',
            'content-length': Buffer.byteLength(body),
            'x-amz-request-id': requestId,
            // A body not sent (Expect: 100-continue) or not read yet is not worth reading to keep
            // the connection: S3 closes it too.
            ...(req.complete ? {} : { connection: 'close' }),
          });
          res.end(body);
        },
        (err: unknown) => {
          res.writeHead(500, { connection: 'close' });
          res.end(String(err));
        },
      );
    };
  const server = createServer(handle(false));
  server.on('checkContinue', handle(true));
  return server;
}
