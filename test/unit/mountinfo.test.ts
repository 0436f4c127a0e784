import { MountTable, parseMountInfo } from '../../src/kernel/mountinfo.js';

const SAMPLE = [
  '22 1 253:0 / / rw,relatime shared:1 - ext4 /dev/vda rw',
  '42 22 0:39 / /var/lib/dcsi/datasets/ds-1/mount rw,nosuid,nodev,relatime - fuse.rclone dataset-cache-csi:ds-1 rw,user_id=0,group_id=0,allow_other',
  '43 22 0:39 /sub\\040dir /var/lib/kubelet/staging/with\\040space rw,relatime shared:7 master:3 - fuse.rclone dataset-cache-csi:ds-1 rw',
  '44 22 0:39 / /var/lib/kubelet/pods/p/volume ro,relatime - fuse.rclone dataset-cache-csi:ds-1 rw',
  '45 22 0:40 / /var/lib/kubelet/pods/p/volume rw - tmpfs tmpfs rw',
].join('\n');

describe('mountinfo', () => {
  it('parses fields, optional tags and octal escapes', () => {
    const entries = parseMountInfo(SAMPLE);
    expect(entries).toHaveLength(5);
    expect(entries[2]).toEqual({
      id: 43,
      parentId: 22,
      device: '0:39',
      root: '/sub dir',
      mountPoint: '/var/lib/kubelet/staging/with space',
      options: ['rw', 'relatime'],
      fsType: 'fuse.rclone',
      source: 'dataset-cache-csi:ds-1',
    });
  });

  it('answers with the topmost mount at a path', () => {
    const table = new MountTable(parseMountInfo(SAMPLE));
    expect(table.at('/var/lib/kubelet/pods/p/volume')?.fsType).toBe('tmpfs');
    expect(table.countAt('/var/lib/kubelet/pods/p/volume')).toBe(2);
    expect(table.at('/nowhere')).toBeUndefined();
    expect(table.under('/var/lib/kubelet').map((e) => e.id)).toEqual([43, 44, 45]);
    expect(table.under('/var/lib/kube')).toEqual([]);
  });

  it('reads the live table of this process', async () => {
    const table = await MountTable.read();
    expect(table.at('/')).toBeDefined();
  });
});
