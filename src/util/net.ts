// Free TCP ports on loopback: for clients' control APIs and the servers of the demo, tests and benchmarks.
import { createServer } from 'node:net';

/** A free TCP port on loopback (the kernel picks it; callers retry if it is taken meanwhile). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() =>
        typeof address === 'object' && address
          ? resolve(address.port)
          : reject(new Error('no port')),
      );
    });
  });
}
