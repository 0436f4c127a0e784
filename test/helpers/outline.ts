/** What outlining a local copy costs a remote: the driver's own listing of its directories, measured at the server. */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseSource } from '../../src/dataset/source.js';
import { RcloneTransfers } from '../../src/engines/rclone-transfer.js';

/**
 * Bytes the server sends for one outline of the dataset at `url` (over HTTP, its index pages):
 * what a stage adds to a fill's own cost (see LocalCopies.outline).
 */
export async function outlineCost(url: string, sentBytes: () => Promise<number>): Promise<number> {
  const home = await mkdtemp(join(tmpdir(), 'dcsi-outline-'));
  try {
    const before = await sentBytes();
    await new RcloneTransfers().listDirectories(
      { source: parseSource(url), secrets: {}, runtimeDir: home },
      undefined,
      () => undefined,
    );
    return (await sentBytes()) - before;
  } finally {
    await rm(home, { recursive: true, force: true });
  }
}
