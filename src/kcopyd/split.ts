// Owns splitting a large job into sub-jobs. A master longer than the client's sub-job size gets
// 8 sub-job slots (the kernel's SPLIT_COUNT). Each slot takes the next chunk (in increasing
// offset order) by calling `segmentComplete`, which is also every sub-job's completion: it
// folds the chunk's errors into the master and, while the master may go on (`mayTakeChunk`:
// no error, or ignoreError; with dropFailedDestinations, a destination left and no read
// error; never once cancelled), takes the next chunk into the same slot. When a slot finds
// nothing left, it retires; the last slot to retire queues the master for its caller's
// callback. So at most 8 chunks are in flight per job, and once the job may not go on no new
// chunk starts while those in flight finish. The first 8 calls run inside the caller's
// submission; the rest on the worker.

import assert from '../assert.js';
import { KCOPYD_SPLIT_COUNT } from './constants.js';
import { KcopydJob } from './job.js';
import type { KcopydClient } from './kcopyd-client.js';
import { mayTakeChunk } from './outcome.js';

/** Starts a split master: its 8 slots each take a first chunk. */
export function splitJob(kc: KcopydClient, master: KcopydJob): void {
  assert.ok(master.countSectors > kc.subJobSectors, 'only jobs longer than a sub-job split');
  master.subJobsActive = KCOPYD_SPLIT_COUNT;
  master.progressSectors = 0;
  master.writeOffsetSectors = 0;
  const slots: KcopydJob[] = [];
  for (let index = 0; index < KCOPYD_SPLIT_COUNT; index += 1) slots.push(createSlot(kc, master));
  master.slots = slots;
  for (const slot of slots) segmentComplete(false, 0n, slot);
}

function createSlot(kc: KcopydClient, master: KcopydJob): KcopydJob {
  const slot = new KcopydJob(kc, 'sub', master);
  slot.dests = master.dests.map((dest) => ({ device: dest.device, sector: 0, count: 0 }));
  slot.fn = (readErr, writeErr, context) => segmentComplete(readErr, writeErr, context);
  slot.context = slot;
  return slot;
}

/** A sub-job's completion (and a slot's start): fold errors in, then take the next chunk. */
export function segmentComplete(readErr: boolean, writeErr: bigint, context: unknown): void {
  const slot = context as KcopydJob;
  const master = slot.master;
  const kc = slot.client;
  assert.ok(slot.kind === 'sub' && master !== slot);
  if (readErr) master.readErr = true;
  master.writeErr |= writeErr;
  let countSectors = 0;
  const progressSectors = master.progressSectors;
  if (mayTakeChunk(master)) {
    countSectors = Math.min(master.countSectors - progressSectors, kc.subJobSectors);
    master.progressSectors += countSectors;
  }
  if (countSectors > 0) {
    loadChunk(slot, master, progressSectors, countSectors);
    kc.countJob();
    kc.dispatch(slot);
    return;
  }
  master.subJobsActive -= 1;
  assert.ok(master.subJobsActive >= 0);
  if (master.subJobsActive === 0) {
    kc.completeJobs.pushTail(master);
    kc.wake();
  }
}

/** Points `slot` at the master's chunk `[offsetSectors, offsetSectors + countSectors)`. */
function loadChunk(
  slot: KcopydJob, master: KcopydJob, offsetSectors: number, countSectors: number,
): void {
  assert.equal(slot.list, null, 'a slot takes a chunk only when it is on no list');
  assert.equal(slot.grant, null, 'a slot gave its pages back before its next chunk');
  slot.ignoreError = master.ignoreError;
  slot.writeSeq = master.writeSeq;
  slot.readErr = master.readErr;
  slot.writeErr = master.writeErr;
  slot.op = master.op;
  slot.zero = master.zero;
  slot.sourceDevice = master.sourceDevice;
  slot.sourceSector = master.sourceSector + offsetSectors;
  slot.countSectors = countSectors;
  slot.writeOffsetSectors = offsetSectors;
  master.dests.forEach((dest, index) => {
    const target = slot.dests[index];
    assert.ok(target !== undefined);
    target.sector = dest.sector + offsetSectors;
    target.count = countSectors;
  });
}
