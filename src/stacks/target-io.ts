// Owns how targets pass pieces down: every piece goes to its device(s) through dm-io, on the
// table's client, as the kernel's targets remap bios. One contiguous segment goes as `kmem`
// memory, which dm-io's region loop plans as one request with one segment and no cursor
// (`dispatchOneView`) when the piece fits one device request; several sector-multiple segments
// as bio vectors; anything else through one bounce buffer (copied back after a read). An
// argument error that dm-io throws (a closed device, a misaligned piece) becomes the piece's
// error, delivered asynchronously.

import type { DmIoClient } from '../core/client.js';
import { dmIo } from '../core/dm-io.js';
import type { DmIoRegion } from '../core/request.js';
import type { BlockDevice, RequestFlags } from '../devices/block-device.js';
import { segmentsBytes } from '../devices/block-device.js';
import { DmIoError, IoError } from '../errors.js';
import type { DmIoMemory } from '../memory/types.js';
import type { TargetDone, TargetIo } from './target.js';
import { SECTOR_SIZE } from '../constants.js';
import { isAligned } from '../units.js';

/** Flags of an empty flush. */
const FLUSH_FLAGS: RequestFlags = Object.freeze({ sync: false, preflush: true, fua: false });

/** Sends `io` to `device` at `sector` (an absolute sector on that device). */
export function ioToDevice(
  client: DmIoClient, device: BlockDevice, sector: number, io: TargetIo, done: TargetDone,
): void {
  const [only] = io.segments;
  if (io.segments.length !== 1 || only === undefined || (io.op !== 'read' && io.op !== 'write')) {
    ioToRegions(client, [{ device, sector, count: io.countSectors }], io, (result) => {
      done(result.errors[0] ?? null);
    });
    return;
  }
  // One contiguous segment: kmem memory (dm-io's single-buffer case), nothing to copy back.
  const regions = [{ device, sector, count: io.countSectors }];
  try {
    dmIo({
      op: io.op, client, ioprio: io.ioprio, mem: { type: 'kmem', data: only },
      flags: withoutPreflush(io.flags),
      notify: { fn: (_bits: bigint, _context: unknown, result: RegionsOutcome) => done(result.errors[0] ?? null) },
    }, regions);
  } catch (error) {
    const failure = asDmIoError(error, device, io);
    queueMicrotask(() => done(failure));
  }
}

/** The four flag sets without preflush, shared and frozen: index = sync | fua << 1. */
const NO_PREFLUSH_FLAGS: readonly RequestFlags[] = [0, 1, 2, 3].map((bits) =>
  Object.freeze({ sync: (bits & 1) !== 0, preflush: false, fua: (bits & 2) !== 0 }));

/**
 * `flags` less preflush, as a shared frozen object (no allocation per request): the flags of a
 * piece, or of the data part of a request whose flush went first.
 */
export function withoutPreflush(flags: RequestFlags): RequestFlags {
  return NO_PREFLUSH_FLAGS[(flags.sync ? 1 : 0) | (flags.fua ? 2 : 0)] as RequestFlags;
}

/** What a multi-region piece reports: the error bits and each region's first error. */
export interface RegionsOutcome {
  readonly errorBits: bigint;
  readonly errors: ReadonlyArray<DmIoError | undefined>;
}

/**
 * Sends `io` to every region at once: a write, discard or write-zeroes of the same data to
 * each (one multi-region dm-io request), or a read of the single region.
 */
export function ioToRegions(
  client: DmIoClient, regions: readonly DmIoRegion[], io: TargetIo,
  done: (outcome: RegionsOutcome) => void,
): void {
  const { memory, finish } = pieceMemory(io);
  const request = {
    op: io.op, client, ioprio: io.ioprio,
    flags: { sync: io.flags.sync, fua: io.flags.fua, preflush: false },
    ...(memory === null ? {} : { mem: memory }),
    notify: {
      fn: (errorBits: bigint, _context: unknown, result: RegionsOutcome) => {
        if (errorBits === 0n) finish();
        done(result);
      },
    },
  };
  try {
    dmIo(request, regions);
  } catch (error) {
    const failure = asDmIoError(error, regions[0]?.device, io);
    const errors = regions.map(() => failure);
    queueMicrotask(() => done({ errorBits: (1n << BigInt(regions.length)) - 1n, errors }));
  }
}

