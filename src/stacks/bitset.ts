// Owns the region bitsets of the dirty log: bit i is bit (i mod 8) of byte (i div 8), which is
// also the kernel's on-disk order (little-endian 32-bit words), so a bitset is stored as is.

/** A fixed-size bitset over `count` bits, stored in whole 32-bit words. */
export class Bitset {
  readonly count: number;
  readonly bytes: Uint8Array;

  constructor(count: number, fill: boolean) {
    this.count = count;
    this.bytes = new Uint8Array(Math.ceil(count / 32) * 4);
    if (fill) this.setAll();
  }

  get(index: number): boolean {
    return ((this.bytes[index >> 3] as number) & (1 << (index & 7))) !== 0;
  }

  set(index: number, value: boolean): void {
    const byte = index >> 3;
    const mask = 1 << (index & 7);
    this.bytes[byte] = value ? (this.bytes[byte] as number) | mask : (this.bytes[byte] as number) & ~mask;
  }

  /** Sets every bit below `count`; padding bits stay 0. */
  setAll(): void {
    this.bytes.fill(0);
    for (let index = 0; index < this.count; index += 1) this.set(index, true);
  }

  /** Bits set. */
  popcount(): number {
    let total = 0;
    for (let index = 0; index < this.count; index += 1) if (this.get(index)) total += 1;
    return total;
  }

  /** Copies `other`'s bits (same count). */
  copyFrom(other: Bitset): void {
    this.bytes.set(other.bytes);
  }
}
