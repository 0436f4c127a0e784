// Who a dataset is read as: credentials (and an inline volume's namespace) as a keyed digest.
import { createHmac } from 'node:crypto';

/**
 * Volumes may share a cache client only when the remote would answer them alike, so the
 * credentials are part of a dataset's identity. They enter it as an HMAC under the node's own key:
 * dataset keys appear in paths, metric labels and logs, and a plain hash of a short password could
 * be reversed by trying candidates.
 */
export class CredentialIdentity {
  constructor(private readonly nodeKey: Buffer) {}

  /** A persistent volume's node-stage secrets; none gives no identity (keys of such datasets stay). */
  ofSecrets(secrets: Record<string, string>): string | undefined {
    return Object.keys(secrets).length === 0
      ? undefined
      : this.digest(['secrets', sorted(secrets)]);
  }

  /** An inline volume: the pod's namespace and secrets, so no pod shares another namespace's client. */
  ofInlineVolume(namespace: string, secrets: Record<string, string>): string {
    return this.digest(['inline', namespace, sorted(secrets)]);
  }

  private digest(parts: unknown[]): string {
    return createHmac('sha256', this.nodeKey)
      .update(JSON.stringify(parts))
      .digest('hex')
      .slice(0, 32);
  }
}

const sorted = (secrets: Record<string, string>): [string, string][] =>
  Object.entries(secrets).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
