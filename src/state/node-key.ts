// The node's own random key, made once and kept in the state directory (0600).
import { randomBytes } from 'node:crypto';
import { link, readFile, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

const KEY_BYTES = 32;

/**
 * Loads the key, creating it on first start. It is written aside and hard-linked into place, so
 * two processes starting at once agree on one key and nobody ever reads a torn one.
 */
export async function loadNodeKey(stateDir: string): Promise<Buffer> {
  const path = join(stateDir, 'node.key');
  try {
    return check(path, await readFile(path));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const aside = `${path}.${process.pid}.new`;
  await writeFile(aside, randomBytes(KEY_BYTES), { mode: 0o600, flush: true });
  try {
    await link(aside, path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  } finally {
    await unlink(aside);
  }
  return check(path, await readFile(path));
}

function check(path: string, key: Buffer): Buffer {
  if (key.length !== KEY_BYTES) {
    throw new Error(
      `${path} holds ${key.length} bytes, not a ${KEY_BYTES}-byte key: remove it to make a new one`,
    );
  }
  return key;
}
