// Hands files to a transfer in batches while they are still being listed, one batch at a time, so a fill's transfer does not wait for the end of a long listing.

/**
 * Collects items as a listing finds them and runs `work` on them in batches: a batch starts with
 * everything collected so far whenever no batch is running and at least `minBatch` items wait (or
 * the listing has ended). A slow transfer thus gets ever bigger batches (few processes), a fast one
 * keeps pace with the listing.
 */
export class BatchPipeline<T> {
  private pending: T[] = [];
  private running: Promise<void> | undefined;
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
    if (this.running) return;
    const ready = this.pending.length >= this.minBatch || (this.ended && this.pending.length > 0);
    if (!ready || this.failure !== undefined) {
      if (this.ended) this.settled();
      return;
    }
    const batch = this.pending;
    this.pending = [];
    this.running = this.work(batch).then(
      () => {
        this.running = undefined;
        this.next();
      },
      (err: unknown) => {
        this.failure = err;
        this.running = undefined;
        this.next();
      },
    );
  }
}
