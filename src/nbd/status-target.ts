// Owns the destination of one NBD_CMD_BLOCK_STATUS (and the request's byte range, from the
// sectors asked about: `planBlockStatus`): it takes the reply's `base:allocation`
// descriptors (byte lengths with HOLE and ZERO flags) one at a time as the parser streams them,
// and keeps what `BlockDevice.extents` answers: sector extents inside the window asked for,
// in order and contiguous from the window's first sector, at most EXTENTS_PER_QUERY_MAX of
// them. Memory is bounded whatever the server sends: descriptors are never stored, extents
// merge while their flags agree, and once the extents are full (or the window is covered) the
// rest of the reply is ignored.
//
// Rounding: a sector is a hole only if all its bytes are, and zero only if all are, so a
// sector partly data is data. Worked example, window sectors 0-2, descriptors 700 bytes hole
// and zero, 324 bytes data, 512 bytes zero: sector 0 lies in the first descriptor (hole,
// zero); sector 1 (bytes 512-1023) is 188 bytes hole+zero and 324 bytes data, so data;
// sector 2 is zero. Extents: [0,1) hole+zero, [1,2) data, [2,3) zero. A reply that ends inside
// a sector leaves the rest of that sector unknown, so that sector is data.

import assert from '../assert.js';
import { SECTOR_SIZE } from '../constants.js';
import { EXTENTS_PER_QUERY_MAX, type DeviceExtent } from '../devices/block-device.js';
import { NBD_BLOCK_STATUS_BYTES_MAX, NBD_STATE_HOLE, NBD_STATE_ZERO } from './protocol.js';

/** The byte range a BLOCK_STATUS asks about and the sector window the caller wants. */
export interface StatusWindow {
  /** The request's offset on the export (the window's start, aligned down to the block). */
  readonly requestOffsetBytes: number;
  /** First sector reported. */
  readonly sector: number;
  /** Sectors in the window; at least 1. */
  readonly countSectors: number;
}

/** A BLOCK_STATUS request and the target its reply goes to. */
export interface BlockStatusPlan {
  readonly offsetBytes: number;
  readonly lengthBytes: number;
  readonly target: StatusTarget;
}

/**
 * The BLOCK_STATUS for sectors `[sector, sector + countSectors)` of an export whose offsets and
 * lengths must be multiples of `blockBytes`: the range widened to whole blocks and cut at
 * NBD_BLOCK_STATUS_BYTES_MAX, with a target that reports from `sector` on. Worked example,
 * 4096-byte blocks, sectors 9-20: bytes 4608-10751 widen to 4096-12287, so the request is
 * 8192 bytes at 4096 and the target skips the 512 bytes before sector 9.
 */
export function planBlockStatus(
  sector: number, countSectors: number, blockBytes: number,
): BlockStatusPlan {
  const offsetBytes = Math.floor(sector * SECTOR_SIZE / blockBytes) * blockBytes;
  const endBytes = Math.ceil((sector + countSectors) * SECTOR_SIZE / blockBytes) * blockBytes;
  const lengthBytes = Math.min(endBytes - offsetBytes, NBD_BLOCK_STATUS_BYTES_MAX);
  assert.ok(lengthBytes % blockBytes === 0, 'the request is whole blocks');
  assert.ok(offsetBytes + lengthBytes > sector * SECTOR_SIZE, 'the request reaches the window');
  const windowSectors = Math.min(countSectors, (offsetBytes + lengthBytes) / SECTOR_SIZE - sector);
  const target = new StatusTarget({ requestOffsetBytes: offsetBytes, sector,
    countSectors: windowSectors });
  return { offsetBytes, lengthBytes, target };
}

/** An extent being built; turned into a `DeviceExtent` by `finish`. */
interface OpenExtent {
  readonly sector: number;
  countSectors: number;
  readonly flags: number;
}

/** Collects one BLOCK_STATUS reply's descriptors as sector extents. */
export class StatusTarget {
  readonly #window: StatusWindow;
  readonly #startBytes: number;
  readonly #endBytes: number;
  /** Export byte where the next descriptor begins. */
  #positionBytes: number;
  readonly #extents: OpenExtent[] = [];
  /** The sector the last descriptor ended inside of, with the flags all its bytes so far share. */
  #partial: { sector: number; flags: number } | null = null;
  /** True once nothing more can be added: the window is covered or the extents are full. */
  #stopped = false;
  #chunkSeen = false;

