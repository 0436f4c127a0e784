// Setting and removing extended attributes (setxattr/removexattr), which Node cannot do itself.
import type { ProcessRunner } from './runner.js';

/** setxattr(2) and removexattr(2) per architecture; elsewhere nothing is marked. */
const SYSCALLS: Partial<Record<NodeJS.Architecture, { set: number; remove: number; get: number }>> =
  {
    x64: { set: 188, remove: 197, get: 191 },
    arm64: { set: 5, remove: 14, get: 8 },
  };

/** Sets NAME=VALUE on each path (or removes NAME when no value is given); prints failures. */
const SCRIPT = String.raw`
my ($set, $remove, $name, $value, @paths) = @ARGV;
for my $path (@paths) {
  my ($p, $n, $v) = ($path, $name, $value);
  my $r = $v eq '' ? syscall($remove, $p, $n) : syscall($set, $p, $n, $v, length($v), 0);
  print "$path\n" if $r != 0 && ($v ne '' || $! != 61);
}
`;

/** The paths for which the attribute could not be set (or removed); empty when all went well. */
export async function setXattr(
  runner: ProcessRunner,
  paths: string[],
  name: string,
  value: string | undefined,
): Promise<string[]> {
  const numbers = SYSCALLS[process.arch];
  if (!numbers) return paths;
  if (paths.length === 0) return [];
  const result = await runner.run(
    'perl',
    ['-e', SCRIPT, String(numbers.set), String(numbers.remove), name, value ?? '', ...paths],
    30_000,
  );
  if (result.exitCode !== 0) return paths;
  return result.stdout.split('\n').filter((line) => line !== '');
}

const READ_SCRIPT = String.raw`
my ($get, $path, $name) = @ARGV;
my $buf = "\0" x 256;
my $n = syscall($get, $path, $name, $buf, 256);
print substr($buf, 0, $n) if $n >= 0;
`;

/** The value of an attribute, or undefined when the path has none. */
export async function readXattr(
  runner: ProcessRunner,
  path: string,
  name: string,
): Promise<string | undefined> {
  const numbers = SYSCALLS[process.arch];
  if (!numbers) return undefined;
  const result = await runner.run('perl', ['-e', READ_SCRIPT, String(numbers.get), path, name]);
  return result.exitCode === 0 && result.stdout !== '' ? result.stdout : undefined;
}
