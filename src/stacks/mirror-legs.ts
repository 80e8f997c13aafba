// Owns a mirror's legs and their health: each leg's device and offset, its error count and
// the most severe error type seen (status letters, most severe first: F flush, D write, S
// resync, R read, A none), which legs may be written, and which leg serves a read — the default
// leg while it has no errors, else the nearest error-free leg walking backwards (no load
// balancing, as the kernel).

import type { BlockDevice } from '../devices/block-device.js';

/** A leg's error type, as its status letter. */
export type LegHealth = 'A' | 'R' | 'S' | 'D' | 'F';

const SEVERITY: Readonly<Record<LegHealth, number>> = { A: 0, R: 1, S: 2, D: 3, F: 4 };

/** One leg of a mirror. */
export interface Leg {
  readonly index: number;
  readonly device: BlockDevice;
  readonly deviceId: string;
  readonly offsetSectors: number;
  errorCount: number;
  health: LegHealth;
}

/** Records an error of `type` on `leg`. */
export function failLeg(leg: Leg, type: Exclude<LegHealth, 'A'>): void {
  leg.errorCount += 1;
  if (SEVERITY[type] > SEVERITY[leg.health]) leg.health = type;
}

/** Forgets every leg's errors (the mirror became fully in sync). */
export function resetLegs(legs: readonly Leg[]): void {
  for (const leg of legs) {
    leg.errorCount = 0;
    leg.health = 'A';
  }
}

/** A leg that still takes writes: no write or flush has failed on it. */
export function writable(leg: Leg): boolean {
  return leg.health !== 'D' && leg.health !== 'F';
}

/** The leg a read goes to: `start` if error-free, else walking backwards; null when none. */
export function readLeg(legs: readonly Leg[], start: number, exclude: ReadonlySet<number>): Leg | null {
  for (let step = 0; step < legs.length; step += 1) {
    const leg = legs[(start - step + legs.length) % legs.length] as Leg;
    if (leg.errorCount === 0 && !exclude.has(leg.index)) return leg;
  }
  return null;
}
