// Owns how a large job is cut into chunks. A master longer than the client's sub-job size gets
// 8 sub-job slots (the kernel's SPLIT_COUNT). Each slot takes the next chunk, in increasing
// offset order, when it starts and each time its chunk completes: the chunk's errors are
// folded into the master first, then the slot takes the next chunk while the master may go on
// (`mayTakeChunk`: no error, or ignoreError; with dropFailedDestinations, a destination left
// and no read error; never once cancelled). A slot that finds nothing left retires; the last
// one to retire ends the master. So at most 8 chunks are in flight per job, and once the job
// may not go on no new chunk starts while those in flight finish. These are pure functions of
// the jobs: the client (kcopyd-client.ts) calls them and queues what they decide.

import assert from '../assert.js';
import { KCOPYD_SPLIT_COUNT } from './constants.js';
import { KcopydJob } from './job.js';
import { mayTakeChunk } from './outcome.js';

/** Makes the 8 slots of a split master; each then takes its first chunk (`takeChunk`). */
export function createSlots(master: KcopydJob, subJobSectors: number): readonly KcopydJob[] {
  assert.ok(master.countSectors > subJobSectors, 'only jobs longer than a sub-job split');
  master.subJobsActive = KCOPYD_SPLIT_COUNT;
  master.progressSectors = 0;
  master.writeOffsetSectors = 0;
  const slots: KcopydJob[] = [];
  for (let index = 0; index < KCOPYD_SPLIT_COUNT; index += 1) {
    const slot = new KcopydJob('sub', master);
    slot.dests = master.dests.map((dest) => ({ device: dest.device, sector: 0, count: 0 }));
    slots.push(slot);
  }
  master.slots = slots;
  return slots;
}

/** Folds a finished chunk's errors into its master (the kernel's `segment_complete`). */
export function foldChunk(slot: KcopydJob): void {
  const master = slot.master;
  assert.ok(slot.kind === 'sub' && master !== slot);
  if (slot.readErr) master.readErr = true;
  master.writeErr |= slot.writeErr;
}

/**
 * Points `slot` at its master's next chunk and answers true, or answers false when the master
 * may not go on or has nothing left: the slot then retired (see `lastSlotRetired`).
 */
export function takeChunk(slot: KcopydJob, subJobSectors: number): boolean {
  const master = slot.master;
  const offsetSectors = master.progressSectors;
  const countSectors = mayTakeChunk(master) ?
    Math.min(master.countSectors - offsetSectors, subJobSectors) : 0;
  if (countSectors === 0) {
    master.subJobsActive -= 1;
    assert.ok(master.subJobsActive >= 0);
    return false;
  }
  master.progressSectors += countSectors;
  loadChunk(slot, master, offsetSectors, countSectors);
  return true;
}

/** True once every slot of `master` has retired: the master is over. */
export function lastSlotRetired(master: KcopydJob): boolean {
  return master.subJobsActive === 0;
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
