// Dropping a file's cached pages (posix_fadvise DONTNEED), which Node cannot ask for itself.
import type { ProcessRunner } from './runner.js';

/** fadvise64(2) per architecture; elsewhere pages are left to the kernel's reclaim. */
const FADVISE64: Partial<Record<NodeJS.Architecture, number>> = { x64: 221, arm64: 223 };
const POSIX_FADV_DONTNEED = 4;

/**
 * One short-lived perl process per batch (perl-base is on every Debian system): a file on a FUSE
 * mount that hangs can only block that process, which the timeout ends.
 */
const SCRIPT = String.raw`
my ($nr, $advice) = (shift @ARGV, shift @ARGV);
for my $path (@ARGV) {
  open(my $fh, '<', $path) or next;
  syscall($nr, fileno($fh), 0, 0, $advice);
  close($fh);
}
`;

/** Asks the kernel to drop the cached pages of these files (clean pages only; nothing is lost). */
export async function dropCachedPages(runner: ProcessRunner, paths: string[]): Promise<void> {
  const nr = FADVISE64[process.arch];
  if (nr === undefined || paths.length === 0) return;
  // Background work: at the lowest priority, so pods reading meanwhile come first.
  await runner.run(
    'nice',
    ['-n', '19', 'perl', '-e', SCRIPT, String(nr), String(POSIX_FADV_DONTNEED), ...paths],
    30_000,
  );
}
