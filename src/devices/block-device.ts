// Owns the contract between dm-io and a device backend (the "block layer"): the request a
// backend receives, the limits it declares, and the rules it must keep. Every backend (file,
// block device, RAM, NBD, fault injector) implements `BlockDevice`; dm-io never looks past it.
//
// Rules every backend keeps:
// - `submit` never calls `done` synchronously; completion comes after `submit` has returned
//   (from a microtask at the earliest, such as the io_uring path's wait for completions).
// - A request that crosses or lies beyond `sizeSectors` fails whole with errno EIO: it is never
//   truncated. Requests wholly inside the device are unaffected by it.
// - `segments` are used only for read and write; their lengths add up to `countSectors * 512`.
//   Discard and write-zeroes carry no segments.
// - `flags.preflush` makes the device flush its volatile cache before the request; with
//   `countSectors === 0` the request is a pure flush. `flags.fua` makes a write durable before
//   `done` is called. A device without a volatile cache treats both as satisfied.
// - A failed read may leave its segments in any state; dm-io zero-fills them.
// - Limits may shrink while the device is open (a refused discard sets maxDiscardSectors to
//   0); dm-io reads `device.limits` for each region rather than caching them.

import type { IoError } from '../errors.js';

/** What a device request does. */
export type DeviceOp = 'read' | 'write' | 'discard' | 'write-zeroes';

/** Flags carried unchanged on every piece of a region, as the kernel's `bi_opf` bits. */
export interface RequestFlags {
  /** The request came from a synchronous caller (`REQ_SYNC`); a scheduling hint only. */
  readonly sync: boolean;
  /** Flush the device's volatile cache before this request (`REQ_PREFLUSH`). */
  readonly preflush: boolean;
  /** Make this write durable before completing it (`REQ_FUA`). */
  readonly fua: boolean;
}

/** One request to one device: the userspace counterpart of a bio. */
export interface DeviceRequest {
  /** The operation. */
  readonly op: DeviceOp;
  /** First sector (512-byte units). */
  readonly sector: number;
  /** Sectors covered; 0 only for a pure flush (`flags.preflush`). */
  readonly countSectors: number;
  /** Memory for read and write, in order; empty for discard and write-zeroes. */
  readonly segments: readonly Uint8Array[];
  /** Flags, repeated on every piece of a region. */
  readonly flags: RequestFlags;
  /** Linux I/O priority value (class << 13 | level), stamped on every piece. */
  readonly ioprio: number;
}

/** Completion of one device request: `null` on success. */
export type DeviceDone = (error: IoError | null) => void;

/** What a device can take in one request. Sector values are in 512-byte units. */
export interface DeviceLimits {
  /** Smallest unit the device addresses; requests are multiples of it (512 or 4096). */
  readonly logicalBlockBytes: number;
  /** The device's physical block: the unit it writes without read-modify-write. */
  readonly physicalBlockBytes: number;
  /** Most sectors one read or write request may carry. */
  readonly maxSectorsPerRequest: number;
  /** Most segments one read or write request may carry. */
  readonly maxSegmentsPerRequest: number;
  /** Most sectors one discard may carry; 0 means the device cannot discard. */
  readonly maxDiscardSectors: number;
  /** Most sectors one write-zeroes may carry; 0 means the device cannot write zeroes. */
  readonly maxWriteZeroesSectors: number;
  /**
   * Alignment, in bytes, that segment memory must have (O_DIRECT); 0 means any memory works.
   * dm-io bounces unaligned caller memory through its client's aligned pool pages.
   */
  readonly memoryAlignmentBytes: number;
  /** The device has a volatile cache that `preflush` flushes. */
  readonly flush: boolean;
  /** The device honours `fua` natively or by flushing after the write. */
  readonly fua: boolean;
}

/** Kinds of backend, for display and for code that must know (the CLI's `info`). */
export type DeviceKind =
  'file' | 'block' | 'ram' | 'zero' | 'null' | 'random' | 'nbd' | 'fault' | 'table' | 'stream';

/**
 * One run of sectors and what the backend knows of it, with the meaning of NBD's
 * `base:allocation` flags. `hole` and `zero` both false: data (what a device without
 * `extents` reports for everything).
 */
