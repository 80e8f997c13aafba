// Owns a job's chunk as dm-io sees it: the page list over the job's pages, the dm-io plans of
// its read and its one multi-destination write (or write-zeroes), and what their results
// record in the job and its master. Plans go to dm-io's internal `submitPlan`, not `dmIo`:
// every region of a job was validated when the job was submitted (validate-job.ts) and each
// chunk is a sub-range of those regions, so nothing is validated again per chunk. Page lists
// go as page lists; dm-io's dispatch merges pages that follow each other in memory into one
// segment. Pure functions of the job: the client (kcopyd-client.ts) issues the plans and moves
// the job between its lists.

import { IOPRIO_DEFAULT, PAGE_SECTORS } from '../constants.js';
import type { DmIoClient } from '../core/client.js';
import type { DmIoResult } from '../core/io-tracker.js';
import type { DmIoPlan } from '../core/request.js';
import type { PageListMemory, PageListNode } from '../memory/types.js';
import { divCeil } from '../units.js';
import type { KcopydJob } from './job.js';
import type { PageGrant } from './page-reserve.js';

/** Chunk I/O is asynchronous and carries no flush or FUA (a flush is its own plan). */
const CHUNK_FLAGS = Object.freeze({ sync: false, preflush: false, fua: false });

/** Pages a chunk of `job` needs. */
export function chunkPages(job: KcopydJob): number {
  return divCeil(job.countSectors, PAGE_SECTORS);
}

/** Gives `job` its pages: links them, in order, into the job's reusable page list. */
export function attachPages(job: KcopydJob, grant: PageGrant): void {
  const pageCount = grant.pages.length;
  job.grant = grant;
  while (job.nodes.length < pageCount) job.nodes.push({ page: grant.pages[0]!, next: null });
  for (let index = 0; index < pageCount; index += 1) {
    const node = job.nodes[index] as PageListNode;
    node.page = grant.pages[index]!;
    node.next = index + 1 < pageCount ? job.nodes[index + 1]! : null;
  }
  if (job.memory === null) job.memory = { type: 'page-list', list: job.nodes[0]!, offset: 0 };
  else job.memory.list = job.nodes[0]!;
}

/** The plan of the chunk's read: the source region into the job's pages. */
export function readPlan(job: KcopydJob, io: DmIoClient): DmIoPlan {
  if (job.sourceDevice === null || job.memory === null) {
    throw new Error('kcopyd: only a copy job holding pages reads');
  }
  return {
    op: 'read', flags: CHUNK_FLAGS, ioprio: IOPRIO_DEFAULT, memory: job.memory, client: io,
    regions: [{ device: job.sourceDevice, sector: job.sourceSector, count: job.countSectors }],
  };
}

/**
 * The plan of the chunk's write to every destination: from the job's pages, from the client's
 * circular zero page (`zeroMemory`) for a zero job, or a write-zeroes without memory.
 */
export function writePlan(job: KcopydJob, io: DmIoClient, zeroMemory: PageListMemory): DmIoPlan {
  const memory = job.op === 'write-zeroes' ? null : job.zero ? zeroMemory : job.memory;
  if (job.op !== 'write-zeroes' && memory === null) {
    throw new Error('kcopyd: a data job reached its write without pages');
  }
  return {
    op: job.op === 'write-zeroes' ? 'write-zeroes' : 'write', flags: CHUNK_FLAGS,
    ioprio: IOPRIO_DEFAULT, memory, client: io, regions: job.dests,
  };
}

/**
 * Records the errors of a finished read or write. A read error marks the job (its master keeps
 * the first error); a write error marks the job and, at once, its master, so no write issued
 * from now on goes to a destination dropped for it.
 */
export function recordIoErrors(job: KcopydJob, result: DmIoResult): void {
  const master = job.master;
  if (job.op === 'read') {
    job.readErr = true;
    master.readError ??= result.errors[0];
    return;
  }
  job.writeErr |= result.errorBits;
  master.writeErr |= result.errorBits;
  for (let index = 0; index < job.dests.length; index += 1) {
    if ((result.errorBits >> BigInt(index)) & 1n) {
      master.writeErrors[index] ??= result.errors[index];
    }
  }
}
