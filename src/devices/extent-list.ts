// Owns building one bounded `extents` answer: runs are appended in order from the query's first
// sector, a run of the same kind as the last one extends it (so the answer never holds two
// equal neighbours), and the list reports when it is full (EXTENTS_PER_QUERY_MAX) or has
// reached the end of the range, which is when a backend stops looking.

import assert from '../assert.js';
import { type DeviceExtent, EXTENTS_PER_QUERY_MAX } from './block-device.js';

/** What a run is: NBD base:allocation's two flags. */
export interface ExtentKind {
  readonly hole: boolean;
  readonly zero: boolean;
}

/** Allocated data (both flags clear). */
export const DATA: ExtentKind = { hole: false, zero: false };
/** A hole that reads as zeros. */
export const HOLE_ZERO: ExtentKind = { hole: true, zero: true };

/** The extents of one query over `[sector, endSector)`, appended in order. */
export class ExtentList {
  /** The extents so far; contiguous from the query's first sector. */
  readonly extents: DeviceExtent[] = [];
  /** The range's end (exclusive), in sectors. */
  readonly endSector: number;
  #nextSector: number;

  constructor(sector: number, countSectors: number) {
    assert.ok(Number.isSafeInteger(sector) && sector >= 0, 'sector');
    assert.ok(Number.isSafeInteger(countSectors) && countSectors >= 1, 'countSectors');
    this.#nextSector = sector;
    this.endSector = sector + countSectors;
  }

  /** The first sector not yet covered. */
  get nextSector(): number {
    return this.#nextSector;
  }

  /** True when no more runs should be looked for: the range is covered or the list is full. */
  get finished(): boolean {
    return this.#nextSector >= this.endSector || this.extents.length >= EXTENTS_PER_QUERY_MAX;
  }

  /**
   * Covers `[nextSector, min(endSector, this.endSector))` with `kind`, extending the last
   * extent when it is of the same kind. `endSector` must lie past `nextSector`.
   */
  add(endSector: number, kind: ExtentKind): void {
    assert.ok(endSector > this.#nextSector, 'a run covers at least one sector');
    assert.ok(!this.finished, 'no run is added to a finished list');
    const runEnd = Math.min(endSector, this.endSector);
    const last = this.extents[this.extents.length - 1];
    if (last !== undefined && last.hole === kind.hole && last.zero === kind.zero) {
      this.extents[this.extents.length - 1] = {
        ...last, countSectors: runEnd - last.sector,
      };
    } else {
      this.extents.push({
        sector: this.#nextSector, countSectors: runEnd - this.#nextSector,
        hole: kind.hole, zero: kind.zero,
      });
    }
    this.#nextSector = runEnd;
  }
}
