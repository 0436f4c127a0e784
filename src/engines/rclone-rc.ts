// Calls to a cache client's rclone remote-control API on loopback.
import { request } from 'node:http';
import { ControlUnreachableError, type ControlEndpoint } from './engine.js';
import { messageOf } from '../util/errors.js';

/**
 * One POST on a connection of its own. Not fetch: its global dispatcher keeps a connection pool
 * per origin for the life of the process, and every client gets a port of its own, so a node
 * that starts clients all day would keep a pool for each one it ever ran (the soak found ~23 KiB
 * of heap per client start).
 */
function post(
  port: number,
  path: string,
  headers: Record<string, string>,
  body: string,
  timeoutMs: number,
): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port,
        path,
        method: 'POST',
        agent: false,
        headers: { ...headers, 'content-length': String(Buffer.byteLength(body)) },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => {
          clearTimeout(timer);
          resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') });
        });
        res.on('error', reject);
      },
    );
    const timer = setTimeout(
      () => req.destroy(new Error(`no answer in ${timeoutMs} ms`)),
      timeoutMs,
    );
    req.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    req.end(body);
  });
}

/** A call to rclone's remote-control API on loopback, authenticated (rclone refuses anonymous calls). */
export async function rcCall<T>(
  control: ControlEndpoint,
  command: string,
  params: Record<string, unknown> = {},
  timeoutMs = 5000,
): Promise<T> {
  let response: { status: number; text: string };
  try {
    response = await post(
      control.port,
      `/${command}`,
      {
        authorization: `Basic ${Buffer.from(`${control.user}:${control.password}`).toString('base64')}`,
        'content-type': 'application/json',
      },
      JSON.stringify(params),
      timeoutMs,
    );
  } catch (err) {
    throw new ControlUnreachableError(`control API did not answer ${command}: ${messageOf(err)}`);
  }
  if (response.status < 200 || response.status >= 300) {
    // rclone answers errors as JSON with the backend's reason in "error".
    let reason = '';
    try {
      const error = (JSON.parse(response.text) as { error?: unknown } | null)?.error;
      if (typeof error === 'string') reason = error;
    } catch {
      // not JSON
    }
    throw new Error(reason || `rclone rc ${command}: HTTP ${response.status}`);
  }
  return JSON.parse(response.text) as T;
}

export interface CoreStats {
  bytes: number;
  errors: number;
}

export interface VfsStats {
  diskCache?: {
    bytesUsed: number;
    files: number;
    uploadsInProgress: number;
    uploadsQueued: number;
    erroredFiles: number;
  };
}
