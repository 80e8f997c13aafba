// Owns the table device: a BlockDevice made of segments, each served by a target. A request is
// cut at segment ends and at each target's maximum I/O length (measured from the segment's
// start), the pieces go to their targets (which pass them down with dm-io), and the request
// completes once, when its last piece has, with the first error. A flush with data becomes an
// empty flush of every target, then the data without the flush (as dm core does). The device
// owns what it was built from: closing it stops every target (which releases what it holds),
// waits for requests in flight, closes the devices the table opened and destroys its dm-io
// client.
//
// An extent query is answered by the segment holding its first sector, up to that segment's
// end (the caller asks again for the next): by the target's `extents` (zero: a hole; linear:
// its device's, shifted), or as data for targets without one.
//
// Limits are the most restrictive of its parts: the largest logical and physical block and
// memory alignment, the smallest request and segment bounds, discard and write-zeroes only when
// every segment takes them; a volatile cache (flush) or FUA when any part has one.

import assert from '../assert.js';
import { GIB, MIB, SECTOR_SIZE } from '../constants.js';
import type { DmIoClient } from '../core/client.js';
import type {
  BlockDevice, DeviceDone, DeviceExtent, DeviceLimits, DeviceRequest, ExtentsDone, RequestFlags,
} from '../devices/block-device.js';
import { requestPastEnd } from '../devices/block-device.js';
import { requestError } from '../devices/request-error.js';
import { IoError, type DmIoError } from '../errors.js';
import { SegmentCursor } from './segment-cursor.js';
import type { Target, TargetIo } from './target.js';
import { withoutPreflush } from './target-io.js';
import { bytesToSectorsExact } from '../units.js';

/** One segment of a table: sectors `[startSector, startSector + lengthSectors)`. */
export interface TableSegment {
  readonly startSector: number;
  readonly lengthSectors: number;
  /** The line of the table it came from. */
  readonly lineNumber: number;
  readonly target: Target;
}

/** One segment's status, as `dmsetup status` and `dmsetup table` report it. */
export interface TableSegmentStatus {
  readonly startSector: number;
  readonly lengthSectors: number;
  /** The target type. */
  readonly target: string;
  /** The target's runtime state (`dmsetup status` after the type). */
  readonly status: string;
  /** The target's canonical arguments (`dmsetup table` after the type). */
  readonly table: string;
}

/** What a table device is built from; it takes ownership of all of it. */
export interface TableParts {
  readonly name: string;
  readonly segments: readonly TableSegment[];
  /** Devices the table opened (each once), closed with it in reverse order. */
  readonly ownedDevices: readonly BlockDevice[];
  readonly ioClient: DmIoClient;
  /** Destroys the dm-io client (and anything else the opener made). */
  readonly release: () => Promise<void>;
  readonly readOnly: boolean;
}

/** Most sectors of a discard or write-zeroes when no part bounds it. */
const UNBOUNDED_RANGE_SECTORS = bytesToSectorsExact(2 * GIB);
/** Request bound when no part has one (tables of zero and error targets only). */
const DEFAULT_MAX_SECTORS = bytesToSectorsExact(4 * MIB);

/** A device-mapper table as a BlockDevice. */
export class TableDevice implements BlockDevice {
  readonly name: string;
  readonly kind = 'table' as const;
  readonly sizeSectors: number;
  readonly readOnly: boolean;
  readonly limits: DeviceLimits;
  readonly canBlock = false;
  readonly #segments: readonly TableSegment[];
  readonly #starts: readonly number[];
  readonly #parts: TableParts;
  #closed = false;
  #closing: Promise<void> | null = null;
  #inflight = 0;
  #idle: (() => void) | null = null;

