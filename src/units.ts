// Owns conversions between sectors and bytes and division with a stated intent. Nothing else
// in the library shifts by SECTOR_SHIFT inline.

import assert from './assert.js';
import { SECTOR_SHIFT, SECTOR_SIZE } from './constants.js';

/** Converts a sector count or position to bytes. Exact for every safe sector number. */
export function sectorsToBytes(sectors: number): number {
  return sectors * SECTOR_SIZE;
}

/** Converts bytes to sectors; the caller asserts the value is a whole number of sectors. */
export function bytesToSectorsExact(bytes: number): number {
  if (bytes % SECTOR_SIZE !== 0) assert.fail(`${bytes} bytes is not a whole number of sectors`);
  return bytes / SECTOR_SIZE;
}

/** Converts bytes to sectors, dropping a partial last sector. */
export function bytesToSectorsFloor(bytes: number): number {
  return Math.floor(bytes / SECTOR_SIZE);
}

/** Converts bytes to sectors, counting a partial last sector as whole. */
export function bytesToSectorsCeil(bytes: number): number {
  return Math.ceil(bytes / SECTOR_SIZE);
}

/** Integer division that rounds up; both operands are non-negative, the divisor positive. */
export function divCeil(dividend: number, divisor: number): number {
  assert.ok(divisor > 0);
  return Math.ceil(dividend / divisor);
}

/** Rounds `value` down to a multiple of `alignment` (a positive integer). */
export function alignDown(value: number, alignment: number): number {
  return value - (value % alignment);
}

/** True when `value` is a multiple of `alignment`. */
export function isAligned(value: number, alignment: number): boolean {
  return value % alignment === 0;
}

/** `SECTOR_SHIFT` re-exported for callers that think in shifts. */
export { SECTOR_SHIFT };
