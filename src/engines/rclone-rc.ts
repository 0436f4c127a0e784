import type { ControlEndpoint } from './engine.js';

/** A call to rclone's remote-control API on loopback, authenticated (rclone refuses anonymous calls). */
export async function rcCall<T>(
  control: ControlEndpoint,
  command: string,
  params: Record<string, unknown> = {},
  timeoutMs = 5000,
): Promise<T> {
  const response = await fetch(`http://127.0.0.1:${control.port}/${command}`, {
    method: 'POST',
    headers: {
      authorization: `Basic ${Buffer.from(`${control.user}:${control.password}`).toString('base64')}`,
      'content-type': 'application/json',
    },
    body: JSON.stringify(params),
    signal: AbortSignal.timeout(timeoutMs),
  });
  if (!response.ok) throw new Error(`rclone rc ${command}: HTTP ${response.status}`);
  return (await response.json()) as T;
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
