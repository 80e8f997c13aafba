// Owns the arithmetic of the report: medians, ranges and ratios over the samples of a series.
// A ratio is always "dmio relative to the other side" in the direction where above 1 means
// dmio is better: throughput dmio/peer, memory peer/dmio.

import assert from 'node:assert/strict';
import { higherIsBetter, type Unit } from './model.js';

/** The median of `values` (the mean of the middle two for an even count). */
export function median(values: readonly number[]): number {
  assert.ok(values.length > 0, 'a median needs at least one value');
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  const upper = sorted[middle];
  assert.ok(upper !== undefined);
  if (sorted.length % 2 === 1) return upper;
  const lower = sorted[middle - 1];
  assert.ok(lower !== undefined);
  return (lower + upper) / 2;
}

/** The smallest and largest of `values`. */
export function range(values: readonly number[]): [number, number] {
  assert.ok(values.length > 0);
  return [Math.min(...values), Math.max(...values)];
}

/**
 * How much better dmio is than the other side: above 1 means dmio wins. Throughput units
 * divide dmio by the other; memory divides the other by dmio. Null when either is not positive.
 */
export function ratioDmioOver(dmioValue: number, otherValue: number, unit: Unit): number | null {
  if (!(dmioValue > 0) || !(otherValue > 0)) return null;
  return higherIsBetter(unit) ? dmioValue / otherValue : otherValue / dmioValue;
}
