// Owns the public shape of a dm-io request and its validation at the boundary. Everything a
// request can get wrong is found here, before a single device request exists: types, ranges,
// region count, multi-region reads, closed devices, read-only devices, logical-block
// alignment, memory shape and length. The result is a plan the region loop trusts.

import assert from '../assert.js';
import { DM_IO_MAX_REGIONS, IOPRIO_DEFAULT, SECTOR_SIZE } from '../constants.js';
import type { BlockDevice, DeviceOp, RequestFlags } from '../devices/block-device.js';
import {
  InvalidArgTypeError, InvalidRequestError, OutOfRangeError, StateError,
} from '../errors.js';
import type { DmIoMemory } from '../memory/types.js';
import { DmIoClient } from './client.js';
import type { DmIoResult } from './io-tracker.js';
import { validateMemory } from './validate-memory.js';
import {
  validateBoolean, validateFunction, validateIntegerInRange, validateIoprio, validateOneOf,
  validateOptionsObject, validateUnsigned,
} from '../validate.js';

/** The operations a dm-io request can carry; all but `read` count as writes. */
export const DM_IO_OPS = ['read', 'write', 'discard', 'write-zeroes'] as const;

/** A dm-io operation. */
export type DmIoOp = DeviceOp;

/** A region: `count` sectors of `device` from `sector` (512-byte units). */
export interface DmIoRegion {
  /** The device. */
  device: BlockDevice;
  /** First sector. */
  sector: number;
  /** Sectors; 0 skips the region unless the request carries `preflush`. */
  count: number;
}

/** Request flags, as the kernel's REQ_SYNC, REQ_PREFLUSH and REQ_FUA. */
export interface DmIoFlags {
  /** Mark requests synchronous; added automatically when `notify` is absent. */
  sync?: boolean;
  /** Flush each device's volatile cache first; a zero-count region becomes a pure flush. */
  preflush?: boolean;
  /** Make writes durable before they complete. */
  fua?: boolean;
}

/** The asynchronous completion: `fn(errorBits, context, result)` is called exactly once. */
export interface DmIoNotify<C = unknown> {
  /** Called once after the last device request completed; never inside `dmIo`. */
  fn: (errorBits: bigint, context: C, result: DmIoResult) => void;
  /** Passed back to `fn` unchanged. */
  context?: C;
}

/** A dm-io request (the kernel's `struct dm_io_request`). */
export interface DmIoRequest<C = unknown> {
  /** The operation. */
  op: DmIoOp;
  /** Flags repeated on every device request. */
  flags?: DmIoFlags;
  /**
   * Linux I/O priority value stamped on every device request (default IOPRIO_DEFAULT): 0, or
   * class RT (1), BE (2) or IDLE (3) << 13 | level 0-7; anything the kernel would refuse is
   * refused here (`DMIO_ERR_OUT_OF_RANGE`).
   */
  ioprio?: number;
  /** The memory; required for read and write, ignored for discard and write-zeroes. */
  mem?: DmIoMemory;
  /** With `notify`, `dmIo` returns at once and calls `notify.fn` on completion. */
  notify?: DmIoNotify<C>;
  /** The client whose resources the request uses. */
  client: DmIoClient;
}

/** A validated request: what the region loop runs. */
export interface DmIoPlan {
  readonly op: DmIoOp;
  readonly flags: RequestFlags;
  readonly ioprio: number;
  readonly memory: DmIoMemory | null;
  /** A copy of the caller's regions; the caller may reuse its array at once. */
  readonly regions: readonly DmIoRegion[];
  readonly client: DmIoClient;
}

/** `regions[i]`, the name region i has in errors, built once. */
const REGION_NAMES: readonly string[] = Array.from({ length: DM_IO_MAX_REGIONS },
  (_, index) => `regions[${index}]`);

/** Validates `request` and `regions` for `dmIo`; throws a typed error, submitting nothing. */
export function planRequest(request: unknown, regions: unknown, sync: boolean): DmIoPlan {
  validateOptionsObject(request, 'request');
  const fields = request as Partial<DmIoRequest>;
  const op = validateOneOf(fields.op, 'request.op', DM_IO_OPS);
  const regionList = validateRegionList(regions, op);
  const client = validateClient(fields.client);
  const flags = validateFlags(fields.flags, sync);
  const ioprio = fields.ioprio === undefined ? IOPRIO_DEFAULT :
    validateIoprio(fields.ioprio, 'request.ioprio');
  const copied = new Array<DmIoRegion>(regionList.length);
  for (let index = 0; index < regionList.length; index += 1) {
    copied[index] = validateRegion(regionList[index], REGION_NAMES[index] ?? 'regions', op);
  }
  const memory = validateMemoryFor(fields.mem, op, copied);
  return { op, flags, ioprio, memory, regions: copied, client };
}

/** Validates `request.notify` and returns it, or `null` when absent. */
export function validateNotify(notify: unknown): DmIoNotify | null {
  if (notify === undefined || notify === null) return null;
  validateOptionsObject(notify, 'request.notify');
  validateFunction((notify as { fn?: unknown }).fn, 'request.notify.fn');
  return notify as DmIoNotify;
}

