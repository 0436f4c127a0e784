// The credentials a cache client was started with, kept 0600 in its runtime directory on tmpfs for its restarts and transfers.
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ClientRecord } from './client-record.js';

const SECRETS_FILE = 'secrets.json';

/** Keeps a client's credentials beside its other runtime files (a directory of mode 0700). */
export async function keepClientCredentials(
  runtimeDir: string,
  secrets: Record<string, string>,
): Promise<void> {
  await writeFile(join(runtimeDir, SECRETS_FILE), JSON.stringify(secrets), { mode: 0o600 });
}

/** The credentials a client was started with. */
export async function clientCredentials(
  record: Pick<ClientRecord, 'runtimeDir'>,
): Promise<Record<string, string>> {
  try {
    return JSON.parse(await readFile(join(record.runtimeDir, SECRETS_FILE), 'utf8')) as Record<
      string,
      string
    >;
  } catch {
    return {}; // no credentials were given, or the runtime dir was lost (node reboot)
  }
}
