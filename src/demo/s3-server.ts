import { fileURLToPath } from 'node:url';
import { execa, type ResultPromise } from 'execa';

/** The project root, where node resolves s3rver (a development dependency). */
const PROJECT = fileURLToPath(new URL('../..', import.meta.url));

/**
 * s3rver in a process of its own on loopback. Not in the test process: reads through a FUSE mount
 * of it would hold libuv threads that the server itself needs to answer them.
 */
export class S3Server {
  private constructor(
    private readonly child: ResultPromise,
    readonly endpoint: string,
  ) {}

  static async start(directory: string, buckets: string[]): Promise<S3Server> {
    const code = `
      import S3rver from 's3rver';
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
        stderr: 'inherit',
      },
    );
    const port = await new Promise<number>((resolve, reject) => {
      child.stdout?.once('data', (chunk: Buffer) => resolve(Number(String(chunk).trim())));
      void child.then((result) => reject(new Error(`s3rver exited: ${String(result.exitCode)}`)));
    });
    return new S3Server(child, `http://127.0.0.1:${port}`);
  }

  async stop(): Promise<void> {
    if (this.child.pid !== undefined) process.kill(this.child.pid, 'SIGTERM');
    await this.child;
  }
}
