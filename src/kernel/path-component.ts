// Caller-chosen strings (volume ids, names) as one path component that cannot escape its directory.
import { createHash } from 'node:crypto';

const READABLE_CHARS = 64;

/**
 * A readable part (safe characters only, never starting with '.' or '-') and a digest of the whole
 * string, so distinct ids never collide and none can be `..`, hold `/`, or look like an option.
 */
export function pathComponentOf(id: string): string {
  const readable = id
    .slice(0, READABLE_CHARS)
    .replace(/[^A-Za-z0-9_.-]/g, '_')
    .replace(/^[.-]/, '_');
  const digest = createHash('sha256').update(id).digest('hex').slice(0, 16);
  return `${readable}-${digest}`;
}
