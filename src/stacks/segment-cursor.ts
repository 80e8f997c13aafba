// Owns cutting a request's memory into the pieces that go to its targets: a cursor over the
// segments that hands out the next N bytes as views (subarrays, never copies).

/** Walks `segments` in order, handing out views of the next bytes. */
export class SegmentCursor {
  readonly #segments: readonly Uint8Array[];
  #index = 0;
  #offsetBytes = 0;

  constructor(segments: readonly Uint8Array[]) {
    this.#segments = segments;
  }

  /** Views of the next `lengthBytes` bytes (fewer only when the segments run out). */
  take(lengthBytes: number): Uint8Array[] {
    const views: Uint8Array[] = [];
    let remaining = lengthBytes;
    while (remaining > 0 && this.#index < this.#segments.length) {
      const segment = this.#segments[this.#index] as Uint8Array;
      const available = segment.length - this.#offsetBytes;
      const takeBytes = Math.min(available, remaining);
      if (takeBytes > 0) {
        views.push(this.#offsetBytes === 0 && takeBytes === segment.length ? segment :
          segment.subarray(this.#offsetBytes, this.#offsetBytes + takeBytes));
      }
      remaining -= takeBytes;
      this.#offsetBytes += takeBytes;
      if (this.#offsetBytes === segment.length) {
        this.#index += 1;
        this.#offsetBytes = 0;
      }
    }
    return views;
  }
}
