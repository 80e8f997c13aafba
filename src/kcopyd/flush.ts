// Owns what a kcopyd flush is: one dm-io write of zero-count PREFLUSH regions, one per device
// to flush, so they are all flushed at once (the kernel mirror's idiom for flushing its legs;
// files and block devices answer with fdatasync, NBD with NBD_CMD_FLUSH). A job made with
// `flush: true` flushes every destination that was written to once its last write completed;
// a stream copy flushes at its end. A destination whose flush failed gets its writeErr bit,
// its error (unless it had one) and writtenBytes 0: after a failed flush nothing written there
// is known to be on stable storage. The kernel's kcopyd has no such step: its callers flush.
// The client (kcopyd-client.ts) issues the plan and moves the job; these helpers only build
// the plan and read its result.

import { IOPRIO_DEFAULT } from '../constants.js';
import type { DmIoClient } from '../core/client.js';
import type { DmIoResult } from '../core/io-tracker.js';
import type { DmIoPlan } from '../core/request.js';
import type { BlockDevice } from '../devices/block-device.js';
import { type DmIoError, IoError } from '../errors.js';
import type { KcopydJob } from './job.js';

/** The flags of a flush: PREFLUSH on every region. */
const FLUSH_FLAGS = Object.freeze({ sync: false, preflush: true, fua: false });

/** The dm-io plan that flushes `devices` at once (zero-count PREFLUSH regions, no memory). */
export function flushPlan(devices: readonly BlockDevice[], io: DmIoClient): DmIoPlan {
  return {
    op: 'write', flags: FLUSH_FLAGS, ioprio: IOPRIO_DEFAULT, memory: null, client: io,
    regions: devices.map((device) => ({ device, sector: 0, count: 0 })),
  };
}

/**
 * The destinations of `master` to flush before it completes: none when it did not ask, or
 * already flushed, or wrote nothing; else the indexes of every destination written to.
 */
export function destinationsToFlush(master: KcopydJob): number[] {
  if (!master.flush || master.flushState !== 'idle') return [];
  master.flushState = 'done';
  return master.dests.flatMap((_, index) => ((master.writtenBytes[index] ?? 0) > 0 ? [index] : []));
}

/** Records the outcome of the flush of destinations `flushed` (region *i* is `flushed[i]`). */
export function recordFlush(
  master: KcopydJob, flushed: readonly number[], result: DmIoResult,
): void {
  flushed.forEach((destIndex, regionIndex) => {
    if (((result.errorBits >> BigInt(regionIndex)) & 1n) === 0n) return;
    master.writeErr |= 1n << BigInt(destIndex);
    master.writeErrors[destIndex] ??= result.errors[regionIndex] ??
      unexplainedFailure(master.dests[destIndex]!.device, destIndex);
    master.writtenBytes[destIndex] = 0;
  });
  master.flushState = 'done';
}

/** The error of a flush region whose bit is set without an error (never expected). */
function unexplainedFailure(device: BlockDevice, index: number): DmIoError {
  return new IoError({
    errno: 'EIO', syscall: 'kcopyd flush', device: device.name, sector: 0, countSectors: 0,
    regionIndex: index,
  });
}
