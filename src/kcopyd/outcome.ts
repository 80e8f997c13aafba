// Owns what a job tells about each destination, and when a job stops early:
// - writtenBytes: every finished write credits each destination it wrote without error (a
//   chunk counts once its whole write to that destination succeeded), so the sum is exact in
//   every mode and "complete" means writtenBytes equals the job's bytes;
// - dropFailedDestinations: a sub-job about to write gives every destination that already
//   failed an empty region, which dm-io skips (no request, no error bit, no bytes), so the
//   other destinations go on; the job ends early only when all of them failed (or a read
//   failed, as without the option);
// - cancellation: a job aborted by its signal or by a throwing onProgress/onChunkRead takes
//   no new chunk and issues no more I/O; what was in flight settles; when it completes, every
//   destination it did not finish gets its writeErr bit and a DMIO_ERR_ABORTED error, so a
//   clear bit then means complete. The signal's listener is removed when the job completes.
// These are pure functions of the job's fields: the client (kcopyd-client.ts) calls them and
// makes every list transition itself.

import { SECTOR_SIZE } from '../constants.js';
import { AbortedError } from '../errors.js';
import type { KcopydJob } from './job.js';

/** True when every destination of `master` has failed (its writeErr bit is set). */
export function allDestsFailed(master: KcopydJob): boolean {
  const mask = (1n << BigInt(master.dests.length)) - 1n;
  return (master.writeErr & mask) === mask;
}

/**
 * True when `job`'s next I/O must not be issued: its master was cancelled or, dropping failed
 * destinations, has no destination left to write.
 */
export function jobCancelled(job: KcopydJob): boolean {
  const master = job.master;
  return master.aborted || (master.dropFailed && allDestsFailed(master));
}

/**
 * True when a split master may start its next chunk. The kernel's rule: while it has no error,
 * or always with ignoreError. Dropping failed destinations: while a destination is left and no
 * read failed (or read errors are ignored). Never once the job was cancelled.
 */
export function mayTakeChunk(master: KcopydJob): boolean {
  if (master.aborted) return false;
  if (master.dropFailed) {
    return (!master.readErr || master.ignoreError) && !allDestsFailed(master);
  }
  return (!master.readErr && master.writeErr === 0n) || master.ignoreError;
}

/**
 * Before a sub-job's write or offload: with dropFailedDestinations, the region of every
 * destination that already failed becomes empty, so it is skipped. An unsplit job has one
 * chunk, so no destination can have failed before its write.
 */
export function dropFailedDests(job: KcopydJob): void {
  const master = job.master;
  if (!master.dropFailed || job.kind !== 'sub' || master.writeErr === 0n) return;
  for (let index = 0; index < job.dests.length; index += 1) {
    if ((master.writeErr >> BigInt(index)) & 1n) job.dests[index]!.count = 0;
  }
}

/** Credits a finished write of `job` to every destination it wrote whose bit is clear. */
export function creditWrites(job: KcopydJob, errorBits: bigint): void {
  const written = job.master.writtenBytes;
  for (let index = 0; index < job.dests.length; index += 1) {
    const countSectors = job.dests[index]!.count;
    if (countSectors === 0 || ((errorBits >> BigInt(index)) & 1n) !== 0n) continue;
    written[index] = (written[index] ?? 0) + countSectors * SECTOR_SIZE;
  }
}

/**
 * Called once as a master completes, before its callback: removes the signal's listener and,
 * when the job was cancelled, marks every destination it did not finish as failed with
 * DMIO_ERR_ABORTED (keeping an earlier error of that destination).
 */
export function settleMaster(master: KcopydJob): void {
  if (master.signal !== null && master.abortListener !== null) {
    master.signal.removeEventListener('abort', master.abortListener);
  }
  master.signal = null;
  master.abortListener = null;
  if (!master.aborted) return;
  const totalBytes = master.countSectors * SECTOR_SIZE;
  master.dests.forEach((dest, index) => {
    const writtenBytes = master.writtenBytes[index] ?? 0;
    if (writtenBytes >= totalBytes) return;
    master.writeErr |= 1n << BigInt(index);
    master.writeErrors[index] ??= new AbortedError(dest.device.name,
      `the job was cancelled with ${writtenBytes} of ${totalBytes} bytes written`,
      { cause: master.abortReason });
  });
}
