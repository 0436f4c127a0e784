import { join } from 'node:path';
import type { CsiClient } from '../../src/csi/client.js';
import { mountCapability } from './driver.js';

interface Volume {
  volume_id: string;
  volume_context: Record<string, string>;
}

/**
 * Plays kubelet's part: its path layout and the node calls in its order. The client is looked up
 * at each call, since a test that crashes the driver replaces it.
 */
export class Kubelet {
  readonly root: string;

  constructor(
    work: string,
    private readonly client: () => CsiClient,
    private readonly capability = mountCapability('MULTI_NODE_MULTI_WRITER'),
  ) {
    this.root = join(work, 'kubelet');
  }

  staging(volumeId: string): string {
    return join(this.root, 'plugins', 'staging', volumeId);
  }

  target(pod: string): string {
    return join(this.root, 'pods', pod, 'volumes', 'data');
  }

  async stage(volume: Volume, secrets: Record<string, string> = {}): Promise<void> {
    await this.client().node.NodeStageVolume({
      volume_id: volume.volume_id,
      staging_target_path: this.staging(volume.volume_id),
      volume_capability: this.capability,
      volume_context: volume.volume_context,
      secrets,
    });
  }

  async publish(volumeId: string, pod: string, readonly = false): Promise<void> {
    await this.client().node.NodePublishVolume({
      volume_id: volumeId,
      staging_target_path: this.staging(volumeId),
      target_path: this.target(pod),
      volume_capability: this.capability,
      readonly,
    });
  }

  /** Stage once, publish to every pod. */
  async run(volume: Volume, pods: string[], readonly = false): Promise<void> {
    await this.stage(volume);
    for (const pod of pods) await this.publish(volume.volume_id, pod, readonly);
  }

  /** Unpublish every pod, then unstage: what kubelet does when the pods go away. */
  async stop(volumeId: string, pods: string[]): Promise<void> {
    for (const pod of pods) {
      await this.client().node.NodeUnpublishVolume({
        volume_id: volumeId,
        target_path: this.target(pod),
      });
    }
    await this.client().node.NodeUnstageVolume({
      volume_id: volumeId,
      staging_target_path: this.staging(volumeId),
    });
  }
}
