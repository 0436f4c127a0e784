/**
 * CopyLog, fed rclone copy's JSON log lines: each file copied is handed on once, though rclone logs
 * a small file of unknown size twice; a file rclone copied again is handed on again.
 */
import { CopyLog } from '../../src/engines/rclone-copy-log.js';

const line = (msg: string, object: string, level = 'info') =>
  JSON.stringify({ level, msg, object, source: 'operations/operations.go:566' });

it('hands on each copied file once, however rclone logs it', async () => {
  const handed: string[] = [];
  const log = new CopyLog((relative) => {
    handed.push(relative);
  });
  // A small file of unknown size (HTTP without HEAD): from memory, then the streamed copy.
  log.read(line('Copied (new)', 'small.bin'));
  log.read(line('Copied (Rcat, new)', 'small.bin'));
  // A big one of unknown size is streamed: the second line only.
  log.read(line('Copied (Rcat, new)', 'big.bin'));
  log.read(line('Multi-thread Copied (new)', 'huge.bin'));
  // Copied again (a second attempt of the whole command): handed on again.
  log.read(line('Copied (new)', 'again.bin'));
  log.read(line('Copied (replaced existing)', 'again.bin'));
  log.read('not json');
  expect(await log.result(true)).toEqual({ ok: true, reason: '', corrupted: [], noSpace: [] });
  expect(handed).toEqual(['small.bin', 'big.bin', 'huge.bin', 'again.bin', 'again.bin']);
});

it('names what rclone refused as corrupted or could not write for want of room, and fails on any other error', async () => {
  const refused = new CopyLog(() => undefined);
  refused.read(line('corrupted on transfer: sizes differ 10 vs 12', 'cut.bin', 'error'));
  refused.read(
    line(
      'Failed to copy: write /cache/incoming/ab/data/f4.bin: no space left on device',
      'f4.bin',
      'error',
    ),
  );
  // rclone's closing line repeats its last error.
  refused.read(
    line(
      'Attempt 1/1 failed with 2 errors and: write /cache/incoming/ab/data/f4.bin: no space left on device',
      '',
      'error',
    ),
  );
  expect(await refused.result(false)).toMatchObject({
    ok: true,
    corrupted: ['cut.bin'],
    noSpace: ['f4.bin'],
  });
  const failed = new CopyLog(() => undefined);
  failed.read(line('Failed to copy: HTTP Error: 404 Not Found', 'gone.bin', 'error'));
  expect(await failed.result(false)).toMatchObject({
    ok: false,
    reason: 'gone.bin: Failed to copy: HTTP Error: 404 Not Found',
  });
});
