// State documents as JSON: read with a fallback for a missing file, written atomically and 0600.
import { readFile } from 'node:fs/promises';
import writeFileAtomic from 'write-file-atomic';

/** Reads a JSON document; a missing file gives the fallback, a corrupt one is an error. */
export async function readJson<T>(path: string, fallback: T): Promise<T> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return fallback;
    throw err;
  }
  return JSON.parse(text) as T;
}

/**
 * Writes through a temp file, fsync and rename, so a crash leaves either the old or the new
 * document, never a torn one. Mode 0600: state may name sources and paths of other tenants.
 */
export async function writeJson(path: string, value: unknown): Promise<void> {
  await writeFileAtomic(path, `${JSON.stringify(value, null, 2)}\n`, { mode: 0o600, fsync: true });
}
