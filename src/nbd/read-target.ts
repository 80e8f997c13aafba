// Owns delivery of READ reply bytes into a request's segments: copied from the socket's staging
// buffer, or read there directly through a view (`view`); no reply payload is ever gathered
// into an intermediate buffer. It also keeps the coverage bookkeeping the structured-reply
// rules need: data and hole chunks may arrive in any order but must never overlap and must
// cover the request exactly. Coverage is a sorted list of disjoint byte ranges, merged as they
// touch, so in-order chunks keep it at one entry; its length is capped (READ_REPLY_RANGES_MAX)
// so a hostile server cannot grow it without bound.

import assert from '../assert.js';
import { READ_REPLY_RANGES_MAX } from './protocol.js';

/** Why a range could not be recorded. */
export type CoverResult = 'ok' | 'overlap' | 'outside' | 'too-many-ranges';

/** The destination of one READ: `lengthBytes` spread over `segments` in order. */
export class ReadTarget {
  /** Bytes the READ asked for. */
  readonly lengthBytes: number;
  readonly #segments: readonly Uint8Array[];
  /** Byte offset of each segment's first byte inside the request. */
  readonly #segmentStarts: number[];
  #segmentHint = 0;
  /** Flat [start0, end0, start1, end1, ...] of covered ranges, sorted, disjoint, non-touching. */
  readonly #ranges: number[] = [];
  #coveredBytes = 0;

  constructor(segments: readonly Uint8Array[], lengthBytes: number) {
    this.#segments = segments;
    this.lengthBytes = lengthBytes;
    this.#segmentStarts = [];
    let startBytes = 0;
    for (const segment of segments) {
      this.#segmentStarts.push(startBytes);
      startBytes += segment.length;
    }
    assert.equal(startBytes, lengthBytes, 'segments must add up to the request');
  }

  /** True once every byte of the request has been delivered. */
  get complete(): boolean {
    return this.#coveredBytes === this.lengthBytes;
  }

  /**
   * Records that `[offsetBytes, offsetBytes + lengthBytes)` of the request will be delivered
   * by one chunk. Must be called before the chunk's bytes are copied.
   */
  cover(offsetBytes: number, lengthBytes: number): CoverResult {
    const endBytes = offsetBytes + lengthBytes;
    if (offsetBytes < 0 || endBytes > this.lengthBytes) return 'outside';
    if (lengthBytes === 0) return 'ok';
    const ranges = this.#ranges;
    // Index of the first range whose end is ≥ offsetBytes (touching counts, for merging).
    let low = 0;
    let high = ranges.length / 2;
    while (low < high) {
      const middle = (low + high) >>> 1;
      if ((ranges[middle * 2 + 1] ?? 0) < offsetBytes) low = middle + 1;
      else high = middle;
    }
    const index = low * 2;
    const nextStart = ranges[index];
    if (nextStart !== undefined && nextStart < endBytes && (ranges[index + 1] ?? 0) > offsetBytes) {
      return 'overlap';
    }
    this.#insertRange(index, offsetBytes, endBytes);
    if (ranges.length / 2 > READ_REPLY_RANGES_MAX) return 'too-many-ranges';
    this.#coveredBytes += lengthBytes;
    return 'ok';
  }

  /** Copies `source` to request byte `offsetBytes` onward, across segment boundaries. */
  copyIn(offsetBytes: number, source: Uint8Array): void {
    let doneBytes = 0;
    while (doneBytes < source.length) {
      const index = this.#locate(offsetBytes + doneBytes);
      const segment = this.#segments[index];
      const segmentStart = this.#segmentStarts[index];
      assert.ok(segment !== undefined && segmentStart !== undefined);
      const within = offsetBytes + doneBytes - segmentStart;
      const stepBytes = Math.min(segment.length - within, source.length - doneBytes);
      segment.set(source.subarray(doneBytes, doneBytes + stepBytes), within);
      doneBytes += stepBytes;
    }
  }

  /**
   * The longest run of one segment from request byte `offsetBytes`, at most `lengthBytes`
   * long: memory a socket read may fill directly. Empty only when `lengthBytes` is 0.
   */
  view(offsetBytes: number, lengthBytes: number): Uint8Array {
    assert.ok(offsetBytes >= 0 && offsetBytes + lengthBytes <= this.lengthBytes);
    if (lengthBytes === 0) return new Uint8Array(0);
    const index = this.#locate(offsetBytes);
    const segment = this.#segments[index];
    const segmentStart = this.#segmentStarts[index];
    assert.ok(segment !== undefined && segmentStart !== undefined);
    const within = offsetBytes - segmentStart;
    return segment.subarray(within, within + Math.min(segment.length - within, lengthBytes));
  }

  /** Zero-fills `lengthBytes` of the request from `offsetBytes` (an OFFSET_HOLE chunk). */
  zeroFill(offsetBytes: number, lengthBytes: number): void {
    let doneBytes = 0;
    while (doneBytes < lengthBytes) {
      const index = this.#locate(offsetBytes + doneBytes);
      const segment = this.#segments[index];
      const segmentStart = this.#segmentStarts[index];
      assert.ok(segment !== undefined && segmentStart !== undefined);
      const within = offsetBytes + doneBytes - segmentStart;
      const stepBytes = Math.min(segment.length - within, lengthBytes - doneBytes);
      segment.fill(0, within, within + stepBytes);
      doneBytes += stepBytes;
    }
  }

  /**
   * Inserts [startBytes, endBytes) at `index`, the first range ending at or after startBytes
   * (ranges before it end strictly before startBytes, so only it and its successor can touch).
   * Example: ranges [0,4096) [8192,12288); inserting [4096,8192) at index 0 extends the first
   * range to 8192, which then touches the second, so both merge into [0,12288).
   */
  #insertRange(index: number, startBytes: number, endBytes: number): void {
    const ranges = this.#ranges;
    if (ranges[index + 1] === startBytes) {
      ranges[index + 1] = endBytes;
      if (ranges[index + 2] === endBytes) ranges.splice(index + 1, 2);
    } else if (ranges[index] === endBytes) {
      ranges[index] = startBytes;
    } else {
      ranges.splice(index, 0, startBytes, endBytes);
    }
  }

  #locate(offsetBytes: number): number {
    const starts = this.#segmentStarts;
    const hint = this.#segmentHint;
    const hinted = this.#segments[hint];
    const hintStart = starts[hint];
    if (hinted !== undefined && hintStart !== undefined &&
      offsetBytes >= hintStart && offsetBytes < hintStart + hinted.length) {
      return hint;
    }
    let low = 0;
    let high = starts.length - 1;
    while (low < high) {
      const middle = (low + high + 1) >>> 1;
      if ((starts[middle] ?? 0) <= offsetBytes) low = middle;
      else high = middle - 1;
    }
    // Skip empty segments that share a start with the next one.
    while ((this.#segments[low]?.length ?? 0) === 0 && low < starts.length - 1) low += 1;
    this.#segmentHint = low;
    return low;
  }
}
