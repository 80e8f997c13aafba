// Owns the order rules of a client's I/O list: which job waiting there may be issued next.
// Reads and ordinary writes go at once; an offloaded chunk waits for one of its master's
// KCOPYD_OFFLOADS_IN_FLIGHT_MAX offload slots; a WRITE_SEQ write (`DM_KCOPYD_WRITE_SEQ`) goes
// only when it is next in offset order, so a zoned or append-only destination sees ascending
// writes. The kernel stops there; but once a master has failed, a write behind a chunk that
// will never be written would wait for ever, so such a write is let out too, marked
// cancelled, and fails without I/O (writeErr all ones) instead of hanging the job. With
// dropFailedDestinations a write error does not stop the later chunks, so only a read error
// does that. A write let out whose I/O the dm-io client then refused as busy goes back on the
// list and gives its turn back (`restoreIoOrder`), so no later write overtakes it. Pure
// functions of the jobs: the client (kcopyd-client.ts) moves them.

import assert from '../assert.js';
import { IoError } from '../errors.js';
import { KCOPYD_OFFLOADS_IN_FLIGHT_MAX } from './constants.js';
import type { KcopydJob } from './job.js';
import { jobCancelled } from './outcome.js';

/**
 * Whether `job` may leave the I/O list now: any job of a cancelled master (it completes
 * without I/O), an offloaded copy when its master has a free offload slot (taken here), any
 * read, any write that is not WRITE_SEQ, a WRITE_SEQ write next in offset order (its master's
 * write offset advances here), and a WRITE_SEQ write of a failed master (marked cancelled).
 */
export function mayLeaveIoList(job: KcopydJob): boolean {
  const master = job.master;
  if (jobCancelled(job)) return true;
  if (job.op === 'offload') {
    if (master.op !== 'offload') return true;
    if (master.offloadsInFlight >= KCOPYD_OFFLOADS_IN_FLIGHT_MAX) return false;
    master.offloadsInFlight += 1;
    return true;
  }
  if (job.op === 'read' || !job.writeSeq) return true;
  if (job.writeOffsetSectors === master.writeOffsetSectors) {
    master.writeOffsetSectors += job.countSectors;
    return true;
  }
  if (master.readErr || (!master.dropFailed && master.writeErr !== 0n)) {
    job.seqCancelled = true;
    return true;
  }
  return false;
}

/**
 * True when a WRITE_SEQ write must not be issued: its master already has a write error (the
 * kernel's check; with dropFailedDestinations the write goes on to the other destinations), or
 * it was taken out of order because its master failed. The job then carries its master's
 * errors and every destination without an error is recorded as never written (ECANCELED).
 */
export function writeSeqBlocked(job: KcopydJob): boolean {
  if (!job.writeSeq || job.op === 'read') return false;
  if (!job.seqCancelled && (job.master.writeErr === 0n || job.master.dropFailed)) return false;
  job.seqCancelled = false;
  job.writeErr = job.master.writeErr;
  const master = job.master;
  job.dests.forEach((dest, index) => {
    master.writeErrors[index] ??= new IoError({
      errno: 'ECANCELED', syscall: `kcopyd ${job.op}`, device: dest.device.name,
      sector: dest.sector, countSectors: dest.count, regionIndex: index,
    });
  });
  return true;
}

/**
 * Undoes what `mayLeaveIoList` took for `job`, whose read or write the dm-io client refused as
 * busy, so it goes back on the list: a WRITE_SEQ write gives its turn in offset order back and
 * is again the next write its master may issue. Reads and ordinary writes took nothing; an
 * offload never reaches dm-io, and a cancelled job or one taken out of order (`seqCancelled`)
 * completes without I/O.
 */
export function restoreIoOrder(job: KcopydJob): void {
  assert.ok(job.op !== 'offload' && !job.seqCancelled && !jobCancelled(job));
  if (job.op === 'read' || !job.writeSeq) return;
  const master = job.master;
  master.writeOffsetSectors -= job.countSectors;
  // An unsplit master is its own job: its offset field is the one that advanced.
  assert.ok(job === master || master.writeOffsetSectors === job.writeOffsetSectors,
    'the refused write was the last one let out');
}
