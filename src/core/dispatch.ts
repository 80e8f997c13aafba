// Owns the region loop: it turns a validated plan into the device requests the client runs.
// Every region starts from a fresh clone of the memory cursor, so all regions of a multi-region
// write carry the same bytes from the buffer's start. A region is cut into requests by its
// device's limits (sectors per request, at most BIO_MAX_VECS and the device's segments, whole
// logical blocks), each piece carrying the request's full flags and ioprio and its bounce need
// (pool pages, decided here once); memory that continues the previous segment extends it
// rather than opening a new one. The common case, one contiguous buffer and a region that
// fits one request, is one branch (`dispatchOneView`): one request, one segment, no cursor.
// Skipped regions (count 0 without preflush) produce nothing; a zero-count region with preflush
// produces exactly one pure flush; discard or write-zeroes on a device whose limit is 0, or a
// region that cannot be cut into whole blocks, is a failure of that region with no request.
//
// The loop only plans: it returns the whole list before anything is submitted, so the client
// can refuse a request whole (its queue bound) and kcopyd's chunks can go through it too.

import assert from '../assert.js';
import { BIO_MAX_VECS, SECTOR_SIZE } from '../constants.js';
import type { BlockDevice, DeviceRequest } from '../devices/block-device.js';
import { IoError, NotSupportedError } from '../errors.js';
import { createCursor, linearView, type MemoryCursor } from '../memory/cursor.js';
import type { DmIoMemory } from '../memory/types.js';
import { alignDown, bytesToSectorsExact } from '../units.js';
import { bouncePagesFor, type ClientRequest } from './client.js';
import type { DmIoPlan, DmIoRegion } from './request.js';

/** One device request of a plan, on behalf of region `regionIndex`. */
export interface PlannedRequest extends ClientRequest {
  readonly regionIndex: number;
}

/** A region that failed without a device request being issued. */
export interface RegionFailure {
  readonly regionIndex: number;
  readonly error: IoError;
  /** Caller memory of a read that no request will fill: zeroed when the failure is reported. */
  readonly unread?: readonly Uint8Array[];
}

/** What the region loop makes of a plan, in region order. */
export interface Dispatched {
  readonly requests: PlannedRequest[];
  /** Shared and empty until a region fails (most requests have no failure to record). */
  failures: readonly RegionFailure[];
}

const NO_FAILURES: readonly RegionFailure[] = Object.freeze([]);

function recordFailure(out: Dispatched, failure: RegionFailure): void {
  out.failures = [...out.failures, failure];
}

/** Runs the region loop of `plan`: every device request and every failed region, in order. */
export function dispatchRegions(plan: DmIoPlan): Dispatched {
  const out: Dispatched = { requests: [], failures: NO_FAILURES };
  // Made on the first region that needs a walk; every region walks a clone from the start.
  let start: MemoryCursor | null = null;
  const lastIndex = plan.regions.length - 1;
  for (let regionIndex = 0; regionIndex <= lastIndex; regionIndex += 1) {
    const region = plan.regions[regionIndex];
    assert.ok(region !== undefined);
    if (region.count === 0 && !plan.flags.preflush) continue;
    if (region.count === 0) {
      out.requests.push(planned(regionIndex, region.device, flushRequest(plan, region), 0));
    } else if (plan.op === 'discard' || plan.op === 'write-zeroes') {
      dispatchDataless(plan, regionIndex, region, out);
    } else {
      assert.ok(plan.memory !== null, 'validated: data ops with sectors carry memory');
      if (dispatchOneView(plan, plan.memory, regionIndex, region, out)) continue;
      start ??= createCursor(plan.memory);
      // The last region may walk the original cursor: nothing rewinds to it afterwards.
      dispatchData(plan, regionIndex, region, regionIndex === lastIndex ? start : start.clone(),
        out);
    }
  }
  return out;
}

function planned(
  regionIndex: number, device: BlockDevice, request: DeviceRequest, bouncePages: number,
): PlannedRequest {
  return { regionIndex, device, request, bouncePages };
}

function flushRequest(plan: DmIoPlan, region: DmIoRegion): DeviceRequest {
  return {
    op: plan.op === 'read' ? 'read' : 'write', sector: region.sector, countSectors: 0,
    segments: [], flags: plan.flags, ioprio: plan.ioprio,
  };
}

