// s3rver on loopback behind a SigV4-verifying front, for the tests and the bench (see S3Server).
import { terminateChild } from '../kernel/proc.js';
import { access } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { execa, type ResultPromise } from 'execa';
import type { S3KeyPair } from './s3-signature-front.js';

/** The project root, where node resolves s3rver (a development dependency). */
const PROJECT = fileURLToPath(new URL('../..', import.meta.url));

/**
 * rclone's environment naming an s3rver endpoint as remote `name`, with s3rver's built-in keys
 * (deliberate: no stray AWS_* variables from the caller's environment).
 */
export function s3rverRcloneEnv(name: string, endpoint: string): Record<string, string> {
  return {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    RCLONE_CONFIG: '/dev/null',
    [`RCLONE_CONFIG_${name}_TYPE`]: 's3',
    [`RCLONE_CONFIG_${name}_PROVIDER`]: 'Other',
    [`RCLONE_CONFIG_${name}_ACCESS_KEY_ID`]: 'S3RVER',
    [`RCLONE_CONFIG_${name}_SECRET_ACCESS_KEY`]: 'S3RVER',
    [`RCLONE_CONFIG_${name}_ENDPOINT`]: endpoint,
    [`RCLONE_CONFIG_${name}_FORCE_PATH_STYLE`]: 'true',
  };
}

/** s3rver's own key pair, which it always accepts. */
const BUILT_IN_KEY: S3KeyPair = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' };

/**
 * The signature front as compiled (see s3-signature-front.ts): the child is plain node, which runs
 * JavaScript only, also when this class itself runs from source under the test runner.
 */
const FRONT_MODULE = join(PROJECT, 'dist', 'demo', 's3-signature-front.js');

/**
 * s3rver in a process of its own on loopback. Not in the test process: reads through a FUSE mount
 * of it would hold libuv threads that the server itself needs to answer them.
 *
 * s3rver never verifies Signature V4 (its check is unimplemented), so the only port it listens on
 * is a front in the same child that does (signatureFront): a request signed with a wrong secret
 * gets S3's 403 SignatureDoesNotMatch, an unknown key 403 InvalidAccessKeyId, an unsigned one 403
 * AccessDenied, and the rest goes to s3rver's handler as it came, Host and body untouched.
 */
export class S3Server {
  private constructor(
    private readonly child: ResultPromise,
    readonly endpoint: string,
  ) {}

  /**
   * `extraKeys` are further key pairs of s3rver's one account: another tenant's valid credentials
   * for the same buckets.
   */
  static async start(
    directory: string,
    buckets: string[],
    extraKeys: S3KeyPair[] = [],
  ): Promise<S3Server> {
    await access(FRONT_MODULE).catch(() => {
      throw new Error(`${FRONT_MODULE} is missing: run npm run build first`);
    });
    const code = `
      import S3rver from 's3rver';
      import Account from 's3rver/lib/models/account.js';
      const { signatureFront } = await import(process.env.S3_FRONT_MODULE);
      const keys = JSON.parse(process.env.S3RVER_KEYS);
      for (const { accessKeyId, secretAccessKey } of keys) {
        Account.DUMMY_ACCOUNT.createKeyPair(accessKeyId, secretAccessKey);
      }
      const server = new S3rver({ silent: true, directory: process.argv[1],
        configureBuckets: JSON.parse(process.argv[2]).map((name) => ({ name })) });
      await server.configureBuckets();
      // s3rver's handler behind the front, instead of s3rver's own listener (server.run()).
      const front = signatureFront(keys, server.callback());
      front.listen(0, '127.0.0.1', () => process.stdout.write(front.address().port + '\\n'));
      process.on('SIGTERM', () => {
        front.close(() => process.exit(0));
        front.closeAllConnections();
      });`;
    const child = execa(
      'node',
      ['--input-type=module', '-e', code, directory, JSON.stringify(buckets)],
      {
        cwd: PROJECT,
        reject: false,
        buffer: false,
        stdin: 'ignore',
        // Keys in the environment, not the process list.
        env: {
          S3RVER_KEYS: JSON.stringify([BUILT_IN_KEY, ...extraKeys]),
          S3_FRONT_MODULE: pathToFileURL(FRONT_MODULE).href,
        },
        stderr: 'inherit',
      },
    );
    const port = await new Promise<number>((resolve, reject) => {
      child.stdout?.once('data', (chunk: Buffer) => resolve(Number(String(chunk).trim())));
      void child.then((result) => reject(new Error(`s3rver exited: ${String(result.exitCode)}`)));
    });
    return new S3Server(child, `http://127.0.0.1:${port}`);
  }

  /** What NodeStage needs: s3rver's built-in key pair. */
  secrets(): Record<string, string> {
    return {
      ...BUILT_IN_KEY,
      endpoint: this.endpoint,
      region: 'us-east-1',
    };
  }

  /** rclone's environment for this server as remote UP. */
  rcloneEnv(): Record<string, string> {
    return s3rverRcloneEnv('UP', this.endpoint);
  }

  /** Copies a local directory to bucket/prefix. */
  async upload(directory: string, bucketPath: string): Promise<void> {
    await execa('rclone', ['copy', directory, `UP:${bucketPath}`], {
      env: this.rcloneEnv(),
      extendEnv: false,
    });
  }

  async cat(bucketPath: string): Promise<string> {
    const result = await execa('rclone', ['cat', `UP:${bucketPath}`], {
      env: this.rcloneEnv(),
      extendEnv: false,
      stripFinalNewline: false,
    });
    return String(result.stdout);
  }

  /** Entries directly under bucket/prefix; directories end with '/'. */
  async list(bucketPath: string): Promise<string[]> {
    const result = await execa('rclone', ['lsf', `UP:${bucketPath}`], {
      env: this.rcloneEnv(),
      extendEnv: false,
    });
    return String(result.stdout)
      .split('\n')
      .filter((line) => line !== '');
  }

  async stop(): Promise<void> {
    await terminateChild(this.child);
  }
}
