// Bind mounts and unmounts as syscalls through a resident perl helper, far cheaper than a mount(8) per call; the system mounter where that cannot run.
import { createInterface } from 'node:readline';
import { execa, type ResultPromise } from 'execa';
import { MountError, type Mounter, type SystemMounter } from './mounter.js';
import type { MountTable } from './mountinfo.js';

/** mount(2) and umount2(2) numbers per architecture; elsewhere the driver keeps mount(8). */
const SYSCALLS: Partial<Record<NodeJS.Architecture, { mount: number; umount2: number }>> = {
  x64: { mount: 165, umount2: 166 },
  arm64: { mount: 40, umount2: 39 },
};

/**
 * A resident helper doing bind mounts and unmounts as syscalls: mount(8) costs a process start
 * (~3 ms) per call, the syscall ~15 µs, which decides how many pods a node can start at once.
 * Perl is part of every Debian system (perl-base) and can make raw syscalls; Node cannot.
 * Protocol: one tab-separated request per line, one answer per line with the same id.
 */
const HELPER = String.raw`
use strict; use warnings;
use POSIX ();
my ($SYS_MOUNT, $SYS_UMOUNT2) = @ARGV;
$| = 1;
my ($MS_RDONLY, $MS_REMOUNT, $MS_BIND, $MNT_DETACH) = (1, 32, 4096, 2);
# Numbers of the mount API syscalls, the same on every architecture (Linux 5.2 and 5.12).
my ($SYS_OPEN_TREE, $SYS_MOVE_MOUNT, $SYS_MOUNT_SETATTR) = (428, 429, 442);
my ($AT_FDCWD, $AT_EMPTY_PATH, $OPEN_TREE_CLONE, $O_CLOEXEC) = (-100, 0x1000, 1, 0x80000);
my ($MOVE_MOUNT_F_EMPTY_PATH, $MOVE_MOUNT_BENEATH, $MOUNT_ATTR_RDONLY) = (0x4, 0x200, 1);
# syscall() hands strings over as writable buffers: never a literal.
my $EMPTY = '';
while (my $line = <STDIN>) {
  chomp $line;
  my ($id, $op, @a) = split /\t/, $line, -1;
  my $r = -1;
  if ($op eq 'bind') {
    my ($src, $dst, $ro) = @a;
    $r = syscall($SYS_MOUNT, $src, $dst, 0, $MS_BIND, 0);
    if ($r == 0 && $ro eq '1') {
      $r = syscall($SYS_MOUNT, $src, $dst, 0, $MS_REMOUNT | $MS_BIND | $MS_RDONLY, 0);
      if ($r != 0) { my $e = $! + 0; syscall($SYS_UMOUNT2, $dst, $MNT_DETACH); $! = $e; }
    }
  } elsif ($op eq 'replace') {
    # A detached clone of src, made read-only if asked, moved beneath the mount at dst; then the
    # old mount on top is detached. dst always shows one or the other.
    my ($src, $dst, $ro) = @a;
    my $fd = syscall($SYS_OPEN_TREE, $AT_FDCWD, $src, $OPEN_TREE_CLONE | $O_CLOEXEC);
    if ($fd >= 0) {
      $r = 0;
      if ($ro eq '1') {
        my $attr = pack('QQQQ', $MOUNT_ATTR_RDONLY, 0, 0, 0);
        $r = syscall($SYS_MOUNT_SETATTR, $fd, $EMPTY, $AT_EMPTY_PATH, $attr, length $attr);
      }
      $r = syscall($SYS_MOVE_MOUNT, $fd, $EMPTY, $AT_FDCWD, $dst, $MOVE_MOUNT_F_EMPTY_PATH | $MOVE_MOUNT_BENEATH) if $r == 0;
      my $e = $! + 0;
      POSIX::close($fd);
      $! = $e;
      $r = syscall($SYS_UMOUNT2, $dst, $MNT_DETACH) if $r == 0;
    }
  } elsif ($op eq 'remount') {
    my ($none, $path) = ('none', @a);
    $r = syscall($SYS_MOUNT, $none, $path, 0, $MS_REMOUNT | $MS_RDONLY, 0);
  } elsif ($op eq 'umount') {
    my ($path, $lazy) = @a;
    $r = syscall($SYS_UMOUNT2, $path, $lazy eq '1' ? $MNT_DETACH : 0);
  } else {
    $! = 22;
  }
  if ($r == 0) { print "$id\tok\n"; } else { print "$id\terr\t$!\n"; }
}
`;

