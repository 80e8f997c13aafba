// Owns the memory of the server's READ data and WRITE payloads: page-aligned buffers reused
// from request to request. A fresh buffer per request costs a page fault for every 4 KiB the
// first time it is touched and garbage collection afterwards, which on a VM is slower than
// the device and the socket together; a reused buffer is already mapped. Aligned memory also
// goes to O_DIRECT devices without a bounce copy.
//
// Buffers come in power-of-two size classes (4 KiB to 32 MiB); a request gets a view of the
// first `lengthBytes` of one. Classes below 64 KiB are carved from one 64 KiB aligned slab.
// The pool only remembers free buffers, at most `retainedBytesMax` of them: buffers in use
// are bounded by each connection's byte limit, and one that is never given back (its client
// vanished mid-write) is simply collected. Whoever takes a buffer gives it back at most once,
// after the last read of it; a buffer is handed out again without being cleared, so every
// user overwrites what it reads (a device read fills it, a socket read fills it).

import assert from '../assert.js';
import { allocAligned } from '../memory/aligned.js';
import { KIB, PAGE_SIZE } from '../constants.js';

/** Smallest size class (one page). */
const CLASS_BYTES_MIN = PAGE_SIZE;
/** Classes below this share one aligned slab of this size (a WebAssembly page). */
const SLAB_BYTES = 64 * KIB;
const EMPTY = new Uint8Array(0);

/** Reusable aligned request buffers with a cap on what is kept while free. */
export class BufferPool {
  /** Most bytes kept in the free lists; beyond it, buffers given back are dropped. */
  readonly retainedBytesMax: number;
  readonly #largestClassBytes: number;
  readonly #free = new Map<number, Uint8Array[]>();
  /** The class buffer behind each view handed out and not yet given back. */
  readonly #taken = new WeakMap<Uint8Array, Uint8Array>();
  #retainedBytes = 0;

  constructor(retainedBytesMax: number, largestClassBytes: number) {
    assert.ok(Number.isSafeInteger(retainedBytesMax) && retainedBytesMax >= 0);
    assert.ok(largestClassBytes >= CLASS_BYTES_MIN);
    this.retainedBytesMax = retainedBytesMax;
    this.#largestClassBytes = classBytesOf(largestClassBytes);
  }

  /** Bytes held in the free lists now. */
  get retainedBytes(): number {
    return this.#retainedBytes;
  }

  /** A buffer of exactly `lengthBytes` (1 to the largest class), contents unspecified. */
  take(lengthBytes: number): Uint8Array {
    if (lengthBytes === 0) return EMPTY;
    assert.ok(lengthBytes > 0 && lengthBytes <= this.#largestClassBytes, 'request fits a class');
    const classBytes = classBytesOf(lengthBytes);
    let whole = this.#free.get(classBytes)?.pop();
    if (whole === undefined) whole = this.#allocate(classBytes);
    else this.#retainedBytes -= classBytes;
    const view = whole.length === lengthBytes ? whole : whole.subarray(0, lengthBytes);
    this.#taken.set(view, whole);
    return view;
  }

  /** Gives back a view `take` returned; kept for reuse while under the cap. */
  give(view: Uint8Array): void {
    if (view.length === 0) return;
    const whole = this.#taken.get(view);
    assert.ok(whole !== undefined, 'a buffer given back twice, or not from this pool');
    this.#taken.delete(view);
    if (this.#retainedBytes + whole.length > this.retainedBytesMax) return;
    this.#freeList(whole.length).push(whole);
    this.#retainedBytes += whole.length;
  }

  #allocate(classBytes: number): Uint8Array {
    if (classBytes >= SLAB_BYTES) return allocAligned(classBytes);
    // Small classes: one slab, the first piece taken now, the others kept free.
    const slab = allocAligned(SLAB_BYTES);
    const list = this.#freeList(classBytes);
    for (let at = classBytes; at < SLAB_BYTES; at += classBytes) {
      if (this.#retainedBytes + classBytes > this.retainedBytesMax) break;
      list.push(slab.subarray(at, at + classBytes));
      this.#retainedBytes += classBytes;
    }
    return slab.subarray(0, classBytes);
  }

  #freeList(classBytes: number): Uint8Array[] {
    let list = this.#free.get(classBytes);
    if (list === undefined) {
      list = [];
      this.#free.set(classBytes, list);
    }
    return list;
  }
}

/** The power of two at or above `lengthBytes`, at least one page. */
function classBytesOf(lengthBytes: number): number {
  let classBytes = CLASS_BYTES_MIN;
  while (classBytes < lengthBytes) classBytes *= 2;
  return classBytes;
}
