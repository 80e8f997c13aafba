// Owns workload 4 inside a worker: read or write a whole NBD export in `chunkBytes` requests,
// `depth` in flight, through `openDevice(uri)` and `dmIo`. Reads land in reused aligned memory
// and are dropped; writes send random bytes filled once, so no side can skip zeroes.

import { randomFillSync } from 'node:crypto';
import { lib } from './lib.js';
import { runCountedLoop, type SlotDone } from './closed-loop.js';
import type { NbdStreamJob, WorkerMeasurement } from './jobs.js';

const { allocAligned, dmIo, dmIoClientCreate, dmIoClientDestroy, openDevice } = lib;

/** Runs one workload-4 job; `elapsedMs` excludes connecting. */
export async function runNbdStream(job: NbdStreamJob): Promise<WorkerMeasurement> {
  // Four connections where the server allows multi-conn, as nbdcopy (the peer) opens by default.
  const device = await openDevice(job.uri, { readOnly: job.op === 'read', nbd: { connections: 4 } });
  const client = dmIoClientCreate({ inflightMax: Math.max(128, job.depth) });
  try {
    const memory = allocAligned(job.depth * job.chunkBytes);
    if (job.op === 'write') randomFillSync(memory);
    const chunkSectors = job.chunkBytes / 512;
    const totalBytes = Math.min(job.sizeBytes, device.sizeSectors * 512);
    const chunkCount = Math.floor(totalBytes / job.chunkBytes);
    const fn = (errorBits: bigint, done: SlotDone): void =>
      done(errorBits === 0n ? null : new Error(`NBD ${job.op} failed`));
    const measured = await runCountedLoop(job.depth, chunkCount, (chunkIndex, slot, done) => {
      const data = memory.subarray(slot * job.chunkBytes, (slot + 1) * job.chunkBytes);
      dmIo({ op: job.op, mem: { type: 'kmem', data }, client, notify: { fn, context: done } },
        [{ device, sector: chunkIndex * chunkSectors, count: chunkSectors }]);
    });
    return { ...measured, bytes: chunkCount * job.chunkBytes };
  } finally {
    await dmIoClientDestroy(client);
    await device.close();
  }
}
