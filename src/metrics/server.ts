import { createServer, type Server } from 'node:http';
import type { Logger } from 'pino';
import type { DriverMetrics } from './metrics.js';

export interface MetricsServer {
  /** The port actually bound (useful with :0). */
  port: number;
  close(): Promise<void>;
}

/** Splits "host:port", ":port" or "[::1]:port"; an empty host listens on every address. */
export function parseListenAddress(address: string): { host?: string; port: number } {
  const at = address.lastIndexOf(':');
  const host = address.slice(0, at).replace(/^\[(.*)\]$/, '$1');
  return { host: host === '' ? undefined : host, port: Number(address.slice(at + 1)) };
}

/** Serves GET /metrics in the Prometheus text format; nothing else. */
export async function startMetricsServer(
  address: string,
  metrics: DriverMetrics,
  log: Logger,
): Promise<MetricsServer> {
  const server: Server = createServer((req, res) => {
    if (req.method !== 'GET' || req.url?.split('?')[0] !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found; try /metrics\n');
      return;
    }
    metrics.render().then(
      (text) => res.writeHead(200, { 'content-type': metrics.contentType }).end(text),
      (err: unknown) => {
        log.error({ err }, 'metrics collection failed');
        res.writeHead(500, { 'content-type': 'text/plain' }).end('metrics collection failed\n');
      },
    );
  });
  const { host, port } = parseListenAddress(address);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  const bound = server.address();
  const actualPort = typeof bound === 'object' && bound !== null ? bound.port : port;
  log.info({ address, port: actualPort }, 'metrics listening');
  return {
    port: actualPort,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
