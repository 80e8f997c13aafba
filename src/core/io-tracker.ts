// Owns the completion of one dm-io request: a biased reference count and the per-region error
// bitset. The count starts at 1 (held by the dispatcher, so completion cannot fire while pieces
// are still being issued), rises by one per device request, and the dispatcher drops its bias
// after the region loop. The last drop completes the request exactly once.

import assert from '../assert.js';
import type { DeviceRequest } from '../devices/block-device.js';
import { IoError, type DmIoError } from '../errors.js';

/** What a completed dm-io request reports. */
export interface DmIoResult {
  /** Bit *i* set ⇔ region *i* failed (any of its device requests failed or was unsupported). */
  readonly errorBits: bigint;
  /** `errors[i]` is the first error of region *i*, or `undefined` when it succeeded. */
  readonly errors: ReadonlyArray<DmIoError | undefined>;
}

/** Tracks one request's outstanding device requests and its errors. */
export class IoTracker {
  #refs = 1;
  #errorBits = 0n;
  readonly #errors: Array<DmIoError | undefined>;
  readonly #complete: (result: DmIoResult) => void;

  constructor(regionCount: number, complete: (result: DmIoResult) => void) {
    this.#errors = new Array<DmIoError | undefined>(regionCount).fill(undefined);
    this.#complete = complete;
  }

  /** Counts one more outstanding device request. */
  take(): void {
    assert.ok(this.#refs > 0, 'take after completion');
    this.#refs += 1;
  }

  /** Ends one outstanding device request of region `regionIndex`, failed when `error`. */
  drop(regionIndex: number, error: DmIoError | null): void {
    assert.ok(this.#refs > 0, 'drop after completion');
    if (error !== null) {
      assert.ok(regionIndex >= 0 && regionIndex < this.#errors.length);
      this.#errorBits |= 1n << BigInt(regionIndex);
      this.#errors[regionIndex] ??= error;
    }
    this.#refs -= 1;
    if (this.#refs === 0) this.#complete({ errorBits: this.#errorBits, errors: this.#errors });
  }

  /** Drops the dispatcher's bias once every piece has been issued. */
  dropBias(): void {
    this.drop(0, null);
  }
}

/** The indexes of the set bits of an error bitset, ascending. */
export function failedRegions(errorBits: bigint): number[] {
  const indexes: number[] = [];
  for (let index = 0; errorBits >> BigInt(index) !== 0n; index += 1) {
    if ((errorBits >> BigInt(index)) & 1n) indexes.push(index);
  }
  return indexes;
}

/**
 * What a failed device request of region `regionIndex` reports. A failed read first zero-fills
 * its own segments (and nothing else), so the caller never sees stale bytes; an IoError is
 * copied to name its region.
 */
export function failedRequest(
  request: DeviceRequest, error: DmIoError, regionIndex: number,
): DmIoError {
  if (request.op === 'read') {
    for (const segment of request.segments) segment.fill(0);
  }
  return error instanceof IoError && error.regionIndex !== regionIndex ?
    error.withRegion(regionIndex) : error;
}
