// Owns dm-io's fast path: a request whose whole work is one device request — one region, a
// read or write from one contiguous buffer (`kmem`/`vm`, so one segment), within the device's
// per-request limit, on a device that takes it without a bounce copy. The general path would produce exactly the
// same single request (one segment, same flags and ioprio), the same result and the same
// zero-fill, so the fast path skips the cursor, the region loop and the tracker, which
// measured about 2 µs of main-thread time per 4 KiB request.
//
// Every check here only decides eligibility: anything unusual, including every invalid
// argument, returns null and goes to the general path, which validates it and throws the
// typed error. So the fast path can never accept what the general path would reject.

import { IOPRIO_DEFAULT, IOPRIO_MAX, SECTOR_SIZE } from '../constants.js';
import type { BlockDevice, DeviceRequest, RequestFlags } from '../devices/block-device.js';
import type { DmIoError } from '../errors.js';
import { isAlignedView } from '../memory/aligned.js';
import { DmIoClient } from './client.js';
import { failedRequest, type DmIoResult } from './io-tracker.js';

/** The one device request of an eligible request, and where it goes. */
export interface FastRequest {
  readonly client: DmIoClient;
  readonly device: BlockDevice;
  readonly request: DeviceRequest;
}

/** The flag objects, shared: index = sync | preflush << 1 | fua << 2. */
const FLAGS: readonly RequestFlags[] = Array.from({ length: 8 }, (_, bits) => Object.freeze({
  sync: (bits & 1) !== 0, preflush: (bits & 2) !== 0, fua: (bits & 4) !== 0,
}));

/** The single device request `request` comes to, or null when the general path must run. */
export function planFast(request: unknown, regions: unknown, sync: boolean): FastRequest | null {
  if (!isPlainObject(request)) return null;
  if (!Array.isArray(regions) || regions.length !== 1) return null;
  const { op, client, mem, ioprio } = request as Record<string, unknown>;
  if (op !== 'read' && op !== 'write') return null;
  if (!(client instanceof DmIoClient) || client.destroyed) return null;
  const flags = fastFlags((request as { flags?: unknown }).flags, sync);
  if (flags === null) return null;
  if (ioprio !== undefined && !isIntegerIn(ioprio, 0, IOPRIO_MAX)) return null;
  const region: unknown = regions[0];
  if (!isPlainObject(region)) return null;
  const { device, sector, count } = region as Record<string, unknown>;
  if (!isIntegerIn(sector, 0, Number.MAX_SAFE_INTEGER)) return null;
  if (!isIntegerIn(count, 1, Number.MAX_SAFE_INTEGER)) return null;
  if (!isUsableDevice(device, op, sector, count)) return null;
  if (count * SECTOR_SIZE > client.bounceLimitBytes(device)) return null;
  const segment = fastSegment(mem, count * SECTOR_SIZE, device);
  if (segment === null) return null;
  return {
    client, device,
    request: {
      op, sector, countSectors: count, segments: [segment], flags,
      ioprio: ioprio === undefined ? IOPRIO_DEFAULT : ioprio as number,
    },
  };
}

/** Runs a fast request; `complete` runs once, never before the caller has returned. */
export function runFast(fast: FastRequest, complete: (result: DmIoResult) => void): void {
  const { request } = fast;
  // planFast took only memory the device accepts as it is: the client need not check again.
  fast.client.submit(fast.device, request, (error) => {
    complete(resultOf(request, error));
  }, true);
}

/** Runs a fast request on the calling thread (the device can block). */
export function runFastBlocking(fast: FastRequest): DmIoResult {
  const { request } = fast;
  return resultOf(request, fast.client.submitBlocking(fast.device, request, true));
}

/** The one-region result, fresh each time as the general path's. */
function resultOf(request: DeviceRequest, error: DmIoError | null): DmIoResult {
  if (error === null) return { errorBits: 0n, errors: [undefined] };
  return { errorBits: 1n, errors: [failedRequest(request, error, 0)] };
}

function fastFlags(flags: unknown, sync: boolean): RequestFlags | null {
  if (flags === undefined) return FLAGS[sync ? 1 : 0] ?? null;
  if (!isPlainObject(flags)) return null;
  const given = flags as Record<string, unknown>;
  const syncFlag = optionalBoolean(given['sync']);
  const preflush = optionalBoolean(given['preflush']);
  const fua = optionalBoolean(given['fua']);
  if (syncFlag === null || preflush === null || fua === null) return null;
  return FLAGS[(syncFlag || sync ? 1 : 0) | (preflush ? 2 : 0) | (fua ? 4 : 0)] ?? null;
}

/** What `validateOptionsObject` accepts: an object that is not null and not an array. */
function isPlainObject(value: unknown): value is object {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function optionalBoolean(value: unknown): boolean | null {
  if (value === undefined) return false;
  return typeof value === 'boolean' ? value : null;
}

function isIntegerIn(value: unknown, min: number, max: number): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= min && value <= max;
}

/** A device the request can go to as one request: open, writable if needed, whole blocks. */
function isUsableDevice(
  device: unknown, op: 'read' | 'write', sector: number, count: number,
): device is BlockDevice {
  if (typeof device !== 'object' || device === null) return false;
  const candidate = device as BlockDevice;
  if (typeof candidate.submit !== 'function' || typeof candidate.limits !== 'object') return false;
  if (candidate.closed || (op === 'write' && candidate.readOnly)) return false;
  const { limits } = candidate;
  const blockSectors = limits.logicalBlockBytes / SECTOR_SIZE;
  if (blockSectors > 1 && (sector % blockSectors !== 0 || count % blockSectors !== 0)) return false;
  return count <= limits.maxSectorsPerRequest && limits.maxSegmentsPerRequest >= 1 &&
    Number.isSafeInteger((sector + count) * SECTOR_SIZE);
}

/**
 * The view a `kmem` or `vm` buffer contributes (the cursor would hand out exactly this view),
 * when the device takes it without a bounce copy; otherwise null.
 */
function fastSegment(mem: unknown, lengthBytes: number, device: BlockDevice): Uint8Array | null {
  if (!isPlainObject(mem)) return null;
  const { type, data, offset } = mem as Record<string, unknown>;
  if (!(data instanceof Uint8Array)) return null;
  let startBytes = 0;
  if (type === 'kmem') {
    if (offset !== undefined && !isIntegerIn(offset, 0, data.length)) return null;
    startBytes = (offset as number | undefined) ?? 0;
  } else if (type !== 'vm') {
    return null;
  }
  if (data.length - startBytes < lengthBytes) return null;
  const segment = startBytes === 0 && data.length === lengthBytes ? data :
    data.subarray(startBytes, startBytes + lengthBytes);
  const alignmentBytes = device.limits.memoryAlignmentBytes;
  if (alignmentBytes > 0 && (!isAlignedView(segment, alignmentBytes) ||
      lengthBytes % device.limits.logicalBlockBytes !== 0)) {
    return null;
  }
  return segment;
}
