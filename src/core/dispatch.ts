// Owns the region loop: it turns a validated plan into device requests. Every region starts
// from a fresh clone of the memory cursor, so all regions of a multi-region write carry the
// same bytes from the buffer's start. A region is cut into requests by its device's limits
// (sectors per request, at most BIO_MAX_VECS and the device's segments, whole logical blocks),
// each piece carrying the request's full flags and ioprio; memory that continues the previous
// segment extends it rather than opening a new one. Skipped regions (count 0 without
// preflush) produce nothing; a zero-count region with preflush produces exactly one pure flush;
// discard or write-zeroes on a device whose limit is 0 is reported as that region's failure.

import assert from '../assert.js';
import { BIO_MAX_VECS, SECTOR_SIZE } from '../constants.js';
import type { BlockDevice, DeviceRequest } from '../devices/block-device.js';
import { IoError, NotSupportedError } from '../errors.js';
import { createCursor, type MemoryCursor } from '../memory/cursor.js';
import { alignDown, bytesToSectorsExact } from '../units.js';
import type { DmIoPlan, DmIoRegion } from './request.js';

/** Where the region loop sends its output. */
export interface DispatchSink {
  /** Issue `request` to `device` on behalf of region `regionIndex`. */
  submit(regionIndex: number, device: BlockDevice, request: DeviceRequest): void;
  /** Region `regionIndex` failed without a request being issued. */
  fail(regionIndex: number, error: IoError): void;
}

/** Runs the region loop of `plan`, sending every device request to `sink`. */
export function dispatchRegions(plan: DmIoPlan, sink: DispatchSink): void {
  const start = plan.memory === null ? null : createCursor(plan.memory);
  for (let regionIndex = 0; regionIndex < plan.regions.length; regionIndex += 1) {
    const region = plan.regions[regionIndex];
    assert.ok(region !== undefined);
    if (region.count === 0 && !plan.flags.preflush) continue;
    if (region.count === 0) {
      sink.submit(regionIndex, region.device, flushRequest(plan, region));
    } else if (plan.op === 'discard' || plan.op === 'write-zeroes') {
      dispatchDataless(plan, regionIndex, region, sink);
    } else {
      assert.ok(start !== null, 'validated: data ops with sectors carry memory');
      dispatchData(plan, regionIndex, region, start.clone(), sink);
    }
  }
}

function flushRequest(plan: DmIoPlan, region: DmIoRegion): DeviceRequest {
  return {
    op: plan.op === 'read' ? 'read' : 'write', sector: region.sector, countSectors: 0,
    segments: [], flags: plan.flags, ioprio: plan.ioprio,
  };
}

/** Discard or write-zeroes: data-less requests of at most the device's special limit. */
function dispatchDataless(
  plan: DmIoPlan, regionIndex: number, region: DmIoRegion, sink: DispatchSink,
): void {
  const { device } = region;
  const limitSectors = plan.op === 'discard' ? device.limits.maxDiscardSectors :
    device.limits.maxWriteZeroesSectors;
  const blockSectors = device.limits.logicalBlockBytes / SECTOR_SIZE;
  const pieceSectorsMax = alignDown(limitSectors, blockSectors);
  if (pieceSectorsMax === 0) {
    sink.fail(regionIndex, new NotSupportedError({
      syscall: plan.op, device: device.name, sector: region.sector,
      countSectors: region.count, regionIndex,
    }));
    return;
  }
  for (let doneSectors = 0; doneSectors < region.count;) {
    const countSectors = Math.min(pieceSectorsMax, region.count - doneSectors);
    sink.submit(regionIndex, device, {
      op: plan.op, sector: region.sector + doneSectors, countSectors, segments: [],
      flags: plan.flags, ioprio: plan.ioprio,
    });
    doneSectors += countSectors;
  }
}

/** The byte and segment limits one read or write request to `device` may reach. */
function requestLimits(plan: DmIoPlan, device: BlockDevice): [number, number] {
  const { limits } = device;
  const bytesMax = Math.min(limits.maxSectorsPerRequest * SECTOR_SIZE,
    plan.client.bounceLimitBytes(device));
  const requestBytesMax = alignDown(bytesMax, Math.max(limits.logicalBlockBytes, SECTOR_SIZE));
  const segmentsMax = Math.min(BIO_MAX_VECS, limits.maxSegmentsPerRequest);
  if (requestBytesMax <= 0) assert.fail(`${device.name}: a request must hold a logical block`);
  if (segmentsMax <= 0) assert.fail(`${device.name}: a request must hold a segment`);
  return [requestBytesMax, segmentsMax];
}

/**
 * Read or write: walks the memory into requests. A view longer than the request still needs
 * is split and its tail kept for the next request; when the segment limit ends a request off
 * a logical-block boundary, the tail bytes are handed back the same way.
 */
function dispatchData(
  plan: DmIoPlan, regionIndex: number, region: DmIoRegion, cursor: MemoryCursor,
  sink: DispatchSink,
): void {
  const { device } = region;
  const [requestBytesMax, segmentsMax] = requestLimits(plan, device);
  const blockBytes = Math.max(device.limits.logicalBlockBytes, SECTOR_SIZE);
  const totalBytes = region.count * SECTOR_SIZE;
  const leftovers: Uint8Array[] = [];
  let doneBytes = 0;
  while (doneBytes < totalBytes) {
    const wantBytes = Math.min(requestBytesMax, totalBytes - doneBytes);
    const segments = gatherSegments(cursor, leftovers, wantBytes, segmentsMax);
    const requestBytes = trimToBlock(segments, leftovers, blockBytes);
    if (requestBytes === 0) {
      // A failed read leaves no stale bytes, even where nothing was sent to the device.
      if (plan.op === 'read') zeroUnread(cursor, leftovers, totalBytes - doneBytes);
      sink.fail(regionIndex, unsplittableError(device, region, regionIndex, doneBytes));
      return;
    }
    sink.submit(regionIndex, device, {
      op: plan.op, sector: region.sector + bytesToSectorsExact(doneBytes),
      countSectors: bytesToSectorsExact(requestBytes), segments, flags: plan.flags,
      ioprio: plan.ioprio,
    });
    doneBytes += requestBytes;
  }
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

/** Zero-fills the next `remainingBytes` of the walk: what was handed back, then the rest. */
function zeroUnread(cursor: MemoryCursor, leftovers: Uint8Array[], remainingBytes: number): void {
  for (let zeroedBytes = 0; zeroedBytes < remainingBytes;) {
    const wantBytes = remainingBytes - zeroedBytes;
    const view = leftovers.pop() ?? cursor.take(wantBytes);
    const piece = view.length > wantBytes ? view.subarray(0, wantBytes) : view;
    piece.fill(0);
    zeroedBytes += piece.length;
  }
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