/** Sends an empty flush to each device; `done` gets each device's outcome, in order. */
export function flushDevices(
  client: DmIoClient, devices: readonly BlockDevice[], done: (outcome: RegionsOutcome) => void,
): void {
  if (devices.length === 0) {
    queueMicrotask(() => done({ errorBits: 0n, errors: [] }));
    return;
  }
  const regions = devices.map((device) => ({ device, sector: 0, count: 0 }));
  try {
    dmIo({ op: 'write', flags: FLUSH_FLAGS, client, notify: {
      fn: (_bits: bigint, _context: unknown, result: RegionsOutcome) => done(result),
    } }, regions);
  } catch (error) {
    const failure = asDmIoError(error, devices[0], null);
    queueMicrotask(() => done({
      errorBits: (1n << BigInt(devices.length)) - 1n, errors: devices.map(() => failure),
    }));
  }
}

/** Sends an empty flush to one device. */
export function flushDevice(client: DmIoClient, device: BlockDevice, done: TargetDone): void {
  flushDevices(client, [device], (outcome) => done(outcome.errors[0] ?? null));
}

/** Completes `done` with `error` on a later microtask. */
export function completeLater(done: TargetDone, error: DmIoError | null): void {
  queueMicrotask(() => done(error));
}

/** An EIO for a piece that a target refuses itself (the error target, a failed leg set). */
export function targetError(name: string, io: TargetIo | null, errno = 'EIO'): IoError {
  return new IoError({
    errno, syscall: io === null ? 'flush' : io.op, device: name,
    sector: io?.sector ?? 0, countSectors: io?.countSectors ?? 0,
  });
}

/** The dm-io memory for a piece, and what to do after a successful read (copy a bounce back). */
function pieceMemory(io: TargetIo): { memory: DmIoMemory | null; finish: () => void } {
  const nothing = (): void => undefined;
  if (io.op !== 'read' && io.op !== 'write') return { memory: null, finish: nothing };
  const { segments } = io;
  const [first] = segments;
  if (segments.length === 1 && first !== undefined) {
    return { memory: { type: 'kmem', data: first }, finish: nothing };
  }
  if (segments.every((segment) => isAligned(segment.length, SECTOR_SIZE) && segment.length > 0)) {
    const bvecs = segments.map((page) => ({ page, offset: 0, len: page.length }));
    return { memory: { type: 'bvec', bvecs }, finish: nothing };
  }
  const bounce = new Uint8Array(segmentsBytes(segments));
  if (io.op === 'write') copySegments(segments, bounce);
  return {
    memory: { type: 'kmem', data: bounce },
    finish: io.op === 'read' ? () => scatter(bounce, segments) : nothing,
  };
}

/** Copies `segments`, in order, into `target`. */
export function copySegments(segments: readonly Uint8Array[], target: Uint8Array): void {
  let offsetBytes = 0;
  for (const segment of segments) {
    target.set(segment, offsetBytes);
    offsetBytes += segment.length;
  }
}

/** Copies `source` out over `segments`, in order. */
export function scatter(source: Uint8Array, segments: readonly Uint8Array[]): void {
  let offsetBytes = 0;
  for (const segment of segments) {
    segment.set(source.subarray(offsetBytes, offsetBytes + segment.length));
    offsetBytes += segment.length;
  }
}

function asDmIoError(error: unknown, device: BlockDevice | undefined, io: TargetIo | null): DmIoError {
  if (error instanceof DmIoError) return error;
  return new IoError({
    errno: 'EIO', syscall: io?.op ?? 'flush', device: device?.name ?? 'table',
    sector: io?.sector ?? 0, countSectors: io?.countSectors ?? 0, cause: error,
  });
}