  constructor(parts: TableParts) {
    assert.ok(parts.segments.length > 0, 'a table has segments');
    this.name = parts.name;
    this.#parts = parts;
    this.#segments = parts.segments;
    this.#starts = parts.segments.map((segment) => segment.startSector);
    const last = parts.segments[parts.segments.length - 1] as TableSegment;
    this.sizeSectors = last.startSector + last.lengthSectors;
    this.readOnly = parts.readOnly;
    this.limits = tableLimits(parts.segments);
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** The targets, in segment order. */
  get targets(): readonly Target[] {
    return this.#segments.map((segment) => segment.target);
  }

  /** Each segment's status and canonical table arguments, in order. */
  segmentStatus(): TableSegmentStatus[] {
    return this.#segments.map((segment) => ({
      startSector: segment.startSector, lengthSectors: segment.lengthSectors,
      target: segment.target.type, status: segment.target.status(),
      table: segment.target.table(),
    }));
  }

  submit(request: DeviceRequest, done: DeviceDone): void {
    const refusal = this.#refusal(request);
    if (refusal !== null) {
      queueMicrotask(() => done(refusal));
      return;
    }
    this.#inflight += 1;
    const finish = (error: DmIoError | null): void => {
      this.#uncount();
      done(error === null ? null : this.#wrap(request, error));
    };
    if (!request.flags.preflush) {
      this.#submitData(request, finish);
      return;
    }
    this.#flushTargets((error) => {
      if (error !== null || request.countSectors === 0) finish(error);
      else this.#submitData(request, finish);
    });
  }

  /** How a range is allocated, from the segment holding `sector` (see the file header). */
  extents(sector: number, countSectors: number, done: ExtentsDone): void {
    assert.ok(Number.isSafeInteger(sector) && sector >= 0, 'sector');
    assert.ok(Number.isSafeInteger(countSectors) && countSectors >= 1, 'countSectors');
    assert.ok(sector + countSectors <= this.sizeSectors, 'an extent query inside the device');
    if (this.#closed) {
      const error = new IoError({ errno: 'EBADF', syscall: 'extents', device: this.name, sector,
        countSectors });
      queueMicrotask(() => done(error, []));
      return;
    }
    const segment = this.#segments[this.#segmentIndex(sector)] as TableSegment;
    const offsetSectors = sector - segment.startSector;
    const pieceSectors = Math.min(countSectors, segment.lengthSectors - offsetSectors);
    const { target } = segment;
    if (target.extents === undefined) {
      const data = [{ sector, countSectors: pieceSectors, hole: false, zero: false }];
      queueMicrotask(() => done(null, data));
      return;
    }
    this.#inflight += 1;
    target.extents(offsetSectors, pieceSectors, (error, extents) => {
      this.#uncount();
      if (error !== null) {
        done(new IoError({ errno: error.errno, syscall: 'extents', device: this.name, sector,
          countSectors, cause: error }), []);
        return;
      }
      done(null, extents.map((extent): DeviceExtent => ({
        ...extent, sector: extent.sector + segment.startSector,
      })));
    });
  }

  #uncount(): void {
    this.#inflight -= 1;
    if (this.#inflight === 0 && this.#idle !== null) this.#idle();
  }

  #refusal(request: DeviceRequest): IoError | null {
    if (this.#closed) return requestError(this, request, 'EBADF');
    if (requestPastEnd(this, request)) return requestError(this, request, 'EIO');
    if (this.readOnly && request.op !== 'read' && request.countSectors > 0) {
      return requestError(this, request, 'EROFS');
    }
    return null;
  }

  /** Empty flush to every target; `done` once with the first error. */
  #flushTargets(done: (error: DmIoError | null) => void): void {
    const join = new Join(done);
    for (const segment of this.#segments) segment.target.flush(join.piece());
    join.close();
  }

  /** Cuts the data of `request` into pieces and sends each to its target. */
  #submitData(request: DeviceRequest, done: (error: DmIoError | null) => void): void {
    if (this.#submitWhole(request, done)) return;
    const join = new Join(done);
    const cursor = request.segments.length > 0 ? new SegmentCursor(request.segments) : null;
    const flags = dataFlags(request.flags);
    const endSector = request.sector + request.countSectors;
    let sector = request.sector;
    let index = this.#segmentIndex(sector);
    while (sector < endSector) {
      const segment = this.#segments[index] as TableSegment;
      const segmentEnd = segment.startSector + segment.lengthSectors;
      if (sector >= segmentEnd) {
        index += 1;
        continue;
      }
      const offset = sector - segment.startSector;
      const maxIo = segment.target.maxIoSectors;
      const boundary = maxIo > 0 ? segment.startSector + (Math.floor(offset / maxIo) + 1) * maxIo :
        segmentEnd;
      const pieceEnd = Math.min(endSector, segmentEnd, boundary);
      const countSectors = pieceEnd - sector;
      const io: TargetIo = {
        op: request.op, sector: offset, countSectors, flags, ioprio: request.ioprio,
        segments: cursor === null ? [] : cursor.take(countSectors * SECTOR_SIZE),
      };
      segment.target.map(io, join.piece());
      sector = pieceEnd;
    }
    join.close();
  }

  /**
   * The common case: the request lies in one segment and within one maximum-I/O unit, so it
   * is one piece with the request's own memory. False, having done nothing, otherwise.
   */
  #submitWhole(request: DeviceRequest, done: (error: DmIoError | null) => void): boolean {
    if (request.countSectors === 0) return false;
    const segment = this.#segments[this.#segmentIndex(request.sector)] as TableSegment;
    const offset = request.sector - segment.startSector;
    const endOffset = offset + request.countSectors;
    if (endOffset > segment.lengthSectors) return false;
    const maxIo = segment.target.maxIoSectors;
    if (maxIo > 0 && Math.floor(offset / maxIo) !== Math.floor((endOffset - 1) / maxIo)) return false;
    segment.target.map({
      op: request.op, sector: offset, countSectors: request.countSectors,
      segments: request.segments, flags: dataFlags(request.flags), ioprio: request.ioprio,
    }, done);
    return true;
  }

  /** Index of the segment holding `sector` (binary search over the starts). */
  #segmentIndex(sector: number): number {
    let low = 0;
    let high = this.#starts.length - 1;
    while (low < high) {
      const middle = (low + high + 1) >> 1;
      if ((this.#starts[middle] as number) <= sector) low = middle;
      else high = middle - 1;
    }
    return low;
  }

  /** The table's own error for a request, keeping the errno of the part that failed. */
  #wrap(request: DeviceRequest, error: DmIoError): IoError {
    const errno = error instanceof IoError ? error.errno : 'EIO';
    return new IoError({
      errno, syscall: request.countSectors === 0 ? 'flush' : request.op, device: this.name,
      sector: request.sector, countSectors: request.countSectors, cause: error,
    });
  }

  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    this.#closed = true;
    // As the kernel's suspend: targets first release what they hold (delay's queue) and end
    // background work, waiting for their own pieces; then every request in flight is done.
    await Promise.all(this.#segments.map((segment) => segment.target.stop()));
    if (this.#inflight > 0) {
      await new Promise<void>((resolve) => {
        this.#idle = resolve;
      });
    }
    await closeDevices(this.#parts.ownedDevices);
    await this.#parts.release();
  }
}

