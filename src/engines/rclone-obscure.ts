// rclone's "obscure" encoding of passwords for its config and environment: it hides them, it does not encrypt them.
import { createCipheriv, randomBytes } from 'node:crypto';

/**
 * rclone's "obscure" encoding for passwords in its config and environment (AES-256-CTR with
 * rclone's published fixed key). It is not encryption: it only keeps passwords out of sight, so
 * the obscured value is handled with the same care as the password.
 */
const RCLONE_OBSCURE_KEY = Buffer.from(
  '9c935b48730a554d6bfd7c63c886a92bd390198eb8128afbf4de162b8b95f638',
  'hex',
);

export function rcloneObscure(plain: string): string {
  const iv = randomBytes(16);
  const cipher = createCipheriv('aes-256-ctr', RCLONE_OBSCURE_KEY, iv);
  const body = Buffer.concat([cipher.update(plain, 'utf8'), cipher.final()]);
  return Buffer.concat([iv, body]).toString('base64url');
}