/** Discard or write-zeroes: data-less requests of at most the device's special limit. */
function dispatchDataless(
  plan: DmIoPlan, regionIndex: number, region: DmIoRegion, out: Dispatched,
): void {
  const { device } = region;
  const limitSectors = plan.op === 'discard' ? device.limits.maxDiscardSectors :
    device.limits.maxWriteZeroesSectors;
  const blockSectors = device.limits.logicalBlockBytes / SECTOR_SIZE;
  const pieceSectorsMax = alignDown(limitSectors, blockSectors);
  if (pieceSectorsMax === 0) {
    recordFailure(out, { regionIndex, error: new NotSupportedError({
      syscall: plan.op, device: device.name, sector: region.sector,
      countSectors: region.count, regionIndex,
    }) });
    return;
  }
  for (let doneSectors = 0; doneSectors < region.count;) {
    const countSectors = Math.min(pieceSectorsMax, region.count - doneSectors);
    out.requests.push(planned(regionIndex, device, {
      op: plan.op, sector: region.sector + doneSectors, countSectors, segments: [],
      flags: plan.flags, ioprio: plan.ioprio,
    }, 0));
    doneSectors += countSectors;
  }
}

/** The most bytes one read or write request to `device` may carry (whole logical blocks). */
function requestBytesMaxOf(plan: DmIoPlan, device: BlockDevice): number {
  const { limits } = device;
  const bytesMax = Math.min(limits.maxSectorsPerRequest * SECTOR_SIZE,
    plan.client.bounceLimitBytes(device));
  const requestBytesMax = alignDown(bytesMax, Math.max(limits.logicalBlockBytes, SECTOR_SIZE));
  if (requestBytesMax <= 0) assert.fail(`${device.name}: a request must hold a logical block`);
  if (limits.maxSegmentsPerRequest <= 0) {
    assert.fail(`${device.name}: a request must hold a segment`);
  }
  return requestBytesMax;
}

/**
 * The cheap case of a read or write: contiguous memory (`vm`, `kmem`) and a region that fits
 * one request are one request whose one segment is the region's view of the buffer, exactly
 * what the walk below would build, without a cursor. False, having planned nothing, otherwise.
 */
function dispatchOneView(
  plan: DmIoPlan, memory: DmIoMemory, regionIndex: number, region: DmIoRegion, out: Dispatched,
): boolean {
  const totalBytes = region.count * SECTOR_SIZE;
  if (totalBytes > requestBytesMaxOf(plan, region.device)) return false;
  const view = linearView(memory, totalBytes);
  if (view === null) return false;
  out.requests.push(dataRequest(plan, regionIndex, region, 0, [view], totalBytes));
  return true;
}

/**
 * Read or write: walks the memory into requests. A view longer than the request still needs
 * is split and its tail kept for the next request; when the segment limit ends a request off
 * a logical-block boundary, the tail bytes are handed back the same way.
 */
function dispatchData(
  plan: DmIoPlan, regionIndex: number, region: DmIoRegion, cursor: MemoryCursor,
  out: Dispatched,
): void {
  const { device } = region;
  const requestBytesMax = requestBytesMaxOf(plan, device);
  const totalBytes = region.count * SECTOR_SIZE;
  const leftovers: Uint8Array[] = [];
  const segmentsMax = Math.min(BIO_MAX_VECS, device.limits.maxSegmentsPerRequest);
  const blockBytes = Math.max(device.limits.logicalBlockBytes, SECTOR_SIZE);
  let doneBytes = 0;
  while (doneBytes < totalBytes) {
    const wantBytes = Math.min(requestBytesMax, totalBytes - doneBytes);
    const segments = gatherSegments(cursor, leftovers, wantBytes, segmentsMax);
    const requestBytes = trimToBlock(segments, leftovers, blockBytes);
    if (requestBytes === 0) {
      recordFailure(out, {
        regionIndex, error: unsplittableError(device, region, regionIndex, doneBytes),
        // A failed read leaves no stale bytes, even where nothing was sent to the device.
        unread: plan.op === 'read' ? unreadViews(cursor, leftovers, totalBytes - doneBytes) : [],
      });
      return;
    }
    out.requests.push(dataRequest(plan, regionIndex, region, doneBytes, segments, requestBytes));
    doneBytes += requestBytes;
  }
}

