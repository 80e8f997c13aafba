// Owns the one bound on work in flight that every layer uses: at most `requestsMax` entries and
// `bytesMax` held bytes admitted at once, the excess waiting in a FIFO of at most `waitingMax`
// entries. NBD devices bound their commands with it (held bytes = payload), the dm-io client its
// device requests (held bytes = bounce-pool bytes), copy offload its `copy_file_range` calls.
//
// Invariants: waiters start strictly in arrival order (no overtaking, even by an entry that
// would fit); the FIFO never holds more than `waitingMax` entries, an entry that would overflow
// it is refused without being started or queued; an entry holding more than `bytesMax` alone
// still starts when nothing else is admitted, so the limiter can never deadlock.

import assert from './assert.js';

/** Consumed FIFO slots tolerated before the array is compacted (amortises the splice). */
const COMPACT_AFTER_ENTRIES = 1024;

/** Work waiting for room. `E` is what `reject` receives when the owner takes waiters back. */
export interface LimiterEntry<E = Error> {
  /** Bytes of the bounded budget the entry holds while admitted (0 for none). */
  readonly heldBytes: number;
  /** Starts the work; called once room is granted. */
  readonly start: () => void;
  /** Fails the work without starting it (its owner broke while it waited). */
  readonly reject: (error: E) => void;
}

/** Bounds of a limiter. */
export interface LimiterBounds {
  /** Most entries admitted at once. */
  readonly requestsMax: number;
  /** Most held bytes admitted at once. */
  readonly bytesMax: number;
  /** Most entries waiting for room. */
  readonly waitingMax: number;
}

/** Counts entries and held bytes admitted and queues the excess in FIFO order. */
export class InflightLimiter<E = Error> {
  readonly #bounds: LimiterBounds;
  readonly #waiting: Array<LimiterEntry<E> | undefined> = [];
  #waitingHead = 0;
  #requests = 0;
  #bytes = 0;

  constructor(bounds: LimiterBounds) {
    assert.ok(bounds.requestsMax >= 1, 'a limiter admits at least one entry');
    assert.ok(bounds.bytesMax >= 1, 'a limiter admits at least one byte');
    assert.ok(bounds.waitingMax >= 0);
    this.#bounds = bounds;
  }

  /** Entries currently admitted. */
  get requests(): number {
    return this.#requests;
  }

  /** Held bytes currently admitted. */
  get bytes(): number {
    return this.#bytes;
  }

  /** Entries waiting for room. */
  get waitingCount(): number {
    return this.#waiting.length - this.#waitingHead;
  }

  /** Most entries that may wait. */
  get waitingMax(): number {
    return this.#bounds.waitingMax;
  }

  /**
   * Admits work holding `heldBytes` now when nothing waits and it fits, and returns true; the
   * caller then starts it itself (the allocation-free form of `admit`). Returns false, taking
   * nothing, otherwise.
   */
  tryAcquire(heldBytes: number): boolean {
    if (this.waitingCount !== 0 || !this.#fits(heldBytes)) return false;
    this.#take(heldBytes);
    return true;
  }

  /**
   * Starts `entry` now if there is room, or queues it. Returns false, without starting or
   * queueing, when the FIFO is full.
   */
  admit(entry: LimiterEntry<E>): boolean {
    if (this.tryAcquire(entry.heldBytes)) {
      entry.start();
      return true;
    }
    if (this.waitingCount >= this.#bounds.waitingMax) return false;
    this.#waiting.push(entry);
    return true;
  }

  /**
   * True when entries holding `heldBytesList` (in that order), admitted now one after another,
   * would all be started or queued, none refused. Nothing is admitted.
   */
  admitsAll(heldBytesList: readonly number[]): boolean {
    let requests = this.#requests;
    let bytes = this.#bytes;
    let waiting = this.waitingCount;
    for (const heldBytes of heldBytesList) {
      if (waiting === 0 && this.#fitsWith(requests, bytes, heldBytes)) {
        requests += 1;
        bytes += heldBytes;
      } else {
        waiting += 1;
        if (waiting > this.#bounds.waitingMax) return false;
      }
    }
    return true;
  }

  /** Returns the room a finished entry held, then starts waiting entries that now fit. */
  release(heldBytes: number): void {
    assert.ok(this.#requests >= 1, 'release without admit');
    assert.ok(this.#bytes >= heldBytes, 'release of more bytes than were admitted');
    this.#requests -= 1;
    this.#bytes -= heldBytes;
    while (this.waitingCount > 0) {
      const head = this.#waiting[this.#waitingHead];
      assert.ok(head !== undefined);
      if (!this.#fits(head.heldBytes)) break;
      this.#waiting[this.#waitingHead] = undefined;
      this.#waitingHead += 1;
      this.#compact();
      this.#take(head.heldBytes);
      head.start();
    }
  }

  /** Removes and returns every waiting entry (to reject them when the owner breaks). */
  takeWaiting(): Array<LimiterEntry<E>> {
    const taken = this.#waiting.slice(this.#waitingHead) as Array<LimiterEntry<E>>;
    this.#waiting.length = 0;
    this.#waitingHead = 0;
    return taken;
  }

  #fits(heldBytes: number): boolean {
    return this.#fitsWith(this.#requests, this.#bytes, heldBytes);
  }

  #fitsWith(requests: number, bytes: number, heldBytes: number): boolean {
    if (requests === 0) return true;
    return requests < this.#bounds.requestsMax && bytes + heldBytes <= this.#bounds.bytesMax;
  }

  #take(heldBytes: number): void {
    this.#requests += 1;
    this.#bytes += heldBytes;
    assert.ok(this.#requests <= this.#bounds.requestsMax || this.#requests === 1);
  }

  /** Drops the consumed prefix of the FIFO once it dominates the array. */
  #compact(): void {
    if (this.#waitingHead >= COMPACT_AFTER_ENTRIES &&
        this.#waitingHead * 2 >= this.#waiting.length) {
      this.#waiting.splice(0, this.#waitingHead);
      this.#waitingHead = 0;
    }
  }
}
