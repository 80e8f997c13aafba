// Owns telling whether two CLI arguments name the same storage: the same regular file (same
// st_dev and st_ino, whatever path or hard link reaches it) or the same block device (same
// st_rdev, whatever node names it). Commands use it to refuse a copy or read that would
// overwrite its own input before anything is opened for writing. Specs that are not local
// paths (mem:, zero:, nbd://...) have no identity; a path that does not exist yet has one only
// through `destinationIdentity` (the file that creating it would make). A `table:PATH` spec has
// no identity of its own but, through `specIdentities`, every local file and block device its
// table references (nested tables included): dmio does not map ranges through a table, so a
// table sharing any storage with the other side of a copy is refused whatever the ranges.

import {
  fstatSync, lstatSync, readlinkSync, realpathSync, statSync, type BigIntStats,
} from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { parseDeviceSpec, readTableDeviceArgs } from '../index.js';
import { UsageError } from './exit-status.js';

/** What a local path is, as far as overwriting goes. */
export type StorageIdentity =
  | { readonly kind: 'file'; readonly dev: bigint; readonly ino: bigint }
  | { readonly kind: 'block'; readonly rdev: bigint }
  /** A file that does not exist yet, by the absolute path creating it would make. */
  | { readonly kind: 'new'; readonly path: string };

/** Symbolic links followed at most when resolving a missing path (Linux's MAXSYMLINKS). */
const SYMLINKS_MAX = 40;

/** The identity `stats` describe: a regular file or a block device, else null. */
export function statsIdentity(stats: BigIntStats): StorageIdentity | null {
  if (stats.isBlockDevice()) return { kind: 'block', rdev: stats.rdev };
  if (stats.isFile()) return { kind: 'file', dev: stats.dev, ino: stats.ino };
  return null;
}

/** The identity of a plain path (symlinks followed), or null when it has none. */
export function pathIdentity(path: string): StorageIdentity | null {
  try {
    return statsIdentity(statSync(path, { bigint: true }));
  } catch {
    return null;
  }
}

/** The identity of an open descriptor (stdin, stdout), or null when it has none or is closed. */
export function fdIdentity(fd: number): StorageIdentity | null {
  try {
    return statsIdentity(fstatSync(fd, { bigint: true }));
  } catch {
    return null;
  }
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

/** A block device named as the kernel's tables do, `MAJOR:MINOR`. */
const MAJOR_MINOR = /^(\d+):(\d+)$/;

/** True when `spec` is a `table:PATH` device spec. */
export function isTableSpec(spec: string): boolean {
  try {
    return parseDeviceSpec(spec).kind === 'table';
  } catch {
    return false;
  }
}

/**
 * Every storage identity under a device spec: that of `specIdentity` for a path, or for a
 * `table:PATH` spec every local file and block device its table names, recursively through
 * nested tables (each table file read once; a cycle stops there). Tables are only read and
 * parsed, no device is opened; a table that cannot be read or parsed contributes what was found
 * before it (opening it fails later, before anything is written).
 */
export function specIdentities(spec: string): StorageIdentity[] {
  const found: StorageIdentity[] = [];
  collectIdentities(spec, found, new Set());
  return found;
}

function collectIdentities(spec: string, found: StorageIdentity[], tables: Set<string>): void {
  const add = (identity: StorageIdentity | null): void => {
    if (identity !== null && !found.some((known) => sameIdentity(known, identity))) {
      found.push(identity);
    }
  };
  const majorMinor = MAJOR_MINOR.exec(spec);
  if (majorMinor !== null) {
    add({ kind: 'block', rdev: makeDev(BigInt(majorMinor[1] ?? 0), BigInt(majorMinor[2] ?? 0)) });
    return;
  }
  let parsed;
  try {
    parsed = parseDeviceSpec(spec);
  } catch {
    return;
  }
  if (parsed.kind === 'file') {
    add(pathIdentity(parsed.path));
    return;
  }
  if (parsed.kind !== 'table') return;
  let key: string;
  let args: string[];
  try {
    key = realpathSync(parsed.path);
    if (tables.has(key)) return;
    tables.add(key);
    args = readTableDeviceArgs(parsed.path);
  } catch {
    return;
  }
  for (const arg of args) collectIdentities(arg, found, tables);
}

/** glibc's `makedev`: the `st_rdev` of block device MAJOR:MINOR. */
function makeDev(major: bigint, minor: bigint): bigint {
  return ((major & 0xfffn) << 8n) | ((major & ~0xfffn) << 32n) | (minor & 0xffn) |
    ((minor & ~0xffn) << 12n);
}

/**
 * True when at least one of the two specs is a `table:` spec and they share any underlying
 * storage (`specIdentities`). Ranges are not mapped through the table: sharing is enough.
 */
export function sharesStorageThroughTable(a: string, b: string): boolean {
  if (!isTableSpec(a) && !isTableSpec(b)) return false;
  const under = specIdentities(a);
  return specIdentities(b).some((identity) => under.some((other) => sameIdentity(other, identity)));
}

/**
 * For `dmio read SPEC --output PATH`: refuses (UsageError, exit 2) an output that is storage
 * under SPEC when SPEC is a `table:` spec whose table (recursively) names the existing file or
 * block device PATH is. Call it before opening the output; plain specs are left to
 * `specIdentity`.
 */
export function refuseTableOutput(spec: string, outputPath: string): void {
  if (!isTableSpec(spec)) return;
  const output = pathIdentity(outputPath);
  if (output === null || !specIdentities(spec).some((identity) => sameIdentity(identity, output))) {
    return;
  }
  throw new UsageError(`--output ${outputPath} uses the same storage as ${spec}, the device ` +
    'being read; dmio cannot tell whether the ranges overlap through the table, and writing ' +
    'it could destroy what is read');
}
