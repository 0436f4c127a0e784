// Room of the copy promised to fills: a file a fill took room for keeps it until it is installed or the fill ends, so promotions meanwhile cannot take the same bytes twice.
import type { Room } from '../tier/layout.js';

/**
 * The room one fill (or one promotion) took, per file. Its `left` is measured once as the fill starts (the copy's
 * room less what other fills hold); each file it admits takes its size from there and holds it
 * in the copy's ledger until the file enters the copy (by this fill or a promotion) or the fill
 * ends.
 */
export class FillRoom implements Room {
  private left = 0;
  private readonly files = new Map<string, number>();
  private held = 0;

  constructor(private readonly ledger: RoomLedger) {}

  /** Starts from what the copy has room for now. */
  measured(bytes: number): void {
    this.left = bytes;
  }

  take(entry: { relative: string; size: number }): boolean {
    // The same file offered again (a tier that refused it, then the remote) holds its room once.
    if (this.files.has(entry.relative)) return true;
    if (entry.size > this.left) return false;
    this.left -= entry.size;
    this.files.set(entry.relative, entry.size);
    this.held += entry.size;
    return true;
  }

  /** Bytes admitted and not in the copy yet. */
  get holding(): number {
    return this.held;
  }

  heldFor(relative: string): number {
    return this.files.get(relative) ?? 0;
  }

  /** The file entered the copy: its bytes are the copy's own figure from now on. */
  settle(relative: string): void {
    const size = this.files.get(relative);
    if (size === undefined) return;
    this.files.delete(relative);
    this.held -= size;
  }

  /** The fill ended: what it did not install gives its room back. */
  close(): void {
    this.files.clear();
    this.held = 0;
    this.ledger.closed(this);
  }
}

/** The copy's open fill rooms. */
export class RoomLedger {
  private readonly rooms = new Set<FillRoom>();

  open(): FillRoom {
    const room = new FillRoom(this);
    this.rooms.add(room);
    return room;
  }

  closed(room: FillRoom): void {
    this.rooms.delete(room);
  }

  /** Bytes fills admitted that are not in the copy yet. */
  holding(): number {
    let bytes = 0;
    for (const room of this.rooms) bytes += room.holding;
    return bytes;
  }

  /** Bytes held for this file (a promotion of it may use them: it is the same file). */
  heldFor(relative: string): number {
    let bytes = 0;
    for (const room of this.rooms) bytes = Math.max(bytes, room.heldFor(relative));
    return bytes;
  }

  settle(relative: string): void {
    for (const room of this.rooms) room.settle(relative);
  }
}
