// Owns copy offload between two regular files: `copy_file_range` on the threadpool, called
// again from where a short copy stopped until the whole range is copied. The kernel copies
// page cache to page cache, so the data never passes through this process. A call that
// copies nothing before the end fails the copy with EIO; any error names the destination and
// the range, and the caller (kcopyd) falls back to reading and writing, which tells a source
// error from a destination error. Each call holds one of the device's copy slots
// (copy-slots.ts) while it runs.

import { IoError } from '../errors.js';
import { sectorsToBytes } from '../units.js';
import { copyFileRangeAsync, libcAvailable, type SysError } from '../sys/libc.js';
import type { DeviceDone } from './block-device.js';
import type { CopySlots } from './copy-slots.js';
import type { FileDeviceStats } from './file-special-ops.js';

/** One copy between two open descriptors. */
export interface CopyRange {
  readonly sourceFd: number;
  readonly sourceSector: number;
  readonly destFd: number;
  readonly destName: string;
  readonly destSector: number;
  readonly countSectors: number;
}

/**
 * Copies `range` inside the kernel; `done` runs once, from a threadpool completion. Throws,
 * having started nothing, when the first call cannot be made (no libc bindings).
 */
export function copyRangeAsync(
  slots: CopySlots, range: CopyRange, stats: FileDeviceStats, done: DeviceDone,
): void {
  if (!libcAvailable()) throw new Error('copy_file_range: no libc bindings on this system');
  const totalBytes = sectorsToBytes(range.countSectors);
  let starting = true;
  const step = (copiedBytes: number): void => slots.run((release) => {
    try {
      copyFileRangeAsync(range.sourceFd, sectorsToBytes(range.sourceSector) + copiedBytes,
        range.destFd, sectorsToBytes(range.destSector) + copiedBytes, totalBytes - copiedBytes,
        (error, stepBytes) => {
          release();
          if (error !== null || stepBytes === 0) return done(copyError(range, error));
          stats.copyRanges += 1;
          const nextBytes = copiedBytes + stepBytes;
          if (nextBytes >= totalBytes) return done(null);
          step(nextBytes);
          return undefined;
        });
    } catch (failure) {
      release();
      // Started from this call: nothing ran, the caller hears it now. Started later (from a
      // freed slot or a completion): the copy fails, on a turn of its own.
      if (starting) throw failure;
      process.nextTick(done, copyError(range, null, failure));
    }
  });
  step(0);
  starting = false;
}

function copyError(range: CopyRange, error: SysError | null, cause: unknown = error): IoError {
  return new IoError({
    errno: error?.code ?? 'EIO', syscall: 'copy_file_range', device: range.destName,
    sector: range.destSector, countSectors: range.countSectors,
    ...(cause === null || cause === undefined ? {} : { cause }),
  });
}
