// The health loop: the supervision round, run every interval and at once when a client exits, never two at a time.
import type { Logger } from 'pino';

/**
 * Runs the supervision round every interval, and at once when a client is seen to exit. Rounds
 * never overlap; a trigger during a round asks for one more right after it.
 */
export class HealthLoop {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private again = false;
  private stopped = false;

  constructor(
    private readonly round: () => Promise<void>,
    private readonly intervalMs: number,
    private readonly log: Logger,
  ) {}

  start(): void {
    this.timer = setInterval(() => this.trigger(), this.intervalMs);
    this.timer.unref();
  }

  trigger(): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = (async () => {
      do {
        this.again = false;
        try {
          await this.round();
        } catch (err) {
          this.log.error({ err }, 'supervision round failed');
        }
      } while (this.again);
      this.running = undefined;
    })();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    this.timer = undefined;
    await this.running;
  }
}
