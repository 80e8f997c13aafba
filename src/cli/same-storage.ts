// Owns telling whether two CLI arguments name the same storage: the same regular file (same
// st_dev and st_ino, whatever path or hard link reaches it) or the same block device (same
// st_rdev, whatever node names it). Commands use it to refuse a copy or read that would
// overwrite its own input before anything is opened for writing. Specs that are not local
// paths (mem:, zero:, nbd://...) have no identity; a path that does not exist yet has one only
// through `destinationIdentity` (the file that creating it would make).

import { lstatSync, readlinkSync, realpathSync, statSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { parseDeviceSpec } from '../devices/open-device.js';

/** What a local path is, as far as overwriting goes. */
export type StorageIdentity =
  | { readonly kind: 'file'; readonly dev: bigint; readonly ino: bigint }
  | { readonly kind: 'block'; readonly rdev: bigint }
  /** A file that does not exist yet, by the absolute path creating it would make. */
  | { readonly kind: 'new'; readonly path: string };

/** Symbolic links followed at most when resolving a missing path (Linux's MAXSYMLINKS). */
const SYMLINKS_MAX = 40;

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

/**
 * The absolute path that opening `path` with O_CREAT would create, following dangling symbolic
 * links and resolving the directory; null when that cannot be told (a missing directory, a
 * link loop) or when `path` exists.
 */
export function missingFilePath(path: string): string | null {
  let current = resolve(path);
  for (let links = 0; links <= SYMLINKS_MAX; links += 1) {
    let isLink: boolean;
    try {
      isLink = lstatSync(current).isSymbolicLink();
    } catch {
      try {
        return join(realpathSync(dirname(current)), basename(current));
      } catch {
        return null;
      }
    }
    if (!isLink || pathIdentity(current) !== null) return null;
    current = resolve(dirname(current), readlinkSync(current));
  }
  return null;
}

/**
 * The identity of a destination spec: that of `specIdentity`, or for a path that does not
 * exist yet the file creating it would make, so two spellings of one new file are the same.
 */
export function destinationIdentity(spec: string): StorageIdentity | null {
  const existing = specIdentity(spec);
  if (existing !== null) return existing;
  let parsed;
  try {
    parsed = parseDeviceSpec(spec);
  } catch {
    return null;
  }
  if (parsed.kind !== 'file') return null;
  const path = missingFilePath(parsed.path);
  return path === null ? null : { kind: 'new', path };
}

/** True when both identities are known and name the same storage. */
export function sameIdentity(a: StorageIdentity | null, b: StorageIdentity | null): boolean {
  if (a === null || b === null) return false;
  if (a.kind === 'block' && b.kind === 'block') return a.rdev === b.rdev;
  if (a.kind === 'file' && b.kind === 'file') return a.dev === b.dev && a.ino === b.ino;
  if (a.kind === 'new' && b.kind === 'new') return a.path === b.path;
  return false;
}

/** True when `[aStart, aStart + aCount)` and `[bStart, bStart + bCount)` share a unit. */
export function rangesOverlap(aStart: number, aCount: number, bStart: number,
  bCount: number): boolean {
  return aCount > 0 && bCount > 0 && aStart < bStart + bCount && bStart < aStart + aCount;
}
