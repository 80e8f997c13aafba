// Owns telling whether two CLI arguments name the same storage: the same regular file (same
// st_dev and st_ino, whatever path or hard link reaches it) or the same block device (same
// st_rdev, whatever node names it). Commands use it to refuse a copy or read that would
// overwrite its own input before anything is opened for writing. Specs that are not local
// paths (mem:, zero:, nbd://...) and paths that do not exist yet have no identity.

import { statSync } from 'node:fs';
import { parseDeviceSpec } from '../devices/open-device.js';

/** What a local path is, as far as overwriting goes. */
export type StorageIdentity =
  | { readonly kind: 'file'; readonly dev: bigint; readonly ino: bigint }
  | { readonly kind: 'block'; readonly rdev: bigint };

/** The identity of a plain path (symlinks followed), or null when it has none. */
export function pathIdentity(path: string): StorageIdentity | null {
  let stats;
  try {
    stats = statSync(path, { bigint: true });
  } catch {
    return null;
  }
  if (stats.isBlockDevice()) return { kind: 'block', rdev: stats.rdev };
  if (stats.isFile()) return { kind: 'file', dev: stats.dev, ino: stats.ino };
  return null;
}

/** The identity of a device spec (a path or `file:PATH`), or null when it has none. */
export function specIdentity(spec: string): StorageIdentity | null {
  let parsed;
  try {
    parsed = parseDeviceSpec(spec);
  } catch {
    return null;
  }
  return parsed.kind === 'file' ? pathIdentity(parsed.path) : null;
}

/** True when both identities are known and name the same storage. */
export function sameIdentity(a: StorageIdentity | null, b: StorageIdentity | null): boolean {
  if (a === null || b === null) return false;
  if (a.kind === 'block' && b.kind === 'block') return a.rdev === b.rdev;
  if (a.kind === 'file' && b.kind === 'file') return a.dev === b.dev && a.ino === b.ino;
  return false;
}

/** True when `[aStart, aStart + aCount)` and `[bStart, bStart + bCount)` share a unit. */
export function rangesOverlap(aStart: number, aCount: number, bStart: number,
  bCount: number): boolean {
  return aCount > 0 && bCount > 0 && aStart < bStart + bCount && bStart < aStart + aCount;
}
