// Owns the end of a job made with `flush: true`: once every write of the master has completed
// (it reached completeJobs), one dm-io write of zero-count PREFLUSH regions, one per
// destination that was written to, flushes them all at once (the kernel mirror's idiom for
// flushing its legs; files and block devices answer with fdatasync, NBD with NBD_CMD_FLUSH).
// The master is on no list while the flush runs; its completion records each destination's
// flush error and queues the master for its callback again. A destination whose flush failed
// gets its writeErr bit, its error (unless it had one) and writtenBytes 0: after a failed
// flush nothing written there is known to be on stable storage. The kernel's kcopyd has no
// such step: its callers flush.

import type { DmIoResult } from '../core/io-tracker.js';
import { dmIo } from '../core/dm-io.js';
import type { DmIoRegion } from '../core/request.js';
import { DmIoError, IoError } from '../errors.js';
import type { KcopydClient } from './kcopyd-client.js';
import type { KcopydJob } from './job.js';

/** Zero bytes of memory: a pure flush moves no data. */
const NO_DATA = new Uint8Array(0);

/**
 * Starts the master's flush when it asked for one and has not flushed yet; true when it did
 * (the master then completes when the flush does). False when there is nothing to flush: no
 * destination was written to, or the flush already ran.
 */
export function startFlush(kc: KcopydClient, master: KcopydJob): boolean {
  if (!master.flush || master.flushState !== 'idle') return false;
  master.flushState = 'done';
  const flushed = master.dests.flatMap((_, index) =>
    ((master.writtenBytes[index] ?? 0) > 0 ? [index] : []));
  if (flushed.length === 0) return false;
  const regions: DmIoRegion[] = flushed.map((index) => ({
    device: master.dests[index]!.device, sector: 0, count: 0,
  }));
  master.flushState = 'flushing';
  try {
    dmIo({
      op: 'write', mem: { type: 'kmem', data: NO_DATA }, client: kc.io,
      flags: { preflush: true },
      notify: { fn: (errorBits, _context, result) => finishFlush(kc, master,
        failedFlushes(master, flushed, errorBits, result)), context: master },
    }, regions);
  } catch (error) {
    // dm-io refused the flush before submitting it (a device closed meanwhile).
    finishFlush(kc, master, flushed.map((index) => [index, refusal(master, index, error)]));
  }
  return true;
}

/** `[destination index, error]` for each region of the flush that failed. */
function failedFlushes(
  master: KcopydJob, flushed: readonly number[], errorBits: bigint, result: DmIoResult,
): Array<[number, DmIoError]> {
  return flushed.flatMap((destIndex, regionIndex): Array<[number, DmIoError]> => {
    if (((errorBits >> BigInt(regionIndex)) & 1n) === 0n) return [];
    return [[destIndex, result.errors[regionIndex] ?? refusal(master, destIndex, undefined)]];
  });
}

/** The flush is over: records each failed destination, then queues the master again. */
function finishFlush(
  kc: KcopydClient, master: KcopydJob, failures: ReadonlyArray<[number, DmIoError]>,
): void {
  for (const [index, error] of failures) {
    master.writeErr |= 1n << BigInt(index);
    master.writeErrors[index] ??= error;
    master.writtenBytes[index] = 0;
  }
  master.flushState = 'done';
  kc.completeJobs.pushTail(master);
  kc.wake();
}

/** The error of a flush that was never issued to destination `index`. */
function refusal(master: KcopydJob, index: number, cause: unknown): DmIoError {
  if (cause instanceof DmIoError) return cause;
  return new IoError({
    errno: 'EIO', syscall: 'kcopyd flush', device: master.dests[index]!.device.name,
    sector: 0, countSectors: 0, regionIndex: index,
    ...(cause === undefined ? {} : { cause }),
  });
}
