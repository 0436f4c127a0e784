// Mounting and unmounting through util-linux: the kernel primitives every layer above builds on.
import type { ProcessRunner } from './runner.js';
import { MountTable } from './mountinfo.js';

export interface Mounter {
  bind(source: string, target: string, options: { readOnly: boolean }): Promise<void>;
  /**
   * Puts a bind of source in place of the mount at target, so that target is never an empty
   * directory in between: beneath it, then the old one detached (move_mount BENEATH, Linux 6.5).
   * Where that cannot be done, the bind goes on top and the old one leaves with target's next
   * full detach.
   */
  replaceBind(source: string, target: string, options: { readOnly: boolean }): Promise<void>;
  /** Detaches the topmost mount at target; lazy detaches even when busy or dead. */
  unmount(target: string, options?: { lazy?: boolean }): Promise<void>;
  /** A private tmpfs whose size the kernel enforces. */
  mountTmpfs(target: string, sizeBytes: number, name: string): Promise<void>;
  /** A file-system image through a loop device (released again when unmounted). */
  mountImage(image: string, target: string, fsType: string): Promise<void>;
  /**
   * A read-only overlay of directories, the first on top (no upper layer: nothing can be written).
   * `name` is the mount source that mountinfo shows.
   */
  mountOverlay(lowerDirs: string[], target: string, name: string): Promise<void>;
  /**
   * Remounts a read-only file system as it is. For an overlay this drops the names it has cached,
   * so files added to a lower layer since are found by the next look-up of an existing name.
   */
  remount(target: string): Promise<void>;
  table(): Promise<MountTable>;
}

/** overlayfs separates lower layers with ':' and options with ',': such paths cannot be layers. */
export function overlayOptions(lowerDirs: string[]): string {
  const unsafe = lowerDirs.find((dir) => /[:,\\\s]/.test(dir));
  if (unsafe !== undefined) {
    throw new MountError(
      `cannot use ${unsafe} as an overlay layer: it contains ':', ',', '\\' or a space`,
    );
  }
  return `ro,lowerdir=${lowerDirs.join(':')}`;
}

export class MountError extends Error {}

/** mount(8)/umount(8) from util-linux; `-c` skips path canonicalization, which hangs on dead FUSE mounts. */
export class SystemMounter implements Mounter {
  constructor(private readonly runner: ProcessRunner) {}

  /** mount(8) cannot mount beneath: on top (see Mounter.replaceBind). */
  replaceBind(source: string, target: string, options: { readOnly: boolean }): Promise<void> {
    return this.bind(source, target, options);
  }

  async bind(source: string, target: string, options: { readOnly: boolean }): Promise<void> {
    const flags = options.readOnly ? 'bind,ro' : 'bind';
    const result = await this.runner.run('mount', ['-c', '-o', flags, '--', source, target]);
    if (result.exitCode !== 0) {
      throw new MountError(`bind mount ${source} -> ${target} failed: ${result.stderr.trim()}`);
    }
  }

  async unmount(target: string, options: { lazy?: boolean } = {}): Promise<void> {
    const args = options.lazy ? ['-c', '-l', '--', target] : ['-c', '--', target];
    const result = await this.runner.run('umount', args);
    if (result.exitCode !== 0) {
      throw new MountError(`unmount ${target} failed: ${result.stderr.trim()}`);
    }
  }

  async mountTmpfs(target: string, sizeBytes: number, name: string): Promise<void> {
    const options = `size=${sizeBytes},mode=0700,nosuid,nodev,noexec`;
    try {
      // Files read from huge pages come twice as fast (1 GiB: 17-23 against 9-11 GB/s here);
      // within_size gives them only to files that fill one, so small files cost no more memory.
      await this.mountTyped('tmpfs', `${options},huge=within_size`, name, target);
    } catch (err) {
      // A kernel without transparent huge pages refuses the option.
      if (!(err instanceof MountError)) throw err;
      await this.mountTyped('tmpfs', options, name, target);
    }
  }

  async mountImage(image: string, target: string, fsType: string): Promise<void> {
    const result = await this.runner.run('mount', [
      '-c',
      '-t',
      fsType,
      '-o',
      'loop,noatime,nosuid,nodev,noexec',
      '--',
      image,
      target,
    ]);
    if (result.exitCode !== 0) {
      throw new MountError(`mount of ${image} at ${target} failed: ${result.stderr.trim()}`);
    }
  }

  mountOverlay(lowerDirs: string[], target: string, name: string): Promise<void> {
    return this.mountTyped('overlay', overlayOptions(lowerDirs), name, target);
  }

  private async mountTyped(
    fsType: string,
    options: string,
    source: string,
    target: string,
  ): Promise<void> {
    const result = await this.runner.run('mount', [
      '-c',
      '-t',
      fsType,
      '-o',
      options,
      '--',
      source,
      target,
    ]);
    if (result.exitCode !== 0) {
      throw new MountError(`${fsType} mount at ${target} failed: ${result.stderr.trim()}`);
    }
  }

  async remount(target: string): Promise<void> {
    const result = await this.runner.run('mount', ['-c', '-o', 'remount,ro', '--', target]);
    if (result.exitCode !== 0) {
      throw new MountError(`remount of ${target} failed: ${result.stderr.trim()}`);
    }
  }

  table(): Promise<MountTable> {
    return MountTable.read();
  }
}
