// Owns the three phase handlers of the kcopyd state machine and the dm-io completion:
// - runCompleteJob: gives pages back, flushes a master made with `flush: true` (flush.ts; it
//   comes back here when the flush is over), reports progress, settles a master (outcome.ts), runs the
//   job's callback (a sub-job's callback is its master's segment bookkeeping), then uncounts
//   the job;
// - runPagesJob: takes one grant of pages for the job, or answers 'later' (it stays first);
// - popIoJob / ioJobBlocked / issueIo: chooses the next I/O (WRITE_SEQ writes only in offset
//   order), and issues the read or the one multi-destination write through dm-io, or the
//   offloaded copy (offload.ts);
// - completeIo: dm-io's notify, which only records errors and written bytes and moves the job
//   to its next list: a failed read without ignoreError completes the job, so nothing is
//   written for that chunk.
// A job whose master was cancelled, or has no destination left (outcome.ts), completes from
// the pages or I/O phase without I/O. User code runs only from the worker: the callback in
// runCompleteJob, onProgress there and onChunkRead in issueIo; the last two cancel their job
// when they throw.

import { PAGE_SECTORS, PAGE_SIZE } from '../constants.js';
import { dmIo } from '../core/dm-io.js';
import type { DmIoResult } from '../core/io-tracker.js';
import type { DmIoRequest } from '../core/request.js';
import { DmIoError, IoError } from '../errors.js';
import type { KmemMemory, PageListNode } from '../memory/types.js';
import type { HandlerResult, KcopydClient } from './kcopyd-client.js';
import type { KcopydJob } from './job.js';
import { callUser } from '../call-user.js';
import {
  abortJob, creditWrites, dropFailedDests, jobCancelled, settleMaster,
} from './outcome.js';
import { issueOffload } from './offload.js';
import { startFlush } from './flush.js';
import { KCOPYD_OFFLOADS_IN_FLIGHT_MAX } from './constants.js';

/** Completes `job`: pages back, progress, callback, uncount. Always 'done'. */
export function runCompleteJob(kc: KcopydClient, job: KcopydJob): HandlerResult {
  if (job.grant !== null) {
    kc.pages.give(job.grant);
    job.grant = null;
    job.contiguous = null;
  }
  // With `flush: true` the master completes only once its destinations are flushed.
  if (job.kind === 'master' && startFlush(kc, job)) return 'done';
  reportProgress(job);
  if (job.kind === 'master') settleMaster(job);
  const fn = job.fn;
  if (fn !== null) {
    if (job.kind === 'sub') fn(job.readErr, job.writeErr, job, job.result());
    else callUser(() => fn(job.readErr, job.writeErr, job.context, job.result()));
  }
  kc.jobFinished(job);
  return 'done';
}

function reportProgress(job: KcopydJob): void {
  const master = job.master;
  if (job.kind === 'callback' || master.onProgress === null) return;
  if (job.kind === 'master' && master.slots !== null) return;
  master.doneSectors += job.countSectors;
  if (job.countSectors === 0 || master.aborted) return;
  try {
    master.onProgress(master.doneSectors * 512, master.countSectors * 512);
  } catch (error) {
    abortJob(master, error);
  }
}

/** Gives the job its pages, linked as a page list, and queues its read. */
export function runPagesJob(kc: KcopydClient, job: KcopydJob): HandlerResult {
  if (completeCancelled(kc, job)) return 'done';
  const pageCount = Math.ceil(job.countSectors / PAGE_SECTORS);
  const grant = kc.pages.take(pageCount);
  if (grant === null) return 'later';
  job.grant = grant;
  while (job.nodes.length < pageCount) job.nodes.push({ page: grant.pages[0]!, next: null });
  for (let index = 0; index < pageCount; index += 1) {
    const node = job.nodes[index] as PageListNode;
    node.page = grant.pages[index]!;
    node.next = index + 1 < pageCount ? job.nodes[index + 1]! : null;
  }
  if (job.memory === null) job.memory = { type: 'page-list', list: job.nodes[0]!, offset: 0 };
  else job.memory.list = job.nodes[0]!;
  job.contiguous = contiguousGrant(grant.pages, job.countSectors * 512);
  kc.ioJobs.pushTail(job);
  return 'done';
}

