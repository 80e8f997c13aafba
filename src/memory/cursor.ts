// Owns the memory cursor: one forward walk over caller memory that hands out views of at most
// a requested length. The region loop asks for bytes and never learns the memory's shape.
// Invariants: a cursor only moves forward; `clone()` gives an independent walk from the same
// position, which is how every region of a multi-region write starts at the same byte; every
// view handed out is a multiple of 512 bytes long because the boundary validated the shape.

import assert from '../assert.js';
import { PAGE_SIZE } from '../constants.js';
import type { Bvec, DmIoMemory, PageListNode } from './types.js';

/** A forward walk over caller memory. */
export interface MemoryCursor {
  /**
   * Returns a view of the next bytes, at most `lengthBytesMax` long and never crossing the end
   * of contiguous memory, and moves past them.
   */
  take(lengthBytesMax: number): Uint8Array;
  /** An independent cursor at the same position. */
  clone(): MemoryCursor;
}

/** Walks a page list: the first page from `offset`, later pages whole; follows cycles. */
class PageListCursor implements MemoryCursor {
  #node: PageListNode | null;
  #offsetBytes: number;

  constructor(node: PageListNode | null, offsetBytes: number) {
    this.#node = node;
    this.#offsetBytes = offsetBytes;
  }

  /**
   * Pages that follow each other in memory (one slab, as a pool's) come back as one view, so
   * a 512 KiB walk over 128 slab pages costs one view, not 128.
   */
  take(lengthBytesMax: number): Uint8Array {
    const first = this.#node;
    assert.ok(first !== null, 'page list ran out: the boundary checks its length');
    assert.ok(lengthBytesMax > 0);
    const { buffer, byteOffset } = first.page;
    const runStartBytes = byteOffset + this.#offsetBytes;
    let runEndBytes = runStartBytes;
    let node: PageListNode | null = first;
    for (let pages = 0; node !== null && runEndBytes - runStartBytes < lengthBytesMax; pages += 1) {
      const pageStartBytes = node.page.byteOffset + this.#offsetBytes;
      if (pages > 0 && (node.page.buffer !== buffer || pageStartBytes !== runEndBytes)) break;
      const pieceBytes = Math.min(PAGE_SIZE - this.#offsetBytes,
        lengthBytesMax - (runEndBytes - runStartBytes));
      runEndBytes += pieceBytes;
      this.#offsetBytes += pieceBytes;
      if (this.#offsetBytes < PAGE_SIZE) break;
      node = node.next;
      this.#offsetBytes = 0;
    }
    this.#node = node;
    return new Uint8Array(buffer, runStartBytes, runEndBytes - runStartBytes);
  }

  clone(): MemoryCursor {
    return new PageListCursor(this.#node, this.#offsetBytes);
  }
}

/** Walks bio vectors in order; the last one may be consumed only partly. */
class BvecCursor implements MemoryCursor {
  readonly #bvecs: readonly Bvec[];
  #index: number;
  #doneBytes: number;

  constructor(bvecs: readonly Bvec[], index: number, doneBytes: number) {
    this.#bvecs = bvecs;
    this.#index = index;
    this.#doneBytes = doneBytes;
  }

  take(lengthBytesMax: number): Uint8Array {
    const bvec = this.#bvecs[this.#index];
    assert.ok(bvec !== undefined, 'bvecs ran out: the boundary checks their length');
    const start = bvec.offset + this.#doneBytes;
    const lengthBytes = Math.min(bvec.len - this.#doneBytes, lengthBytesMax);
    this.#doneBytes += lengthBytes;
    if (this.#doneBytes === bvec.len) {
      this.#index += 1;
      this.#doneBytes = 0;
    }
    return bvec.page.subarray(start, start + lengthBytes);
  }

  clone(): MemoryCursor {
    return new BvecCursor(this.#bvecs, this.#index, this.#doneBytes);
  }
}

/**
 * Walks one contiguous buffer from a start offset. Its bytes are contiguous, so a view is as
 * long as the caller asks (the kernel chunks vmalloc memory by page because its pages are not
 * physically contiguous; here they are, and the region loop would merge them anyway).
 */
class LinearCursor implements MemoryCursor {
  readonly #data: Uint8Array;
  #positionBytes: number;

  constructor(data: Uint8Array, positionBytes: number) {
    this.#data = data;
    this.#positionBytes = positionBytes;
  }

  take(lengthBytesMax: number): Uint8Array {
    const start = this.#positionBytes;
    const lengthBytes = Math.min(lengthBytesMax, this.#data.length - start);
    assert.ok(lengthBytes > 0, 'buffer ran out: the boundary checks its length');
    this.#positionBytes += lengthBytes;
    // The whole buffer is handed out as it is: a view costs more than the rest of a request.
    if (start === 0 && lengthBytes === this.#data.length) return this.#data;
    return this.#data.subarray(start, start + lengthBytes);
  }

  clone(): MemoryCursor {
    return new LinearCursor(this.#data, this.#positionBytes);
  }
}

/**
 * The first `lengthBytes` of validated contiguous memory (`vm`, `kmem`) as one view, with no
 * cursor: what a fresh cursor's first `take(lengthBytes)` returns. Null for the other kinds,
 * which are walked with a cursor. The whole buffer is handed out as it is.
 */
export function linearView(memory: DmIoMemory, lengthBytes: number): Uint8Array | null {
  if (memory.type !== 'vm' && memory.type !== 'kmem') return null;
  const startBytes = memory.type === 'kmem' ? memory.offset ?? 0 : 0;
  const { data } = memory;
  assert.ok(data.length - startBytes >= lengthBytes, 'the boundary checks the buffer length');
  if (startBytes === 0 && lengthBytes === data.length) return data;
  return data.subarray(startBytes, startBytes + lengthBytes);
}

/** Creates the cursor for validated memory, positioned at the transfer's first byte. */
export function createCursor(memory: DmIoMemory): MemoryCursor {
  switch (memory.type) {
    case 'page-list':
      return new PageListCursor(memory.list, memory.offset);
    case 'bvec':
      return new BvecCursor(memory.bvecs, 0, 0);
    case 'vm':
      return new LinearCursor(memory.data, 0);
    case 'kmem':
      return new LinearCursor(memory.data, memory.offset ?? 0);
  }
}
