// Dataset sources: s3://, sftp://, webdav(s)://, http(s):// and local:// locations parsed into a normalized form and written back.
import { posix } from 'node:path';

export type SourceKind = 's3' | 'sftp' | 'webdav' | 'http' | 'local';

/** A remote location in normalized form: equal data gives equal objects. */
export interface Source {
  kind: SourceKind;
  /** Host[:port] for network sources, bucket for S3; empty for local. */
  authority: string;
  /** Absolute, normalized path ('/' for the root); for S3 the key prefix. */
  path: string;
  /** TLS for webdav/http ("webdavs://", "https://"). */
  tls: boolean;
  /** User named in the URL (sftp://user@host); passwords never come from the URL. */
  user?: string;
}

export class SourceError extends Error {}

const SCHEMES: Record<string, { kind: SourceKind; tls: boolean }> = {
  's3:': { kind: 's3', tls: true },
  'sftp:': { kind: 'sftp', tls: false },
  'webdav:': { kind: 'webdav', tls: false },
  'webdavs:': { kind: 'webdav', tls: true },
  'http:': { kind: 'http', tls: false },
  'https:': { kind: 'http', tls: true },
  'local:': { kind: 'local', tls: false },
};

/** Characters that could break out of a command-line argument or a config line of an engine. */
const UNSAFE = /[\0\n\r]/;

/**
 * DNS names (labels of letters, digits, '-' and '_', none starting or ending with '-'), IPv4, or a
 * bracketed IPv6 address. Hosts reach engines' configs and could reach a command line: a host that
 * starts with '-' or holds '=' or '!' is never a host.
 */
const LABEL = '[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?';
const HOST = new RegExp(`^(?:${LABEL}(?:\\.${LABEL})*\\.?|\\[[0-9a-f:.]+\\])$`, 'i');
/** POSIX portable user names, plus '@' and '+' for services that log in with an e-mail address. */
const USER = /^[A-Za-z0-9_][A-Za-z0-9._@+-]{0,255}$/;

function checkHost(host: string): void {
  if (!HOST.test(host) || host.length > 253) {
    throw new SourceError(
      `source host "${host}" is not a host name or address (letters, digits, '.', '-', '_'; not starting with '-')`,
    );
  }
}

function checkUser(user: string): void {
  if (!USER.test(user)) {
    throw new SourceError(
      `source user "${user}" is not a user name (letters, digits, '.', '_', '@', '+', '-'; not starting with '-' or '.')`,
    );
  }
}

function normalizePath(raw: string, field: string): string {
  let decoded: string;
  try {
    decoded = decodeURIComponent(raw);
  } catch {
    throw new SourceError(`${field}: path is not valid percent-encoding`);
  }
  if (UNSAFE.test(decoded)) throw new SourceError(`${field}: path contains control characters`);
  const segments = decoded.split('/');
  if (segments.includes('..')) throw new SourceError(`${field}: path must not contain '..'`);
  const normalized = posix.normalize(`/${decoded}`);
  return normalized.length > 1 ? normalized.replace(/\/+$/, '') : '/';
}

export function parseSource(value: string): Source {
  if (UNSAFE.test(value)) throw new SourceError('source contains control characters');
  // URL parsing would silently resolve dot segments; a '..' in a source is a mistake or an attack.
  if (/\/(?:\.|%2e){2}(?:\/|$)/i.test(value)) {
    throw new SourceError(`source "${value}" must not contain '..'`);
  }
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new SourceError(
      `source "${value}" is not a URL; expected s3://, sftp://, webdav://, webdavs://, http(s):// or local:///path`,
    );
  }
  const scheme = SCHEMES[url.protocol];
  if (!scheme) {
    throw new SourceError(
      `source scheme "${url.protocol}" is not supported; use s3, sftp, webdav, webdavs, http, https or local`,
    );
  }
  if (url.password) {
    throw new SourceError(
      'source must not carry a password; pass credentials as node-stage secrets',
    );
  }
  if (url.search || url.hash) throw new SourceError('source must not have a query or fragment');
  const path = normalizePath(url.pathname, 'source');
  if (scheme.kind === 'local') {
    if (url.host) throw new SourceError('local source must look like local:///absolute/path');
    if (path === '/') throw new SourceError('local source must name a directory below /');
    return { kind: 'local', authority: '', path, tls: false };
  }
  if (!url.hostname) throw new SourceError(`source "${value}" has no host`);
  checkHost(url.hostname);
  if (scheme.kind === 's3' && url.port)
    throw new SourceError('s3 source is s3://bucket[/prefix]; set the endpoint in the secrets');
  const source: Source = {
    kind: scheme.kind,
    authority: url.host.toLowerCase(),
    path,
    tls: scheme.tls,
  };
  if (url.username) {
    let user: string;
    try {
      user = decodeURIComponent(url.username);
    } catch {
      throw new SourceError('source user is not valid percent-encoding');
    }
    checkUser(user);
    source.user = user;
  }
  return source;
}

export function formatSource(source: Source): string {
  const user = source.user ? `${encodeURIComponent(source.user)}@` : '';
  const scheme =
    source.kind === 'webdav'
      ? source.tls
        ? 'webdavs'
        : 'webdav'
      : source.kind === 'http'
        ? source.tls
          ? 'https'
          : 'http'
        : source.kind;
  return `${scheme}://${user}${source.authority}${source.path}`;
}
