import { ControlUnreachableError, type ControlEndpoint } from './engine.js';

/** A call to rclone's remote-control API on loopback, authenticated (rclone refuses anonymous calls). */
export async function rcCall<T>(
  control: ControlEndpoint,
  command: string,
  params: Record<string, unknown> = {},
  timeoutMs = 5000,
): Promise<T> {
  let response: Response;
  try {
    response = await fetch(`http://127.0.0.1:${control.port}/${command}`, {
      method: 'POST',
      headers: {
        authorization: `Basic ${Buffer.from(`${control.user}:${control.password}`).toString('base64')}`,
        'content-type': 'application/json',
      },
      body: JSON.stringify(params),
      signal: AbortSignal.timeout(timeoutMs),
    });
  } catch (err) {
    throw new ControlUnreachableError(
      `control API did not answer ${command}: ${err instanceof Error ? err.message : String(err)}`,
    );
  }
  if (!response.ok) {
    // rclone answers errors as JSON with the backend's reason in "error".
    const reason = await response
      .json()
      .then((body: unknown) => {
        const error = (body as { error?: unknown } | null)?.error;
        return typeof error === 'string' ? error : '';
      })
      .catch(() => '');
    throw new Error(reason || `rclone rc ${command}: HTTP ${response.status}`);
  }
  return (await response.json()) as T;
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
