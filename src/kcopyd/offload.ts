// Owns kcopyd's copy offload: a job whose op is `offload` asks every destination to copy the
// chunk from the source itself (`BlockDevice.copyFrom`), taking no pages. When all of them
// did, the job completes like a written chunk. When any could not start or failed, the job
// falls back to the ordinary path (pages, read, multi-destination write), which tells a source
// error from a destination error and honours ignoreError; rewriting a destination that had
// already been copied writes the same bytes. A destination that could not even start turns
// offload off for the rest of the master job, so a pair that never can costs one attempt.
// With dropFailedDestinations, a destination that already failed has an empty region here
// (outcome.ts) and is skipped. A chunk copied everywhere credits its bytes to each
// destination it copied to; a chunk that falls back is credited by its write.

import type { IoError } from '../errors.js';
import type { KcopydClient } from './kcopyd-client.js';
import type { KcopydJob } from './job.js';
import { creditWrites } from './outcome.js';

/** errno names meaning "this pair of files cannot be copied in the kernel". */
const UNSUPPORTED_ERRNOS = new Set(['EXDEV', 'EINVAL', 'EOPNOTSUPP', 'ENOSYS', 'EBADF']);

/** Starts the job's offloaded copy on every destination; completes or falls back later. */
export function issueOffload(kc: KcopydClient, job: KcopydJob): void {
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
    if (pending === 0) finishOffload(kc, job, failed, unsupported);
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
  if (pending === 0) setImmediate(() => finishOffload(kc, job, failed, unsupported));
}

function finishOffload(
  kc: KcopydClient, job: KcopydJob, failed: boolean, unsupported: boolean,
): void {
  kc.throttle?.ioFinished();
  job.master.offloadsInFlight -= 1;
  if (!failed) {
    creditWrites(job, 0n);
    kc.completeJobs.pushTail(job);
  } else {
    if (unsupported) job.master.op = 'read';
    job.op = 'read';
    kc.pagesJobs.pushTail(job);
  }
  kc.wake();
}
