// Owns workload 3's plain-Node peer: copy a file to one or more targets with callback `fs`,
// `depth` chunks in flight, each chunk read once into aligned memory and written to every
// target. This is the hand-written code a user would compare `dmio copy` with; it does no
// error bits, no throttling and no progress.

import fs from 'node:fs';
import { lib } from './lib.js';

const { allocAligned } = lib;
import { cpuSince, runCountedLoop } from './closed-loop.js';
import type { FsCopyJob, WorkerMeasurement } from './jobs.js';

/** Runs one copy; `elapsedMs` covers opening the targets to the last write. */
export async function runFsCopy(job: FsCopyJob): Promise<WorkerMeasurement> {
  const memory = allocAligned(job.depth * job.chunkBytes);
  const source = fs.openSync(job.source, 'r');
  const startMs = performance.now();
  const startCpu = process.cpuUsage();
  const targets = job.targets.map((path) => fs.openSync(path, 'w'));
  try {
    const chunkCount = Math.ceil(job.sizeBytes / job.chunkBytes);
    await runCountedLoop(job.depth, chunkCount, (chunkIndex, slot, done) => {
      const data = memory.subarray(slot * job.chunkBytes, (slot + 1) * job.chunkBytes);
      const positionBytes = chunkIndex * job.chunkBytes;
      fs.read(source, data, 0, data.length, positionBytes, (readError, bytes) => {
        if (readError !== null) {
          done(readError);
          return;
        }
        let remaining = targets.length;
        let failure: Error | null = null;
        for (const target of targets) {
          fs.write(target, data, 0, bytes, positionBytes, (writeError) => {
            failure ??= writeError;
            remaining -= 1;
            if (remaining === 0) done(failure);
          });
        }
      });
    });
    return { ops: chunkCount, bytes: job.sizeBytes, elapsedMs: performance.now() - startMs,
      cpuUs: cpuSince(startCpu) };
  } finally {
    for (const target of targets) fs.closeSync(target);
    fs.closeSync(source);
  }
}
