// Owns kcopyd's copy offload: a job whose op is `offload` asks every destination to copy the
// chunk from the source itself (`BlockDevice.copyFrom`), taking no pages. When all of them
// did, the job completes like a written chunk. When any could not start or failed, the job
// falls back to the ordinary path (pages, read, multi-destination write), which tells a source
// error from a destination error and honours ignoreError; rewriting a destination that had
// already been copied writes the same bytes. A destination that could not even start turns
// offload off for the rest of the master job, so a pair that never can costs one attempt.
// With dropFailedDestinations, a destination that already failed has an empty region here
// (outcome.ts) and is skipped. A chunk copied everywhere credits its bytes to each
// destination it copied to; a chunk that falls back is credited by its write. The client
// (kcopyd-client.ts) starts the offload and queues the job where `offloadOutcome` says.

import type { IoError } from '../errors.js';
import type { KcopydJob } from './job.js';
import { creditWrites } from './outcome.js';

/** errno names meaning "this pair of files cannot be copied in the kernel". */
const UNSUPPORTED_ERRNOS = new Set(['EXDEV', 'EINVAL', 'EOPNOTSUPP', 'ENOSYS', 'EBADF']);

/** How an offloaded chunk ended: `failed` on any destination, `unsupported` by any pair. */
export type OffloadDone = (failed: boolean, unsupported: boolean) => void;

/** Starts the job's offloaded copy on every destination; `done` runs once, never inside. */
export function issueOffload(job: KcopydJob, done: OffloadDone): void {
  const source = job.sourceDevice;
  if (source === null) throw new Error('kcopyd: a zero job cannot offload');
  let pending = 0;
  for (const dest of job.dests) if (dest.count > 0) pending += 1;
  let failed = false;
  let unsupported = false;
  const destDone = (error: IoError | null): void => {
    if (error !== null) {
      failed = true;
      if (UNSUPPORTED_ERRNOS.has(error.errno)) unsupported = true;
    }
    pending -= 1;
    if (pending === 0) done(failed, unsupported);
  };
  for (const dest of job.dests) {
    if (dest.count === 0) continue;
    let started = false;
    try {
      started = dest.device.copyFrom?.(source, job.sourceSector, dest.sector, dest.count,
        destDone) ?? false;
    } catch {
      // A device that throws here started nothing; the ordinary path will report its error.
    }
    if (!started) {
      failed = true;
      unsupported = true;
      pending -= 1;
    }
  }
  // Every destination refused at once: nothing is in flight, so finish on a later turn like
  // any completion.
  if (pending === 0) setImmediate(() => done(failed, unsupported));
}

/**
 * Records an offloaded chunk's end: 'written' (its bytes credited) or 'fallback' (the job
 * reads the chunk through pages next; a pair that cannot offload turns it off for the master).
 */
export function offloadOutcome(
  job: KcopydJob, failed: boolean, unsupported: boolean,
): 'written' | 'fallback' {
  job.master.offloadsInFlight -= 1;
  if (!failed) {
    creditWrites(job, 0n);
    return 'written';
  }
  if (unsupported) job.master.op = 'read';
  job.op = 'read';
  return 'fallback';
}
