// Owns a kcopyd client's buffer pages. Two sources, tried in the kernel's order: first a
// "fresh" allocation (by default a bounded pool of aligned pages allocated with the client;
// injectable, so a test can make it fail), then the client's reserve, which holds exactly one
// sub-job's pages. A request is all or nothing: when neither source can supply it, nothing is
// taken and the job waits (the caller keeps it at the head of its list, so jobs stay FIFO).
// Because the reserve holds one sub-job, at least one job can always make progress.
//
// Invariants: pages go back to the source they came from; the reserve never holds more than
// its size (PagePool asserts it); `assertAllReturned` is the leak check run on destroy.

import assert from '../assert.js';
import { PagePool } from '../memory/page-pool.js';

/**
 * Where fresh pages come from. `tryTake(pageCount)` returns that many `PAGE_SIZE` pages or
 * `null` (taking none); `give(pages)` takes them back. `PagePool` satisfies it.
 */
export interface KcopydPageSource {
  /** Returns `pageCount` pages, or `null` when it cannot. */
  tryTake(pageCount: number): Uint8Array[] | null;
  /** Takes back pages this source handed out. */
  give(pages: readonly Uint8Array[]): void;
}

/** Pages granted to one job, with the source they must go back to. */
export interface PageGrant {
  readonly pages: Uint8Array[];
  readonly source: KcopydPageSource;
}

/** A client's reserve plus its fresh source. */
export class PageReserve {
  /** Pages in the reserve: one sub-job's worth. */
  readonly reservedPages: number;
  readonly #reserve: PagePool;
  readonly #fresh: KcopydPageSource | null;
  readonly #freshPagesMax: number;
  #pagesOut = 0;

  constructor(reservedPages: number, fresh: KcopydPageSource | null, freshPagesMax: number) {
    assert.ok(reservedPages >= 1);
    this.reservedPages = reservedPages;
    this.#reserve = new PagePool(reservedPages);
    this.#fresh = fresh;
    this.#freshPagesMax = freshPagesMax;
  }

  /** Pages free in the reserve now. */
  get reserveFreePages(): number {
    return this.#reserve.freePages;
  }

  /** Pages handed out and not yet given back, from either source. */
  get pagesOut(): number {
    return this.#pagesOut;
  }

  /** Takes `pageCount` pages: fresh first, then the reserve; `null` when neither can. */
  take(pageCount: number): PageGrant | null {
    assert.ok(pageCount >= 1 && pageCount <= this.reservedPages, 'a job fits the reserve');
    let grant: PageGrant | null = null;
    if (this.#fresh !== null && pageCount <= this.#freshPagesMax) {
      const pages = this.#fresh.tryTake(pageCount);
      if (pages !== null) grant = { pages, source: this.#fresh };
    }
    if (grant === null) {
      const pages = this.#reserve.tryTake(pageCount);
      if (pages !== null) grant = { pages, source: this.#reserve };
    }
    if (grant === null) return null;
    assert.equal(grant.pages.length, pageCount, 'a page source returned the wrong page count');
    this.#pagesOut += pageCount;
    return grant;
  }

  /** Gives a grant's pages back to their source. */
  give(grant: PageGrant): void {
    this.#pagesOut -= grant.pages.length;
    assert.ok(this.#pagesOut >= 0, 'more pages given back than taken');
    grant.source.give(grant.pages);
  }

  /** Asserts every page came back and the reserve is full (kcopyd's destroy check). */
  assertAllReturned(): void {
    assert.equal(this.#pagesOut, 0, `${this.#pagesOut} kcopyd pages were never returned`);
    this.#reserve.assertAllReturned();
  }
}

/** The default fresh source: a bounded pool of `pageCount` aligned pages, or none for 0. */
export function defaultFreshSource(pageCount: number): KcopydPageSource | null {
  return pageCount === 0 ? null : new PagePool(pageCount);
}
