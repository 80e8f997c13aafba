// Owns the bound on NBD commands in flight for one device: at most `requestsMax` commands and
// `bytesMax` payload bytes at once. Commands beyond it wait in a FIFO of at most `waitingMax`
// entries and start in arrival order as earlier ones finish; a command that would overflow the
// FIFO is refused, so neither the socket's write buffer nor the queue can grow without bound.
// A command larger than `bytesMax` alone still starts when nothing else is in flight, so the
// limiter can never deadlock.

import assert from './assert.js';
import type { NbdError } from './errors.js';

/** A command waiting for room. */
export interface LimiterEntry {
  /** Payload bytes the command moves (READ or WRITE length; 0 otherwise). */
  readonly payloadBytes: number;
  /** Starts the command; called once room is granted. */
  readonly start: () => void;
  /** Fails the command without starting it (the device broke while it waited). */
  readonly reject: (error: NbdError) => void;
}

/** Bounds of a limiter. */
export interface LimiterBounds {
  /** Most commands in flight at once. */
  readonly requestsMax: number;
  /** Most payload bytes in flight at once. */
  readonly bytesMax: number;
  /** Most commands waiting for room. */
  readonly waitingMax: number;
}

/** Counts commands and bytes in flight and queues the excess in FIFO order. */
export class InflightLimiter {
  private readonly bounds: LimiterBounds;
  private readonly waiting: LimiterEntry[] = [];
  private waitingHead = 0;
  private inflightRequests = 0;
  private inflightBytes = 0;

  constructor(bounds: LimiterBounds) {
    assert.ok(bounds.requestsMax >= 1 && bounds.bytesMax >= 1 && bounds.waitingMax >= 0);
    this.bounds = bounds;
  }

  /** Commands currently admitted. */
  get requests(): number {
    return this.inflightRequests;
  }

  /** Payload bytes currently admitted. */
  get bytes(): number {
    return this.inflightBytes;
  }

  /** Commands waiting for room. */
  get waitingCount(): number {
    return this.waiting.length - this.waitingHead;
  }

  /**
   * Starts `entry` now if there is room, or queues it. Returns false, without starting or
   * queueing, when the FIFO is full.
   */
  admit(entry: LimiterEntry): boolean {
    if (this.waitingCount === 0 && this.fits(entry.payloadBytes)) {
      this.take(entry.payloadBytes);
      entry.start();
      return true;
    }
    if (this.waitingCount >= this.bounds.waitingMax) return false;
    this.waiting.push(entry);
    return true;
  }

  /** Returns the room a finished command held, then starts waiting commands that now fit. */
  release(payloadBytes: number): void {
    assert.ok(this.inflightRequests >= 1, 'release without admit');
    assert.ok(this.inflightBytes >= payloadBytes);
    this.inflightRequests -= 1;
    this.inflightBytes -= payloadBytes;
    while (this.waitingCount > 0) {
      const head = this.waiting[this.waitingHead];
      assert.ok(head !== undefined);
      if (!this.fits(head.payloadBytes)) break;
      this.waiting[this.waitingHead] = undefined as unknown as LimiterEntry;
      this.waitingHead += 1;
      this.compact();
      this.take(head.payloadBytes);
      head.start();
    }
  }

  /** Removes and returns every waiting command (to fail them when the device breaks). */
  takeWaiting(): LimiterEntry[] {
    const taken = this.waiting.slice(this.waitingHead);
    this.waiting.length = 0;
    this.waitingHead = 0;
    return taken;
  }

  private fits(payloadBytes: number): boolean {
    if (this.inflightRequests === 0) return true;
    return this.inflightRequests < this.bounds.requestsMax &&
      this.inflightBytes + payloadBytes <= this.bounds.bytesMax;
  }

  private take(payloadBytes: number): void {
    this.inflightRequests += 1;
    this.inflightBytes += payloadBytes;
    assert.ok(this.inflightRequests <= this.bounds.requestsMax || this.inflightRequests === 1);
  }

  /** Drops the consumed prefix of the FIFO once it dominates the array. */
  private compact(): void {
    if (this.waitingHead >= 1024 && this.waitingHead * 2 >= this.waiting.length) {
      this.waiting.splice(0, this.waitingHead);
      this.waitingHead = 0;
    }
  }
}
