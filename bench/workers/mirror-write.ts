// Owns workload 2 inside a worker: write `sizeBytes` sequentially in `chunkBytes` pieces to
// every path at once, `depth` chunks in flight, either as one multi-region `dmIo` per chunk
// (the dm-io way to mirror; memory as `kmem` or as one bio vector) or as one callback
// `fs.write` per file per chunk (plain Node).
// Memory is page aligned and random-filled once; the files are opened buffered.

import fs from 'node:fs';
import { randomFillSync } from 'node:crypto';
import type { BlockDevice, DmIoMemory } from '../../src/index.js';
import { lib } from './lib.js';
import { runCountedLoop, type SlotDone } from './closed-loop.js';
import type { MirrorWriteJob, WorkerMeasurement } from './jobs.js';

const { allocAligned, dmIo, dmIoClientCreate, dmIoClientDestroy, openDevice } = lib;

/** Runs one workload-2 job; `elapsedMs` covers the first issue to the last completion. */
export async function runMirrorWrite(job: MirrorWriteJob): Promise<WorkerMeasurement> {
  const memory = allocAligned(job.depth * job.chunkBytes);
  randomFillSync(memory);
  const slots = Array.from({ length: job.depth },
    (_, slot) => memory.subarray(slot * job.chunkBytes, (slot + 1) * job.chunkBytes));
  const chunkCount = Math.floor(job.sizeBytes / job.chunkBytes);
  const measured = job.variant === 'fs-cb' ?
    await mirrorWithFs(job, slots, chunkCount) : await mirrorWithDmio(job, slots, chunkCount);
  return { ...measured, bytes: chunkCount * job.chunkBytes };
}

async function mirrorWithDmio(
  job: MirrorWriteJob, slots: readonly Uint8Array[], chunkCount: number,
): Promise<WorkerMeasurement> {
  const devices: BlockDevice[] = [];
  const client = dmIoClientCreate({ inflightMax: Math.max(128, job.depth * job.paths.length) });
  try {
    for (const path of job.paths) devices.push(await openDevice(path));
    const chunkSectors = job.chunkBytes / 512;
    const fn = (errorBits: bigint, done: SlotDone): void =>
      done(errorBits === 0n ? null : new Error(`mirror write failed: bits ${errorBits}`));
    return await runCountedLoop(job.depth, chunkCount, (chunkIndex, slot, done) => {
      const data = slots[slot] ?? new Uint8Array(0);
      const sector = chunkIndex * chunkSectors;
      const mem: DmIoMemory = job.variant === 'dmio-bvec' ?
        { type: 'bvec', bvecs: [{ page: data, len: data.length, offset: 0 }] } :
        { type: 'kmem', data };
      dmIo({ op: 'write', mem, client, notify: { fn, context: done } },
        devices.map((device) => ({ device, sector, count: chunkSectors })));
    });
  } finally {
    await dmIoClientDestroy(client);
    for (const device of devices) await device.close();
  }
}

async function mirrorWithFs(
  job: MirrorWriteJob, slots: readonly Uint8Array[], chunkCount: number,
): Promise<WorkerMeasurement> {
  const fds = job.paths.map((path) => fs.openSync(path, 'r+'));
  try {
    return await runCountedLoop(job.depth, chunkCount, (chunkIndex, slot, done) => {
      const data = slots[slot] ?? new Uint8Array(0);
      let remaining = fds.length;
      let failure: Error | null = null;
      const written = (error: Error | null): void => {
        failure ??= error;
        remaining -= 1;
        if (remaining === 0) done(failure);
      };
      const positionBytes = chunkIndex * job.chunkBytes;
      for (const fd of fds) fs.write(fd, data, 0, data.length, positionBytes, written);
    });
  } finally {
    for (const fd of fds) fs.closeSync(fd);
  }
}