/**
 * Takes the next job to issue: any job of a cancelled master (it completes without I/O), an
 * offloaded copy when its master has room for one, any read, any write that is not WRITE_SEQ,
 * and a WRITE_SEQ write only when it is next in offset order (its master's write offset then
 * advances). The kernel stops there; but once a master has failed, a write behind a chunk that
 * will never be written would wait for ever, so such a write is taken too, marked cancelled,
 * and fails without I/O (writeErr all ones) instead of hanging the job. With
 * dropFailedDestinations a write error does not stop the later chunks, so only a read error
 * does that.
 */
export function popIoJob(kc: KcopydClient): KcopydJob | null {
  for (let job = kc.ioJobs.head; job !== null; job = job.listNext) {
    if (jobCancelled(job)) {
      kc.ioJobs.remove(job);
      return job;
    }
    if (job.op === 'offload') {
      if (job.master.op !== 'offload') {
        // Offload was turned off for this master while the chunk waited: read it instead.
        job.op = 'read';
        kc.ioJobs.remove(job);
        kc.pagesJobs.pushTail(job);
        kc.wake();
        return popIoJob(kc);
      }
      if (job.master.offloadsInFlight >= KCOPYD_OFFLOADS_IN_FLIGHT_MAX) continue;
      job.master.offloadsInFlight += 1;
      kc.ioJobs.remove(job);
      return job;
    }
    if (job.op === 'read' || !job.writeSeq) {
      kc.ioJobs.remove(job);
      return job;
    }
    const master = job.master;
    if (job.writeOffsetSectors === master.writeOffsetSectors) {
      master.writeOffsetSectors += job.countSectors;
      kc.ioJobs.remove(job);
      return job;
    }
    if (master.readErr || (!master.dropFailed && master.writeErr !== 0n)) {
      job.seqCancelled = true;
      kc.ioJobs.remove(job);
      return job;
    }
  }
  return null;
}

/**
 * True when a WRITE_SEQ write must not be issued: its master already has a write error (the
 * kernel's check; with dropFailedDestinations the write goes on to the other destinations), or
 * it was taken out of order because its master failed.
 */
export function ioJobBlocked(job: KcopydJob): boolean {
  if (!job.writeSeq || job.op === 'read') return false;
  if (!job.seqCancelled && (job.master.writeErr === 0n || job.master.dropFailed)) return false;
  job.seqCancelled = false;
  job.writeErr = job.master.writeErr;
  noteWriteCancelled(job);
  return true;
}

/**
 * Completes `job` without I/O when its master was cancelled or has no destination left; true
 * when it did.
 */
export function completeCancelled(kc: KcopydClient, job: KcopydJob): boolean {
  if (!jobCancelled(job)) return false;
  kc.completeJobs.pushTail(job);
  kc.wake();
  return true;
}

/**
 * Issues the job's read or write; 'error' when dm-io refused it (nothing was submitted). The
 * throttle counted it as started; a job cancelled meanwhile (during a throttle sleep, or by
 * its onChunkRead) completes without I/O instead.
 */
export function issueIo(kc: KcopydClient, job: KcopydJob): HandlerResult {
  job.notify ??= { fn: completeIo, context: job };
  if (job.op === 'write' && !job.zero) reportChunkRead(job);
  if (completeCancelled(kc, job)) {
    kc.throttle?.ioFinished();
    return 'done';
  }
  if (job.op !== 'read') dropFailedDests(job);
  try {
    if (job.op === 'read') {
      dmIo(ioRequest(kc, job, 'read'), [job.sourceRegion()]);
    } else if (job.op === 'offload') {
      issueOffload(kc, job);
    } else if (job.op === 'write-zeroes') {
      dmIo({ op: 'write-zeroes', client: kc.io, notify: job.notify }, job.dests);
    } else {
      dmIo(ioRequest(kc, job, 'write'), job.dests);
    }
    return 'done';
  } catch (error) {
    kc.throttle?.ioFinished();
    if (job.op === 'offload') job.master.offloadsInFlight -= 1;
    if (job.op === 'read') job.master.readError ??= asDmIoError(error, job);
    else noteWriteCancelled(job, error);
    return 'error';
  }
}

