// Owns page-aligned memory. Node cannot allocate aligned Buffers, and O_DIRECT refuses
// unaligned ones; views into a WebAssembly.Memory start on a 64 KiB boundary, so they are a
// pure-JavaScript source of aligned pages. A registry remembers which ArrayBuffers came from
// here, so dm-io can tell aligned caller memory from memory it must bounce.

import assert from '../assert.js';
import { PAGE_SIZE } from '../constants.js';
import { divCeil } from '../units.js';
import { OutOfRangeError } from '../errors.js';

/** WebAssembly pages are 64 KiB; their buffers start on such a boundary. */
const WASM_PAGE_BYTES = 64 * 1024;
/** WebAssembly.Memory cannot exceed 4 GiB on 64-bit hosts; keep one allocation below that. */
const ALIGNED_BYTES_MAX = 2 * 1024 * 1024 * 1024;

/** ArrayBuffers whose first byte sits on a `WASM_PAGE_BYTES` boundary. */
const alignedBuffers = new WeakSet<ArrayBufferLike>();

/**
 * Allocates `lengthBytes` of zeroed memory whose first byte is page aligned (at least 4096,
 * in fact 64 KiB). Such memory goes to O_DIRECT devices without a bounce copy.
 *
 * @throws OutOfRangeError (`DMIO_ERR_OUT_OF_RANGE`) for a length below 1 or above 2 GiB.
 * @example
 * const buffer = allocAligned(1024 * 1024);
 */
export function allocAligned(lengthBytes: number): Uint8Array {
  if (!Number.isSafeInteger(lengthBytes) || lengthBytes < 1 || lengthBytes > ALIGNED_BYTES_MAX) {
    throw new OutOfRangeError('lengthBytes', `an integer from 1 to ${ALIGNED_BYTES_MAX}`,
      lengthBytes);
  }
  const wasmPages = divCeil(lengthBytes, WASM_PAGE_BYTES);
  const memory = new WebAssembly.Memory({ initial: wasmPages, maximum: wasmPages });
  alignedBuffers.add(memory.buffer);
  return new Uint8Array(memory.buffer, 0, lengthBytes);
}

/** Allocates `pageCount` aligned pages as separate `PAGE_SIZE` views of one slab. */
export function allocAlignedPages(pageCount: number): Uint8Array[] {
  assert.ok(pageCount > 0);
  const slab = allocAligned(pageCount * PAGE_SIZE);
  const pages: Uint8Array[] = [];
  for (let index = 0; index < pageCount; index += 1) {
    pages.push(slab.subarray(index * PAGE_SIZE, (index + 1) * PAGE_SIZE));
  }
  return pages;
}

/**
 * True when `view` starts at an address that is a multiple of `alignmentBytes` (a power of
 * two no larger than 64 KiB). Only memory from `allocAligned` is known to be aligned.
 */
export function isAlignedView(view: Uint8Array, alignmentBytes: number): boolean {
  if (alignmentBytes <= 1) return true;
  assert.ok(alignmentBytes <= WASM_PAGE_BYTES);
  return alignedBuffers.has(view.buffer) && view.byteOffset % alignmentBytes === 0;
}
