import { terminateChild } from '../kernel/proc.js';
import { fileURLToPath } from 'node:url';
import { execa, type ResultPromise } from 'execa';

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

/**
 * s3rver in a process of its own on loopback. Not in the test process: reads through a FUSE mount
 * of it would hold libuv threads that the server itself needs to answer them.
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
    extraKeys: { accessKeyId: string; secretAccessKey: string }[] = [],
  ): Promise<S3Server> {
    const code = `
      import S3rver from 's3rver';
      import Account from 's3rver/lib/models/account.js';
      for (const { accessKeyId, secretAccessKey } of JSON.parse(process.env.S3RVER_EXTRA_KEYS)) {
        Account.DUMMY_ACCOUNT.createKeyPair(accessKeyId, secretAccessKey);
      }
      const server = new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory: process.argv[1],
        configureBuckets: JSON.parse(process.argv[2]).map((name) => ({ name })) });
      const { port } = await server.run();
      process.stdout.write(port + '\\n');
      process.on('SIGTERM', () => server.close().then(() => process.exit(0)));`;
    const child = execa(
      'node',
      ['--input-type=module', '-e', code, directory, JSON.stringify(buckets)],
      {
        cwd: PROJECT,
        reject: false,
        buffer: false,
        stdin: 'ignore',
        // Keys in the environment, not the process list.
        env: { S3RVER_EXTRA_KEYS: JSON.stringify(extraKeys) },
        stderr: 'inherit',
      },
    );
    const port = await new Promise<number>((resolve, reject) => {
      child.stdout?.once('data', (chunk: Buffer) => resolve(Number(String(chunk).trim())));
      void child.then((result) => reject(new Error(`s3rver exited: ${String(result.exitCode)}`)));
    });
    return new S3Server(child, `http://127.0.0.1:${port}`);
  }

  /** What NodeStage needs (s3rver accepts only its built-in key pair). */
  secrets(): Record<string, string> {
    return {
      accessKeyId: 'S3RVER',
      secretAccessKey: 'S3RVER',
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
