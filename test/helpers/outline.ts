/** What outlining a local copy costs a remote: the driver's own listing of its directories, measured at the server. */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseSource } from '../../src/dataset/source.js';
import { RcloneTransfers } from '../../src/engines/rclone-transfer.js';

/**
 * What one outline of the dataset at `url` costs its server, as `measure` counts it (bytes sent,
 * requests): what a stage adds to a fill's own cost (see LocalCopies.outline). With `levels`, the
 * outline of that many levels only (what a stage's outline reads where its fill lists everything).
 */
export async function outlineCost(
  url: string,
  measure: () => Promise<number>,
  secrets: Record<string, string> = {},
  levels?: number,
): Promise<number> {
  const home = await mkdtemp(join(tmpdir(), 'dcsi-outline-'));
  try {
    const before = await measure();
    await new RcloneTransfers().listDirectories(
      { source: parseSource(url), secrets, runtimeDir: home },
      undefined,
      () => undefined,
      {
        // As a stage outlines: its two levels first.
        firstDepth: 2,
        leaveOut: (depth) => Promise.resolve(levels !== undefined && depth > levels ? [''] : []),
      },
    );
    return (await measure()) - before;
  } finally {
    await rm(home, { recursive: true, force: true });
  }
}
