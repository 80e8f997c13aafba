// Owns how JavaScript memory is described to native calls made through koffi: the address of
// a buffer's bytes, remembered per ArrayBuffer, and 64-bit fields (addresses, offsets,
// lengths) written into the 32-bit words of a structure being built (an io_uring entry, an
// iovec, a msghdr). io-uring.ts and socket-poll.ts both build such structures.

import type koffi from 'koffi';

type Koffi = typeof koffi;

const TWO_TO_32 = 2 ** 32;

/** Stores `value` (a non-negative safe integer) as a little-endian 64-bit field at `words[word]`. */
export function writeWord64(words: Uint32Array, word: number, value: number): void {
  words[word] = value % TWO_TO_32;
  words[word + 1] = Math.floor(value / TWO_TO_32);
}

/**
 * Start addresses of the ArrayBuffers seen so far. A buffer's memory never moves while it is
 * alive: reading `.buffer` moves a small typed array's bytes out of V8's heap for good, larger
 * ones live outside its moving heap, and a transferred buffer is a new object. So one native
 * call per buffer is enough, and reused buffers (pool pages, slabs) cost none.
 */
export class BufferAddresses {
  readonly #koffi: Koffi;
  readonly #bases = new WeakMap<ArrayBufferLike, number>();

  constructor(bindings: Koffi) {
    this.#koffi = bindings;
  }

  /** The address of `view`'s first byte. */
  addressOf(view: Uint8Array): number {
    const buffer = view.buffer;
    let base = this.#bases.get(buffer);
    if (base === undefined) {
      base = Number(this.#koffi.address(view) as number | bigint) - view.byteOffset;
      this.#bases.set(buffer, base);
    }
    return base + view.byteOffset;
  }
}