function validateRegionList(regions: unknown, op: DmIoOp): readonly unknown[] {
  if (!Array.isArray(regions)) throw new InvalidArgTypeError('regions', 'an array', regions);
  if (regions.length > DM_IO_MAX_REGIONS) {
    throw new InvalidRequestError('DMIO_ERR_TOO_MANY_REGIONS', 'regions',
      `${regions.length} regions, at most ${DM_IO_MAX_REGIONS}`);
  }
  if (regions.length > 1 && op === 'read') {
    throw new InvalidRequestError('DMIO_ERR_MULTI_REGION_READ', 'regions',
      `a read takes exactly one region, got ${regions.length}`);
  }
  return regions as readonly unknown[];
}

function validateClient(client: unknown): DmIoClient {
  if (!(client instanceof DmIoClient)) {
    throw new InvalidArgTypeError('request.client', 'a DmIoClient', client);
  }
  client.assertUsable();
  return client;
}

/** Every flag combination, frozen and shared: index sync | preflush << 1 | fua << 2. */
const FLAG_SETS: readonly RequestFlags[] = Array.from({ length: 8 }, (_, bits) => Object.freeze({
  sync: (bits & 1) !== 0, preflush: (bits & 2) !== 0, fua: (bits & 4) !== 0,
}));

function flagSet(sync: boolean, preflush: boolean, fua: boolean): RequestFlags {
  const flags = FLAG_SETS[(sync ? 1 : 0) | (preflush ? 2 : 0) | (fua ? 4 : 0)];
  assert.ok(flags !== undefined);
  return flags;
}

/** The flags of a request without `flags`: only `sync`, or nothing. */
const SYNC_ONLY = flagSet(true, false, false);
const NO_FLAGS = flagSet(false, false, false);

function validateFlags(flags: unknown, sync: boolean): RequestFlags {
  if (flags === undefined) return sync ? SYNC_ONLY : NO_FLAGS;
  validateOptionsObject(flags, 'request.flags');
  const given = flags as DmIoFlags;
  return flagSet(validateBoolean(given.sync, 'request.flags.sync', false) || sync,
    validateBoolean(given.preflush, 'request.flags.preflush', false),
    validateBoolean(given.fua, 'request.flags.fua', false));
}

/**
 * Validates one region of a request doing `op`, named `name` in errors (`regions[2]`): a
 * device, a safe sector range, an open device, writable for writes, whole logical blocks.
 * The one region check of the library (kcopyd's jobs use it too).
 */
export function validateRegion(region: unknown, name: string, op: DmIoOp): DmIoRegion {
  validateOptionsObject(region, name);
  const { device, sector, count } = region as Partial<DmIoRegion>;
  validateDevice(device, name);
  // Argument names are built only for the error: a request's check stays allocation-free.
  const first = isUnsigned(sector) ? sector : validateUnsigned(sector, `${name}.sector`);
  const countSectors = isUnsigned(count) ? count : validateUnsigned(count, `${name}.count`);
  if (!Number.isSafeInteger((first + countSectors) * SECTOR_SIZE)) {
    throw new OutOfRangeError(`${name}.count`, 'a region whose end is a safe byte offset',
      countSectors);
  }
  if (device.closed) {
    throw new StateError('DMIO_ERR_DEVICE_CLOSED', device.name, 'the device is closed');
  }
  if (op !== 'read' && device.readOnly && countSectors > 0) {
    throw new StateError('DMIO_ERR_READ_ONLY', device.name,
      `the device is read-only and refuses ${op}`);
  }
  validateBlockAlignment(device, first, countSectors, name);
  return { device, sector: first, count: countSectors };
}

/** Checks `device`, the device of region `regionName`. */
function validateDevice(device: unknown, regionName: string): asserts device is BlockDevice {
  if (typeof device !== 'object' || device === null ||
      typeof (device as BlockDevice).submit !== 'function' ||
      typeof (device as BlockDevice).limits !== 'object') {
    throw new InvalidArgTypeError(`${regionName}.device`, 'a BlockDevice', device);
  }
}

/** What `validateUnsigned` accepts, without building its argument name. */
function isUnsigned(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

function validateBlockAlignment(
  device: BlockDevice, sector: number, countSectors: number, name: string,
): void {
  const blockSectors = device.limits.logicalBlockBytes / SECTOR_SIZE;
  if (blockSectors <= 1) return;
  if (sector % blockSectors !== 0 || countSectors % blockSectors !== 0) {
    throw new InvalidRequestError('DMIO_ERR_MISALIGNED', name,
      `sector ${sector} and count ${countSectors} must be multiples of ${blockSectors} ` +
      `(the device's ${device.limits.logicalBlockBytes}-byte logical block)`);
  }
}

function validateMemoryFor(
  memory: unknown, op: DmIoOp, regions: readonly DmIoRegion[],
): DmIoMemory | null {
  if (op === 'discard' || op === 'write-zeroes') return null;
  let bytesNeeded = 0;
  for (const region of regions) bytesNeeded = Math.max(bytesNeeded, region.count * SECTOR_SIZE);
  if (memory === undefined && bytesNeeded === 0) return null;
  return validateMemory(memory, 'request.mem', bytesNeeded);
}
