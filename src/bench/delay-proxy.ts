/**
 * A TCP proxy that delays every byte by a fixed time in each direction: the latency half of an
 * emulated link (this kernel has no netem; HTB does the rate). Usage:
 * delay-proxy.js LISTEN_HOST LISTEN_PORT TARGET_HOST TARGET_PORT DELAY_MS
 */
import { createServer, connect, type Socket } from 'node:net';

const [listenHost, listenPort, targetHost, targetPort, delay] = process.argv.slice(2);
const delayMs = Number(delay);
/** Bytes held in one direction before the sender is paused (well above rate × delay). */
const HIGH_WATER = 8 << 20;

/** Forwards from → to, each chunk delayed, in order, with backpressure. */
function pipeDelayed(from: Socket, to: Socket): void {
  const queue: { due: number; chunk: Buffer }[] = [];
  let held = 0;
  let timer: NodeJS.Timeout | undefined;
  let ended = false;
  // Bytes waiting here plus bytes the outgoing socket has not sent yet (its link may be slower).
  const backlog = (): number => held + to.writableLength;
  const flush = (): void => {
    timer = undefined;
    const now = performance.now();
    while (queue.length > 0 && (queue[0]?.due ?? Infinity) <= now) {
      const { chunk } = queue.shift() as { chunk: Buffer };
      held -= chunk.length;
      to.write(chunk);
    }
    if (backlog() < HIGH_WATER && from.isPaused()) from.resume();
    if (queue.length > 0) {
      timer = setTimeout(flush, Math.max(0, (queue[0]?.due ?? now) - now));
    } else if (ended) {
      to.end();
    }
  };
  from.on('data', (chunk: Buffer) => {
    queue.push({ due: performance.now() + delayMs, chunk });
    held += chunk.length;
    if (backlog() >= HIGH_WATER) from.pause();
    timer ??= setTimeout(flush, delayMs);
  });
  from.on('end', () => {
    ended = true;
    timer ??= setTimeout(flush, delayMs);
  });
  to.on('drain', () => {
    if (backlog() < HIGH_WATER) from.resume();
  });
}

const server = createServer({ noDelay: true }, (client) => {
  const upstream = connect({ host: targetHost as string, port: Number(targetPort), noDelay: true });
  pipeDelayed(client, upstream);
  pipeDelayed(upstream, client);
  const close = (): void => {
    client.destroy();
    upstream.destroy();
  };
  client.on('error', close);
  upstream.on('error', close);
  client.on('close', () => upstream.end());
  upstream.on('close', () => client.end());
});
server.listen(Number(listenPort), listenHost);
process.on('SIGTERM', () => process.exit(0));