/** Bind and unmount through the syscall helper; everything else as the system mounter does it. */
export class SyscallMounter implements Mounter {
  private helper?: { child: ResultPromise; pending: Map<number, (answer: string) => void> };
  private nextId = 1;

  private constructor(
    private readonly fallback: SystemMounter,
    private readonly numbers: { mount: number; umount2: number },
  ) {}

  /** The syscall mounter where this architecture and perl allow it, else the system mounter. */
  static async orFallback(fallback: SystemMounter): Promise<Mounter> {
    const numbers = SYSCALLS[process.arch];
    if (!numbers) return fallback;
    const perl = await execa('perl', ['-e', '1'], { reject: false });
    return perl.exitCode === 0 ? new SyscallMounter(fallback, numbers) : fallback;
  }

  async bind(source: string, target: string, options: { readOnly: boolean }): Promise<void> {
    const answer = await this.call('bind', source, target, options.readOnly ? '1' : '0');
    if (answer !== 'ok')
      throw new MountError(`bind mount ${source} -> ${target} failed: ${answer}`);
  }

  async replaceBind(source: string, target: string, options: { readOnly: boolean }): Promise<void> {
    const answer = await this.call('replace', source, target, options.readOnly ? '1' : '0');
    if (answer === 'ok') return;
    // A kernel before 6.5 knows no MOVE_MOUNT_BENEATH (EINVAL): on top instead.
    if (/Invalid argument|Function not implemented/.test(answer)) {
      return this.bind(source, target, options);
    }
    throw new MountError(`bind mount ${source} in place of ${target} failed: ${answer}`);
  }

  async unmount(target: string, options: { lazy?: boolean } = {}): Promise<void> {
    const answer = await this.call('umount', target, options.lazy ? '1' : '0');
    if (answer !== 'ok') throw new MountError(`unmount ${target} failed: ${answer}`);
  }

  async remount(target: string): Promise<void> {
    const answer = await this.call('remount', target);
    if (answer !== 'ok') throw new MountError(`remount of ${target} failed: ${answer}`);
  }

  mountOverlay(lowerDirs: string[], target: string, name: string): Promise<void> {
    return this.fallback.mountOverlay(lowerDirs, target, name);
  }

  mountTmpfs(target: string, sizeBytes: number, name: string): Promise<void> {
    return this.fallback.mountTmpfs(target, sizeBytes, name);
  }

  mountImage(image: string, target: string, fsType: string): Promise<void> {
    return this.fallback.mountImage(image, target, fsType);
  }

  table(): Promise<MountTable> {
    return this.fallback.table();
  }

  close(): void {
    this.helper?.child.kill('SIGTERM');
    this.helper = undefined;
  }

  private call(...fields: string[]): Promise<string> {
    if (fields.some((field) => /[\t\n\0]/.test(field))) {
      return Promise.resolve('path contains a tab, newline or NUL');
    }
    const helper = this.helper ?? this.start();
    const id = this.nextId;
    this.nextId += 1;
    return new Promise((resolve) => {
      helper.pending.set(id, resolve);
      helper.child.stdin?.write(`${id}\t${fields.join('\t')}\n`);
    });
  }

  private start(): NonNullable<SyscallMounter['helper']> {
    const child = execa(
      'perl',
      ['-e', HELPER, String(this.numbers.mount), String(this.numbers.umount2)],
      {
        reject: false,
        buffer: false,
        stdin: 'pipe',
        stdout: 'pipe',
        stderr: 'ignore',
        extendEnv: false,
        env: { PATH: process.env.PATH ?? '/usr/bin:/bin', LC_ALL: 'C' },
      },
    );
    const pending = new Map<number, (answer: string) => void>();
    const helper = { child, pending };
    if (child.stdout) {
      createInterface({ input: child.stdout }).on('line', (line) => {
        const [id, status, ...reason] = line.split('\t');
        const resolve = pending.get(Number(id));
        pending.delete(Number(id));
        resolve?.(status === 'ok' ? 'ok' : reason.join(' '));
      });
    }
    // A helper that dies fails what it still owed; the next call starts a new one.
    void child.then(() => {
      if (this.helper === helper) this.helper = undefined;
      for (const resolve of pending.values()) resolve('mount helper exited');
      pending.clear();
    });
    // The driver's exit must not wait for the helper.
    child.unref();
    for (const stream of [child.stdin, child.stdout]) {
      (stream as unknown as { unref?: () => void } | null)?.unref?.();
    }
    this.helper = helper;
    return helper;
  }
}
