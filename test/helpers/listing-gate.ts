// An HTTP proxy on loopback that records requests, and delays or refuses chosen ones: a remote whose listings (paths ending in '/') fail while reads by name still work, or whose reads fail.
import {
  createServer,
  request as httpRequest,
  type IncomingMessage,
  type ServerResponse,
} from 'node:http';
import type { AddressInfo } from 'node:net';

export interface ListingGate {
  port: number;
  /** Whether a request for this path (a listing ends in '/') is answered with 403. */
  refuses: (path: string, method: string) => boolean;
  /** Milliseconds a request for this path waits before it is passed on (0: none). */
  delays: (path: string, method: string) => number;
  /** Requests refused so far. */
  refused: number;
  /** Every request that passed, as "METHOD path". */
  requests: string[];
  /** The same with their queries (an S3 listing names its prefix there), as "METHOD url". */
  urls: string[];
  close(): Promise<void>;
}

/** A proxy in front of the HTTP server on `port`; it delays and refuses nothing until told. */
export async function listingGate(port: number): Promise<ListingGate> {
  const proxy = createServer((request, response) => {
    const path = (request.url ?? '').split('?')[0] ?? '';
    const delay = gate.delays(path, request.method ?? '');
    if (delay > 0) {
      request.pause();
      setTimeout(() => pass(path, request, response), delay);
    } else pass(path, request, response);
  });
  const pass = (path: string, request: IncomingMessage, response: ServerResponse): void => {
    if (gate.refuses(path, request.method ?? '')) {
      gate.refused += 1;
      response.writeHead(403).end('refused');
      return;
    }
    gate.requests.push(`${request.method ?? ''} ${path}`);
    gate.urls.push(`${request.method ?? ''} ${request.url ?? ''}`);
    const upstream = httpRequest(
      {
        host: '127.0.0.1',
        port,
        method: request.method,
        path: request.url,
        headers: request.headers,
      },
      (answer) => {
        response.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(response);
      },
    );
    upstream.on('error', () => response.destroy());
    request.pipe(upstream);
  };
  const gate: ListingGate = {
    port: 0,
    refuses: () => false,
    delays: () => 0,
    refused: 0,
    requests: [],
    urls: [],
    close: () =>
      new Promise<void>((resolve) => {
        proxy.close(() => resolve());
        proxy.closeAllConnections();
      }),
  };
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  gate.port = (proxy.address() as AddressInfo).port;
  return gate;
}
