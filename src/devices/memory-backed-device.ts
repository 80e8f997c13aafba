// Owns what every in-process device shares: limits with test overrides, the closed and
// past-end checks, completion on a later microtask (never inside `submit` or `extents`), and
// the blocking forms (`submitSync`, `extentsSync`), which compute what the others deliver.
// Subclasses only say how to read, write and clear bytes, and which of their sectors are data
// (`fillExtents`).

import assert from '../assert.js';
import { GIB, MIB, PAGE_SIZE, SECTOR_SIZE } from '../constants.js';
import { InvalidRequestError } from '../errors.js';
import type { IoError } from '../errors.js';
import { bytesToSectorsExact, sectorsToBytes } from '../units.js';
import type {
  BlockDevice, DeviceDone, DeviceKind, DeviceLimits, DeviceRequest, ExtentsAnswer, ExtentsDone,
} from './block-device.js';
import { requestPastEnd } from './block-device.js';
import { ExtentList } from './extent-list.js';
import { extentsError, pastEndError, requestError } from './request-error.js';

/** Limits of in-process devices unless a caller overrides them (tests do, to force splits). */
export const MEMORY_DEVICE_LIMITS: DeviceLimits = {
  logicalBlockBytes: SECTOR_SIZE,
  physicalBlockBytes: PAGE_SIZE,
  maxSectorsPerRequest: bytesToSectorsExact(4 * MIB),
  maxSegmentsPerRequest: 256,
  maxDiscardSectors: bytesToSectorsExact(2 * GIB),
  maxWriteZeroesSectors: bytesToSectorsExact(2 * GIB),
  memoryAlignmentBytes: 0,
  flush: false,
  fua: false,
};

/** Merges `overrides` into the default limits, checking that they stay coherent. */
export function memoryDeviceLimits(name: string, overrides: Partial<DeviceLimits> = {}): DeviceLimits {
  const limits = { ...MEMORY_DEVICE_LIMITS, ...overrides };
  const block = limits.logicalBlockBytes;
  if (block < SECTOR_SIZE || block > PAGE_SIZE || (block & (block - 1)) !== 0) {
    throw new InvalidRequestError('DMIO_ERR_INVALID_ARG_VALUE', `${name} limits`,
      `logicalBlockBytes must be a power of two from ${SECTOR_SIZE} to ${PAGE_SIZE}`);
  }
  if (limits.maxSectorsPerRequest * SECTOR_SIZE < block || limits.maxSegmentsPerRequest < 1) {
    throw new InvalidRequestError('DMIO_ERR_INVALID_ARG_VALUE', `${name} limits`,
      'a request must be able to hold one logical block in one segment');
  }
  return limits;
}

/** An in-process device: completes every request on a later microtask. */
export abstract class MemoryBackedDevice implements BlockDevice {
  readonly name: string;
  abstract readonly kind: DeviceKind;
  readonly sizeSectors: number;
  readonly readOnly: boolean;
  readonly limits: DeviceLimits;
  readonly canBlock = true;
  #closed = false;

  constructor(name: string, sizeSectors: number, readOnly: boolean, limits: DeviceLimits) {
    this.name = name;
    this.sizeSectors = sizeSectors;
    this.readOnly = readOnly;
    this.limits = limits;
  }

  get closed(): boolean {
    return this.#closed;
  }

  submit(request: DeviceRequest, done: DeviceDone): void {
    const error = this.submitSync(request);
    queueMicrotask(() => done(error));
  }

  submitSync(request: DeviceRequest): IoError | null {
    if (this.#closed) return requestError(this, request, 'EBADF');
    if (requestPastEnd(this, request)) return pastEndError(this, request);
    if (this.readOnly && request.op !== 'read' && request.countSectors > 0) {
      return requestError(this, request, 'EROFS');
    }
    // A pure flush: in-process devices have no volatile cache, so there is nothing to do (and
    // the read-only devices' writeSegments must never see it).
    if (request.countSectors === 0) return null;
    const offsetBytes = sectorsToBytes(request.sector);
    const lengthBytes = sectorsToBytes(request.countSectors);
    switch (request.op) {
      case 'read':
        this.readSegments(offsetBytes, request.segments);
        break;
      case 'write':
        this.writeSegments(offsetBytes, request.segments);
        break;
      case 'discard':
      case 'write-zeroes':
        this.clearRange(offsetBytes, lengthBytes);
        break;
    }
    return null;
  }

  /**
   * How `[sector, sector + countSectors)` is allocated (see `BlockDevice.extents`): the answer
   * of `extentsSync`, delivered on a later microtask; EBADF once closed.
   */
  extents(sector: number, countSectors: number, done: ExtentsDone): void {
    const answer = this.extentsSync(sector, countSectors);
    queueMicrotask(() => done(answer.error, answer.extents));
  }

  /** `extents`'s answer, returned at once (see `BlockDevice.extentsSync`); EBADF once closed. */
  extentsSync(sector: number, countSectors: number): ExtentsAnswer {
    assert.ok(Number.isSafeInteger(sector) && sector >= 0, 'sector');
    assert.ok(Number.isSafeInteger(countSectors) && countSectors >= 1, 'countSectors');
    assert.ok(sector + countSectors <= this.sizeSectors, 'an extent query inside the device');
    if (this.#closed) {
      return { error: extentsError(this, sector, countSectors, 'EBADF'), extents: [] };
    }
    const list = new ExtentList(sector, countSectors);
    this.fillExtents(list);
    assert.ok(list.extents.length > 0, 'an answer covers at least the first sector');
    return { error: null, extents: list.extents };
  }

  close(): Promise<void> {
    this.#closed = true;
    return Promise.resolve();
  }

  /** Fills `segments`, in order, with the bytes from `offsetBytes`. */
  protected abstract readSegments(offsetBytes: number, segments: readonly Uint8Array[]): void;
  /** Stores `segments`, in order, from `offsetBytes`. */
  protected abstract writeSegments(offsetBytes: number, segments: readonly Uint8Array[]): void;
  /** Makes `lengthBytes` from `offsetBytes` read back as zeros. */
  protected abstract clearRange(offsetBytes: number, lengthBytes: number): void;
  /** Adds runs to `list` from its first sector, bounded work, until it is finished or enough. */
  protected abstract fillExtents(list: ExtentList): void;
}
