// Owns workload 1 inside a worker: 4 KiB random reads or writes, `depth` in flight, through raw
// Node `fs` or through `dmIo`, on the same file or device and the same offsets (a seeded
// generator). Every variant gets page-aligned memory from `allocAligned`, one block per slot,
// so O_DIRECT accepts it and no variant pays a bounce copy. Per-slot request objects are built
// once: the caller side allocates nothing per operation, which is how a tuned user would call.

import fs from 'node:fs';
import { randomFillSync } from 'node:crypto';
import type { BlockDevice, DmIoNotify, DmIoRegion, DmIoRequest } from '../../src/index.js';
import { lib } from './lib.js';
import { warmFile } from '../page-cache.js';
import {
  RandomBlocks, runClosedLoop, runSyncLoop, type IssueFn, type SlotDone,
} from './closed-loop.js';
import type { RandomIoJob, WorkerMeasurement } from './jobs.js';
import { ThinFsDevice } from './thin-device.js';

const {
  allocAligned, dmIo, dmIoBlocking, dmIoClientCreate, dmIoClientDestroy, openDevice,
} = lib;

/** Runs one workload-1 job and returns the operations it completed in its window. */
export async function runRandomIo(job: RandomIoJob): Promise<WorkerMeasurement> {
  if (job.warmPath !== null) warmFile(job.warmPath);
  const memory = allocAligned(job.depth * job.blockBytes);
  if (job.op === 'write') randomFillSync(memory);
  const slots = Array.from({ length: job.depth },
    (_, slot) => memory.subarray(slot * job.blockBytes, (slot + 1) * job.blockBytes));
  const blocks = new RandomBlocks(job.seed, Math.floor(job.spanBytes / job.blockBytes));
  switch (job.variant) {
    case 'fs-cb':
    case 'fs-sync':
    case 'core-thin':
      return withFd(job, (fd) => runOnFd(job, fd, slots, blocks));
    case 'dmio-notify':
    case 'dmio-promise':
    case 'dmio-blocking':
      return withDevice(job, (device) => runDmio(job, device, slots, blocks));
  }
}

async function withFd<T>(job: RandomIoJob, fn: (fd: number) => Promise<T>): Promise<T> {
  const flags = fs.constants.O_RDWR | (job.direct ? fs.constants.O_DIRECT : 0);
  const fd = fs.openSync(job.path, flags);
  try {
    return await fn(fd);
  } finally {
    fs.closeSync(fd);
  }
}

async function withDevice<T>(
  job: RandomIoJob, fn: (device: BlockDevice) => Promise<T>,
): Promise<T> {
  const device = await openDevice(job.path, { direct: job.direct });
  try {
    return await fn(device);
  } finally {
    await device.close();
  }
}

function runOnFd(
  job: RandomIoJob, fd: number, slots: readonly Uint8Array[], blocks: RandomBlocks,
): Promise<WorkerMeasurement> {
  const { blockBytes } = job;
  if (job.variant === 'fs-sync') {
    const buffer = slots[0] ?? new Uint8Array(0);
    const syncOp = job.op === 'read' ?
      () => { fs.readSync(fd, buffer, 0, blockBytes, blocks.next() * blockBytes); } :
      () => { fs.writeSync(fd, buffer, 0, blockBytes, blocks.next() * blockBytes); };
    return Promise.resolve(runSyncLoop(job, syncOp));
  }
  if (job.variant === 'core-thin') {
    const device = new ThinFsDevice(`thin:${job.path}`, fd, job.spanBytes, job.direct);
    return runDmio(job, device, slots, blocks);
  }
  // The closed loop's per-slot `done` takes the error first, as the fs callbacks do, so it is
  // passed straight through: no closure per operation.
  const issue: IssueFn = (slot, done) => {
    const buffer = slots[slot] ?? new Uint8Array(0);
    const positionBytes = blocks.next() * blockBytes;
    if (job.op === 'read') fs.read(fd, buffer, 0, blockBytes, positionBytes, done);
    else fs.write(fd, buffer, 0, blockBytes, positionBytes, done);
  };
  return runClosedLoop(job.depth, job, issue);
}

async function runDmio(
  job: RandomIoJob, device: BlockDevice, slots: readonly Uint8Array[], blocks: RandomBlocks,
): Promise<WorkerMeasurement> {
  const client = dmIoClientCreate({ inflightMax: Math.max(128, job.depth) });
  const blockSectors = job.blockBytes / 512;
  const regions: DmIoRegion[][] = slots.map(() => [{ device, sector: 0, count: blockSectors }]);
  const requests: DmIoRequest[] = slots.map((data) =>
    ({ op: job.op, mem: { type: 'kmem', data }, client }));
  const region = (slot: number): DmIoRegion[] => {
    const list = regions[slot] ?? [];
    const first = list[0];
    if (first !== undefined) first.sector = blocks.next() * blockSectors;
    return list;
  };
  try {
    if (job.variant === 'dmio-blocking') {
      const request = requests[0] ?? { op: job.op, client };
      return runSyncLoop(job, () => { dmIoBlocking(request, region(0)); });
    }
    if (job.variant === 'dmio-promise') {
      return await runClosedLoop(job.depth, job, (slot, done) => {
        dmIo(requests[slot] ?? { op: job.op, client }, region(slot)).then(
          (result) => done(result.errorBits === 0n ? null : new Error(String(result.errors))),
          (error: unknown) => done(error as Error));
      });
    }
    return await runClosedLoop(job.depth, job, notifyIssue(job, requests, region));
  } finally {
    await dmIoClientDestroy(client);
  }
}

/** The notify form: one request object per slot whose notify context is the slot's `done`. */
function notifyIssue(
  job: RandomIoJob, requests: readonly DmIoRequest[], region: (slot: number) => DmIoRegion[],
): IssueFn {
  const fn: DmIoNotify<SlotDone>['fn'] = (errorBits, done, result) =>
    done(errorBits === 0n ? null : new Error(String(result.errors)));
  const withNotify = requests.map((request) => ({ ...request, notify: { fn, context: noop } }));
  return (slot, done) => {
    const request = withNotify[slot];
    if (request === undefined) throw new Error(`no request for slot ${slot} of ${job.depth}`);
    request.notify.context = done;
    dmIo(request, region(slot));
  };
}

const noop: SlotDone = () => undefined;
