// Owns a bounded pool of aligned pages allocated once, up front. Pages are handed out whole and
// zeroed on return, so no caller ever sees another's bytes. When the pool is empty, work waits
// (the client queues it); the pool never grows. `assertAllReturned` is the leak check run when
// the owner is destroyed, like kcopyd's client_free_pages.

import assert from '../assert.js';
import { allocAlignedPages } from './aligned.js';

/** A fixed set of `PAGE_SIZE` pages from one aligned slab. */
export class PagePool {
  /** Pages the pool owns in total. */
  readonly capacityPages: number;
  readonly #free: Uint8Array[];

  constructor(capacityPages: number) {
    assert.ok(Number.isSafeInteger(capacityPages) && capacityPages >= 0);
    this.capacityPages = capacityPages;
    this.#free = capacityPages === 0 ? [] : allocAlignedPages(capacityPages);
  }

  /** Pages available right now. */
  get freePages(): number {
    return this.#free.length;
  }

  /** Takes `pageCount` pages, or returns `null` (taking none) when fewer are free. */
  tryTake(pageCount: number): Uint8Array[] | null {
    assert.ok(pageCount >= 1 && pageCount <= this.capacityPages, 'request fits the pool');
    if (this.#free.length < pageCount) return null;
    return this.#free.splice(this.#free.length - pageCount, pageCount);
  }

  /** Returns pages taken from this pool; they are zeroed before anyone sees them again. */
  give(pages: readonly Uint8Array[]): void {
    for (const page of pages) {
      page.fill(0);
      this.#free.push(page);
    }
    assert.ok(this.#free.length <= this.capacityPages, 'a page was returned twice');
  }

  /** Asserts that every page came back (the leak check run on destroy). */
  assertAllReturned(): void {
    assert.equal(this.#free.length, this.capacityPages,
      `${this.capacityPages - this.#free.length} pool pages were never returned`);
  }
}
