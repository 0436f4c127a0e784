// Hands files to a transfer in batches while they are still being listed, so a fill's transfer does not wait for the end of a long listing.

/**
 * Collects items as a listing finds them and runs `work` on them in batches: while the listing
 * goes on, a batch starts with everything collected so far whenever no batch is running and at
 * least `minBatch` items wait. A slow transfer thus gets ever bigger batches (few processes), a
 * fast one keeps pace with the listing. Once the listing has ended, what is left starts at once,
 * beside a batch still running: the last batch does not wait for the tail of the one before (by
 * rclone alone, 5,000 small files over HTTP as 1,000 then 4,000 one after the other took 3.4-3.5 s,
 * as one process 2.4-2.9 s).
 */
export class BatchPipeline<T> {
  private pending: T[] = [];
  private running = 0;
  private ended = false;
  private failure: unknown;
  private settled: () => void = () => undefined;
  private readonly idle = new Promise<void>((resolve) => {
    this.settled = resolve;
  });

  constructor(
    private readonly minBatch: number,
    private readonly work: (batch: T[]) => Promise<void>,
  ) {}

  add(item: T): void {
    this.pending.push(item);
    this.next();
  }

  /** No more items: runs what is left, and resolves once every batch is done (or rejects with the first failure). */
  async finish(): Promise<void> {
    this.ended = true;
    this.next();
    await this.idle;
    if (this.failure !== undefined) throw this.failure;
  }

  private next(): void {
    const ready = this.ended
      ? this.pending.length > 0
      : this.running === 0 && this.pending.length >= this.minBatch;
    if (!ready || this.failure !== undefined) {
      if (this.ended && this.running === 0) this.settled();
      return;
    }
    const batch = this.pending;
    this.pending = [];
    this.running += 1;
    const done = () => {
      this.running -= 1;
      this.next();
    };
    this.work(batch).then(done, (err: unknown) => {
      this.failure ??= err;
      done();
    });
  }
}