/** Closes `devices` in reverse order; every close is attempted; the first failure is rethrown. */
export async function closeDevices(devices: readonly BlockDevice[]): Promise<void> {
  let failure: unknown = null;
  for (const device of [...devices].reverse()) {
    try {
      await device.close();
    } catch (error) {
      failure ??= error;
    }
  }
  if (failure !== null) throw failure;
}

/** Completes once after every piece it handed out, and its own `close`, has. */
class Join {
  #pending = 1;
  #error: DmIoError | null = null;
  readonly #done: (error: DmIoError | null) => void;

  constructor(done: (error: DmIoError | null) => void) {
    this.#done = done;
  }

  piece(): (error: DmIoError | null) => void {
    this.#pending += 1;
    return (error) => this.#drop(error);
  }

  close(): void {
    // Every piece completes asynchronously, so this drop never completes a request inside
    // `submit` unless it had no pieces at all; defer that case.
    if (this.#pending === 1) queueMicrotask(() => this.#drop(null));
    else this.#drop(null);
  }

  #drop(error: DmIoError | null): void {
    this.#error ??= error;
    this.#pending -= 1;
    if (this.#pending === 0) this.#done(this.#error);
  }
}

function dataFlags(flags: RequestFlags): RequestFlags {
  return flags.preflush ? withoutPreflush(flags) : flags;
}

/** The limits of a table: the most restrictive of its targets and their devices. */
function tableLimits(segments: readonly TableSegment[]): DeviceLimits {
  const devices = segments.flatMap((segment) => segment.target.devices);
  const maxOf = (values: number[], floor: number): number => Math.max(floor, ...values);
  const minOf = (values: number[], fallback: number): number =>
    values.length === 0 ? fallback : Math.min(...values);
  const logicalBlockBytes = maxOf([
    ...devices.map((device) => device.limits.logicalBlockBytes),
    ...segments.map((segment) => segment.target.limits.logicalBlockBytes ?? SECTOR_SIZE),
  ], SECTOR_SIZE);
  const blockSectors = logicalBlockBytes / SECTOR_SIZE;
  const rangeLimit = (pick: (limits: DeviceLimits) => number,
    own: (target: Target) => number | undefined): number => {
    const perTarget = segments.map(({ target }) => {
      const fromDevices = minOf(target.devices.map((device) => pick(device.limits)),
        UNBOUNDED_RANGE_SECTORS);
      return Math.min(own(target) ?? UNBOUNDED_RANGE_SECTORS, fromDevices);
    });
    const limit = Math.min(...perTarget);
    return limit < blockSectors ? 0 : limit - (limit % blockSectors);
  };
  const maxSectors = minOf(devices.map((device) => device.limits.maxSectorsPerRequest),
    DEFAULT_MAX_SECTORS);
  return {
    logicalBlockBytes,
    physicalBlockBytes: maxOf(devices.map((device) => device.limits.physicalBlockBytes),
      logicalBlockBytes),
    maxSectorsPerRequest: Math.max(blockSectors, maxSectors - (maxSectors % blockSectors)),
    maxSegmentsPerRequest: Math.max(1, minOf(devices.map((device) =>
      device.limits.maxSegmentsPerRequest), 256)),
    maxDiscardSectors: rangeLimit((limits) => limits.maxDiscardSectors,
      (target) => target.limits.maxDiscardSectors),
    maxWriteZeroesSectors: rangeLimit((limits) => limits.maxWriteZeroesSectors,
      (target) => target.limits.maxWriteZeroesSectors),
    memoryAlignmentBytes: maxOf(devices.map((device) => device.limits.memoryAlignmentBytes), 0),
    flush: devices.some((device) => device.limits.flush),
    fua: devices.some((device) => device.limits.fua),
  };
}