  constructor(window: StatusWindow) {
    assert.ok(Number.isSafeInteger(window.sector) && window.sector >= 0);
    assert.ok(Number.isSafeInteger(window.countSectors) && window.countSectors >= 1);
    this.#window = window;
    this.#startBytes = window.sector * SECTOR_SIZE;
    this.#endBytes = (window.sector + window.countSectors) * SECTOR_SIZE;
    assert.ok(window.requestOffsetBytes <= this.#startBytes, 'the request starts the window');
    this.#positionBytes = window.requestOffsetBytes;
  }

  /** True once a status chunk for the negotiated context began. */
  get chunkSeen(): boolean {
    return this.#chunkSeen;
  }

  /** A status chunk for the negotiated context begins; false when one already came. */
  beginChunk(): boolean {
    if (this.#chunkSeen) return false;
    this.#chunkSeen = true;
    return true;
  }

  /** One descriptor: the next `lengthBytes` (at least 1) have status `flags`. */
  add(lengthBytes: number, flags: number): void {
    assert.ok(lengthBytes >= 1);
    const startBytes = this.#positionBytes;
    const endBytes = startBytes + lengthBytes;
    this.#positionBytes = endBytes;
    if (this.#stopped) return;
    const fromBytes = Math.max(startBytes, this.#startBytes);
    const toBytes = Math.min(endBytes, this.#endBytes);
    const known = flags & (NBD_STATE_HOLE | NBD_STATE_ZERO);
    if (toBytes > fromBytes) this.#cover(fromBytes, toBytes, known);
    if (endBytes >= this.#endBytes) this.#stopped = true;
  }

  /**
   * The extents the reply described, clipped to the window; at least the first sector. A
   * partly described last sector counts as data. A reply that described nothing of the
   * window (it ended before it) yields its first sector as data: unknown status is data.
   */
  finish(): DeviceExtent[] {
    const partial = this.#partial;
    this.#partial = null;
    if (partial !== null && !this.#stopped) this.#emit(partial.sector, 1, 0);
    if (this.#extents.length === 0) this.#emit(this.#window.sector, 1, 0);
    this.#stopped = true;
    const extents = this.#extents.map((extent) => ({
      sector: extent.sector,
      countSectors: extent.countSectors,
      hole: (extent.flags & NBD_STATE_HOLE) !== 0,
      zero: (extent.flags & NBD_STATE_ZERO) !== 0,
    }));
    assert.ok(extents.length >= 1 && extents.length <= EXTENTS_PER_QUERY_MAX);
    assert.equal(extents[0]?.sector, this.#window.sector);
    return extents;
  }

  /** Bytes `[fromBytes, toBytes)` of the window share `flags`. */
  #cover(fromBytes: number, toBytes: number, flags: number): void {
    let atBytes = fromBytes;
    if (atBytes % SECTOR_SIZE !== 0) {
      // The previous descriptor ended inside this sector: it takes the flags both share.
      const partial = this.#partial;
      assert.ok(partial !== null && partial.sector === Math.floor(atBytes / SECTOR_SIZE));
      partial.flags &= flags;
      const sectorEndBytes = (partial.sector + 1) * SECTOR_SIZE;
      if (toBytes < sectorEndBytes) return;
      this.#partial = null;
      this.#emit(partial.sector, 1, partial.flags);
      atBytes = sectorEndBytes;
    }
    const wholeEndBytes = Math.floor(toBytes / SECTOR_SIZE) * SECTOR_SIZE;
    if (wholeEndBytes > atBytes) {
      this.#emit(atBytes / SECTOR_SIZE, (wholeEndBytes - atBytes) / SECTOR_SIZE, flags);
      atBytes = wholeEndBytes;
    }
    if (toBytes > atBytes && !this.#stopped) {
      this.#partial = { sector: atBytes / SECTOR_SIZE, flags };
    }
  }

  /** Appends sectors, merging with the last extent when the flags agree. */
  #emit(sector: number, countSectors: number, flags: number): void {
    if (this.#stopped) return;
    const last = this.#extents[this.#extents.length - 1];
    if (last !== undefined) assert.equal(last.sector + last.countSectors, sector, 'contiguous');
    if (last !== undefined && last.flags === flags) {
      last.countSectors += countSectors;
      return;
    }
    if (this.#extents.length === EXTENTS_PER_QUERY_MAX) {
      // Full: the answer ends here, and later descriptors cannot be appended contiguously.
      this.#stopped = true;
      this.#partial = null;
      return;
    }
    this.#extents.push({ sector, countSectors, flags });
  }
}
