// What rclone copy's JSON log says, line by line: files written whole (handed on at once), files refused as corrupted, and the errors that decide how the copy ended.

/** How a copy ended. */
export interface CopyResult {
  /**
   * Whether both ends answered for every file: rclone copied them all, or refused only files
   * whose bytes were not what the source said they were (`corrupted`).
   */
  ok: boolean;
  /** rclone's last error, the one that made `ok` false first. */
  reason: string;
  /**
   * Files rclone refused since the bytes it read were not as listed (size or hash: an object
   * written while it was read, or changed in place): not in the destination, not a failure of the
   * source, which answered.
   */
  corrupted: string[];
  /**
   * Files rclone could not write for want of room (the destination's file system full): not in
   * the destination either, and no failure of the source, which answered.
   */
  noSpace: string[];
}

interface JsonLogLine {
  level?: string;
  msg?: string;
  object?: string;
}

/** What rclone logs for a file it copied whole ("Copied (new)", "Multi-thread Copied (new)"…). */
const COPIED = /^(Multi-thread )?Copied\b/;

/** The line rclone adds for a file it streamed without knowing its size. */
const RCAT = /\(Rcat\b/;

/** rclone's error for a file read whole whose size or hash differs from the source's. */
const CORRUPTED = /corrupted on transfer/;

/** The destination's file system (or its quota) is full. */
const NO_SPACE = /no space left on device|disk quota exceeded/i;

/**
 * Reads one copy's log (`--use-json-log`). The work `onCopied` returns for each file runs one file
 * at a time in rclone's order; a failure does not stop the rest, and the first one is what
 * result() rejects with once all of it is done.
 */
export class CopyLog {
  private lastError = '';
  private otherError = '';
  private readonly corrupted = new Set<string>();
  private readonly noSpace = new Set<string>();
  private readonly reported = new Set<string>();
  private handled: Promise<void> = Promise.resolve();
  private handlerFailure: { error: unknown } | undefined;

  constructor(
    private readonly onCopied: (relative: string) => void | Promise<void>,
    /** The name the caller knows a file by, from rclone's (relative to where the copy started). */
    private readonly nameOf: (name: string) => string = (name) => name,
  ) {}

  read(line: string): void {
    let parsed: JsonLogLine;
    try {
      parsed = JSON.parse(line) as JsonLogLine;
    } catch {
      return;
    }
    // rclone writes the destination in place and logs "Copied" once the file is whole.
    const copied = parsed.object;
    if (copied !== undefined && COPIED.test(parsed.msg ?? '')) {
      // A small file fetched without its size known (HTTP without HEAD) is logged twice: copied
      // from memory, then "Copied (Rcat, new)"; only that second line is folded (a big file of
      // unknown size gets it alone, and a file rclone copies again is handed on again).
      if (RCAT.test(parsed.msg ?? '') && this.reported.has(copied)) return;
      this.reported.add(copied);
      this.handled = this.handled
        .then(() => this.onCopied(this.nameOf(copied)))
        .catch((error: unknown) => {
          this.handlerFailure ??= { error };
        });
    } else if (parsed.level === 'error') {
      this.lastError = [parsed.object, parsed.msg].filter((part) => part).join(': ');
      // rclone's closing "Attempt 1/1 failed with N errors and: <last error>" repeats one.
      const msg = parsed.msg ?? '';
      const refused = CORRUPTED.test(msg)
        ? this.corrupted
        : NO_SPACE.test(msg)
          ? this.noSpace
          : undefined;
      if (refused === undefined) this.otherError = this.lastError;
      else if (parsed.object) refused.add(this.nameOf(parsed.object));
    }
  }

  /** Once rclone exited (`succeeded`: with status 0) and its log was read to the end. */
  async result(succeeded: boolean): Promise<CopyResult> {
    await this.handled;
    if (this.handlerFailure) throw this.handlerFailure.error;
    const answered =
      succeeded || (this.otherError === '' && this.corrupted.size + this.noSpace.size > 0);
    return {
      ok: answered,
      reason: this.otherError || this.lastError,
      corrupted: [...this.corrupted],
      noSpace: [...this.noSpace],
    };
  }
}
