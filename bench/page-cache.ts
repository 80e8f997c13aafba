// Owns deliberate page-cache preparation. The kernel on the reference machine evicts pages left
// untouched for about a minute, so every measured run first reads its files whole ("warm"):
// a cached read of 1 GiB into aligned memory takes about 0.15 s. Reading into page-aligned
// memory matters: unaligned Buffers read cached data about 5x slower. Also what runs leave
// behind: destinations removed and the file system synced between runs (`removeAndSettle`).

import fs from 'node:fs';
import path from 'node:path';
import { runChecked } from './proc.js';
import { allocAligned } from '../src/index.js';

const WARM_CHUNK_BYTES = 1024 * 1024;

/** Reads `path` from start to end (or to `limitBytes`) so its pages are in the page cache. */
export function warmFile(path: string, limitBytes = Number.MAX_SAFE_INTEGER): void {
  const buffer = allocAligned(WARM_CHUNK_BYTES);
  const fd = fs.openSync(path, 'r');
  try {
    let positionBytes = 0;
    while (positionBytes < limitBytes) {
      const bytes = fs.readSync(fd, buffer, 0, WARM_CHUNK_BYTES, positionBytes);
      if (bytes === 0) break;
      positionBytes += bytes;
    }
  } finally {
    fs.closeSync(fd);
  }
}

/** Writes back `path`'s dirty pages (fdatasync), so a run does not inherit writeback. */
export function flushFile(path: string): void {
  const fd = fs.openSync(path, 'r+');
  try {
    fs.fdatasyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Prepares one nbdcopy run through a server of `image` at `uri`, and returns its source and
 * destination: a write copies the cached `source` into the export (the image's dirty pages
 * written back first), a read copies the export, its image cached, to `null:`.
 */
export function prepareNbdcopyRun(
  op: 'write' | 'read', source: string, image: string, uri: string,
): [from: string, to: string] {
  if (op === 'write') {
    warmFile(source);
    flushFile(image);
    return [source, uri];
  }
  warmFile(image);
  return [uri, 'null:'];
}

/** Removes `paths` (those that exist). */
export function removeAll(paths: readonly string[]): void {
  for (const filePath of paths) fs.rmSync(filePath, { force: true });
}

/**
 * Removes the destinations and commits the file system (`sync -f`), so the freed blocks (and
 * the discards a `discard`-mounted ext4 sends for them) settle before the next measured run
 * instead of during it.
 */
export async function removeAndSettle(paths: readonly string[]): Promise<void> {
  removeAll(paths);
  const [first] = paths;
  if (first !== undefined) await runChecked('sync', ['-f', path.dirname(first)]);
}