/** The read or write request of `requestBytes` over `segments`, `doneBytes` into `region`. */
function dataRequest(
  plan: DmIoPlan, regionIndex: number, region: DmIoRegion, doneBytes: number,
  segments: Uint8Array[], requestBytes: number,
): PlannedRequest {
  const request: DeviceRequest = {
    op: plan.op, sector: region.sector + bytesToSectorsExact(doneBytes),
    countSectors: bytesToSectorsExact(requestBytes), segments, flags: plan.flags,
    ioprio: plan.ioprio,
  };
  return planned(regionIndex, region.device, request,
    bouncePagesFor(region.device, segments, requestBytes));
}

/**
 * Collects views totalling at most `wantBytes` in at most `segmentsMax` segments. A view that
 * continues the last segment in memory extends it, so it fits even when the segments are full.
 */
function gatherSegments(
  cursor: MemoryCursor, leftovers: Uint8Array[], wantBytes: number, segmentsMax: number,
): Uint8Array[] {
  const segments: Uint8Array[] = [];
  let bytes = 0;
  while (bytes < wantBytes) {
    const needBytes = wantBytes - bytes;
    let view = leftovers.pop() ?? cursor.take(needBytes);
    if (view.length > needBytes) {
      leftovers.push(view.subarray(needBytes));
      view = view.subarray(0, needBytes);
    }
    if (!appendSegment(segments, view, segmentsMax)) {
      leftovers.push(view);
      break;
    }
    bytes += view.length;
  }
  return segments;
}

/**
 * Extends the last segment with `view` when `view` continues it in the same memory, as the
 * kernel merges physically contiguous pages into one bio vector (pages of one slab, such as a
 * pool's, and contiguous buffers become one segment); else adds `view` as a new segment while
 * fewer than `segmentsMax` exist. Returns false, changing nothing, when neither is possible.
 */
function appendSegment(segments: Uint8Array[], view: Uint8Array, segmentsMax: number): boolean {
  const last = segments[segments.length - 1];
  if (last !== undefined && last.buffer === view.buffer &&
      last.byteOffset + last.length === view.byteOffset) {
    segments[segments.length - 1] = new Uint8Array(last.buffer, last.byteOffset,
      last.length + view.length);
    return true;
  }
  if (segments.length >= segmentsMax) return false;
  segments.push(view);
  return true;
}

/**
 * Shortens `segments` to whole logical blocks, pushing the cut bytes onto `leftovers` (a
 * stack: the earliest cut bytes end on top). Returns the bytes kept.
 * Example: 4096-byte blocks, segments of 3584 + 1024 bytes: 512 bytes are cut from the
 * second segment, which keeps 512; the request carries 4096 bytes.
 */
function trimToBlock(segments: Uint8Array[], leftovers: Uint8Array[], blockBytes: number): number {
  let bytes = 0;
  for (const segment of segments) bytes += segment.length;
  let excessBytes = bytes % blockBytes;
  while (excessBytes > 0) {
    const last = segments.pop();
    assert.ok(last !== undefined);
    if (last.length <= excessBytes) {
      leftovers.push(last);
      excessBytes -= last.length;
      bytes -= last.length;
    } else {
      const keepBytes = last.length - excessBytes;
      leftovers.push(last.subarray(keepBytes));
      segments.push(last.subarray(0, keepBytes));
      bytes -= excessBytes;
      excessBytes = 0;
    }
  }
  return bytes;
}

/** The next `remainingBytes` of the walk, as views: what was handed back, then the rest. */
function unreadViews(
  cursor: MemoryCursor, leftovers: Uint8Array[], remainingBytes: number,
): Uint8Array[] {
  const views: Uint8Array[] = [];
  for (let takenBytes = 0; takenBytes < remainingBytes;) {
    const wantBytes = remainingBytes - takenBytes;
    const view = leftovers.pop() ?? cursor.take(wantBytes);
    const piece = view.length > wantBytes ? view.subarray(0, wantBytes) : view;
    views.push(piece);
    takenBytes += piece.length;
  }
  return views;
}

function unsplittableError(
  device: BlockDevice, region: DmIoRegion, regionIndex: number, doneBytes: number,
): IoError {
  const doneSectors = bytesToSectorsExact(doneBytes);
  return new IoError({
    errno: 'EINVAL', syscall: 'dm-io split', device: device.name,
    sector: region.sector + doneSectors, countSectors: region.count - doneSectors, regionIndex,
  });
}