function ioRequest(
  kc: KcopydClient, job: KcopydJob, op: 'read' | 'write',
): DmIoRequest<KcopydJob> & { notify: NonNullable<KcopydJob['notify']> } {
  const memory = job.zero ? { type: 'page-list' as const, list: kc.zeroList, offset: 0 } :
    job.contiguous ?? job.memory;
  if (memory === null) throw new Error('kcopyd: a data job reached I/O without pages');
  return { op, mem: memory, client: kc.io, notify: job.notify! };
}

/**
 * The grant as one `kmem` buffer of `lengthBytes` when its pages follow each other in one slab
 * (the pool hands out runs, so this is the usual case), else null. The bytes are the page
 * list's; dm-io then walks one view instead of one node per page, and a read of one region
 * takes its fast path.
 */
function contiguousGrant(pages: readonly Uint8Array[], lengthBytes: number): KmemMemory | null {
  const first = pages[0];
  if (first === undefined) return null;
  for (let index = 1; index < pages.length; index += 1) {
    const page = pages[index] as Uint8Array;
    if (page.buffer !== first.buffer || page.byteOffset !== first.byteOffset + index * PAGE_SIZE) {
      return null;
    }
  }
  return { type: 'kmem', data: new Uint8Array(first.buffer, first.byteOffset, lengthBytes) };
}

/** Hands the chunk's data to onChunkRead; a throw cancels the job (this chunk is not written). */
function reportChunkRead(job: KcopydJob): void {
  const master = job.master;
  const onChunkRead = master.onChunkRead;
  const grant = job.grant;
  if (onChunkRead === null || grant === null || jobCancelled(job)) return;
  try {
    onChunkRead(job.sourceSector, job.countSectors, grant.pages);
  } catch (error) {
    abortJob(master, error);
  }
}

/** dm-io's completion of a job's read or write: record, then move the job on. */
export function completeIo(errorBits: bigint, job: KcopydJob, result: DmIoResult): void {
  const kc = job.client;
  kc.throttle?.ioFinished();
  if (job.op !== 'read') creditWrites(job, errorBits);
  if (errorBits !== 0n) {
    recordErrors(job, errorBits, result);
    if (!job.ignoreError) {
      kc.completeJobs.pushTail(job);
      kc.wake();
      return;
    }
  }
  if (job.op === 'read') {
    job.op = 'write';
    kc.ioJobs.pushTail(job);
  } else {
    kc.completeJobs.pushTail(job);
  }
  kc.wake();
}

function recordErrors(job: KcopydJob, errorBits: bigint, result: DmIoResult): void {
  const master = job.master;
  if (job.op === 'read') {
    job.readErr = true;
    master.readError ??= result.errors[0];
    return;
  }
  job.writeErr |= errorBits;
  // The master learns at once (not only when the worker runs this sub-job's segment
  // bookkeeping), so no write issued from now on goes to a destination dropped for this.
  master.writeErr |= errorBits;
  for (let index = 0; index < job.dests.length; index += 1) {
    if ((errorBits >> BigInt(index)) & 1n) master.writeErrors[index] ??= result.errors[index];
  }
}

/**
 * Records, for every destination without an error yet, that its write was never issued
 * (errno ECANCELED; `cause` is what dm-io threw, when it threw).
 */
function noteWriteCancelled(job: KcopydJob, cause?: unknown): void {
  const master = job.master;
  job.dests.forEach((dest, index) => {
    master.writeErrors[index] ??= new IoError({
      errno: 'ECANCELED', syscall: `kcopyd ${job.op}`, device: dest.device.name,
      sector: dest.sector, countSectors: dest.count, regionIndex: index,
      ...(cause === undefined ? {} : { cause }),
    });
  });
}

function asDmIoError(error: unknown, job: KcopydJob): DmIoError {
  if (error instanceof DmIoError) return error;
  return new IoError({
    errno: 'EIO', syscall: 'kcopyd read', device: job.sourceDevice?.name ?? 'zero',
    sector: job.sourceSector, countSectors: job.countSectors, regionIndex: 0, cause: error,
  });
}