export interface DeviceExtent {
  /** First sector. */
  readonly sector: number;
  /** Sectors in the run; at least 1. */
  readonly countSectors: number;
  /** Unallocated (a file's hole, an NBD `HOLE`): leaving it unwritten keeps it so. */
  readonly hole: boolean;
  /** Reads as zeros (a hole of a file, an NBD `ZERO`, RAM never written). */
  readonly zero: boolean;
}

/** Completion of `BlockDevice.extents`: the error, or the extents (empty only on error). */
export type ExtentsDone = (error: IoError | null, extents: readonly DeviceExtent[]) => void;

/** What `BlockDevice.extentsSync` returns: the error, or the extents (empty only on error). */
export interface ExtentsAnswer {
  /** Why the query failed (EBADF once closed, an `lseek` error); null when it answered. */
  readonly error: IoError | null;
  /** The extents, under the contract of `BlockDevice.extents`; empty when `error` is set. */
  readonly extents: readonly DeviceExtent[];
}

/** The most extents one `extents` answer holds; a caller asks again from where they end. */
export const EXTENTS_PER_QUERY_MAX = 1024;

/** A device dm-io can address. */
export interface BlockDevice {
  /** A name for messages and errors: a path, a spec such as `mem:64M`, or an NBD URI. */
  readonly name: string;
  /** What backs the device. */
  readonly kind: DeviceKind;
  /** The device's size in 512-byte sectors. */
  readonly sizeSectors: number;
  /**
   * The device's true size in bytes, where a backend knows one that is not `sizeSectors * 512`:
   * a regular file, block device or NBD export ending in a partial block, whose tail no request
   * can address. Absent means exactly `sizeSectors * 512`.
   */
  readonly sizeBytes?: number;
  /** Writes, discards and write-zeroes are refused before anything is submitted. */
  readonly readOnly: boolean;
  /** What one request may carry. */
  readonly limits: DeviceLimits;
  /** True after `close()` began; dm-io refuses requests to a closed device. */
  readonly closed: boolean;
  /** True when `submitSync` exists: the device can complete a request without awaiting. */
  readonly canBlock: boolean;
  /** Starts one request; `done` is called exactly once, never synchronously. */
  submit(request: DeviceRequest, done: DeviceDone): void;
  /** Runs one request to completion on the calling thread; present only when `canBlock`. */
  submitSync?(request: DeviceRequest): IoError | null;
  /**
   * Copy offload: copies `countSectors` sectors from `source` at `sourceSector` to this device
   * at `sector` without the data passing through the caller's memory. Answers false, having
   * started nothing, when this pair of devices cannot (the caller then reads and writes);
   * otherwise `done` is called exactly once, never synchronously. Both ranges lie inside their
   * devices. Optional: devices without it are always copied through memory.
   */
  copyFrom?(
    source: BlockDevice, sourceSector: number, sector: number, countSectors: number,
    done: DeviceDone,
  ): boolean;
  /**
   * Optional: how `[sector, sector + countSectors)` is allocated (both ends inside the device,
   * `countSectors` at least 1). `done` is called exactly once, never synchronously, with
   * extents in order and contiguous, the first starting at `sector`, together covering at
   * least its first sector and at most the range, at most EXTENTS_PER_QUERY_MAX of them: a
   * bounded answer, never a list of the whole device. A device without it is all data.
   */
  extents?(sector: number, countSectors: number, done: ExtentsDone): void;
  /**
   * Optional, present only where `canBlock` (and `extents`) are: the answer `extents` would
   * give for the same range, under the same contract, computed on the calling thread with
   * blocking calls (a file's `lseek` waits for its filesystem) and returned rather than
   * called back. For threads that may block, such as an NBD connection thread; the event
   * loop uses `extents`.
   */
  extentsSync?(sector: number, countSectors: number): ExtentsAnswer;
  /** Releases the device. Idempotent; waits for requests in flight. */
  close(): Promise<void>;
}

/** The byte length of a request's segments. */
export function segmentsBytes(segments: readonly Uint8Array[]): number {
  let totalBytes = 0;
  for (const segment of segments) totalBytes += segment.length;
  return totalBytes;
}

/** True when a request crosses or lies beyond the device's end (it must then fail whole). */
export function requestPastEnd(device: BlockDevice, request: DeviceRequest): boolean {
  return request.sector + request.countSectors > device.sizeSectors;
}
