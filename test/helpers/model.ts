// A plain model of dm-io over fault-injecting RAM devices, for the property tests. Devices are
// byte arrays; faults follow the fault device's documented rules (down, then the first matching
// range; a request overlapping the range fails whole); the wrapped RAM device fails requests
// crossing its end. The model predicts, per region, the requests dm-io must issue (greedy
// filling within the device's sector, segment, block and bounce limits, as the kernel's
// do_region fills bios), which of them fail and with what, every byte each device holds after
// the request, every byte a read leaves in caller memory, and the error bitset.

import {
  BIO_MAX_VECS, IOPRIO_DEFAULT, PAGE_SIZE, SECTOR_SIZE, type DeviceOp, type RequestFlags,
} from '../../src/index.js';
import { type FaultOp, type FaultRange, type TraceEntry } from '../../src/testing.js';

/** What the model knows about one device. */
export interface ModelDevice {
  /** Name of the fault device (errors it injects carry this name). */
  readonly name: string;
  /** Name of the RAM device inside (past-end errors carry this name). */
  readonly innerName: string;
  readonly sizeSectors: number;
  readonly logicalBlockBytes: number;
  readonly maxSectorsPerRequest: number;
  readonly maxSegmentsPerRequest: number;
  readonly maxDiscardSectors: number;
  readonly maxWriteZeroesSectors: number;
  /** The device needs aligned memory: caller memory is bounced through pool pages. */
  readonly direct: boolean;
  /** The device's bytes. */
  readonly bytes: Uint8Array;
  ranges: FaultRange[];
  down: boolean;
}

/** A request the model expects on a device's trace. */
export interface ModelRequest extends TraceEntry {
  /** Errno the request completes with (injected, or EIO past the end), or null. */
  readonly errno: string | null;
  /** The device name the error carries. */
  readonly errorDevice: string;
  /** Byte offset of this request's data inside the transfer (read/write). */
  readonly transferOffsetBytes: number;
}

/** An error the model allows for a region. */
export interface ModelError {
  readonly code: 'DMIO_ERR_IO' | 'DMIO_ERR_NOT_SUPPORTED';
  readonly errno: string;
  readonly device: string;
  readonly sector: number;
  readonly countSectors: number;
}

/** A region as the model sees it. */
export interface ModelRegion {
  readonly device: number;
  readonly sector: number;
  readonly count: number;
}

/** What the model predicts for one dm-io request. */
export interface ModelOutcome {
  /** Requests per device, in submission order. */
  readonly requests: Map<number, ModelRequest[]>;
  readonly errorBits: bigint;
  /** Errors allowed per region (any one of them may be reported as errors[i]). */
  readonly errors: ReadonlyArray<readonly ModelError[]>;
  /** For a read: the transfer's bytes as they must end up in caller memory. */
  readonly readBytes: Uint8Array | null;
}

/** A piece of memory: its length, and whether it continues the previous piece in memory. */
export interface ModelChunk {
  readonly bytes: number;
  /** The chunk starts where the previous one ends, in the same buffer (dm-io merges them). */
  readonly joinsPrevious: boolean;
}

/** A dm-io request as the model sees it. */
export interface ModelRequestSpec {
  readonly op: DeviceOp;
  readonly regions: readonly ModelRegion[];
  readonly flags: RequestFlags;
  readonly ioprio?: number;
  /** The memory's chunks in transfer order (enough for the longest region). */
  readonly chunks: readonly ModelChunk[];
  /** The bytes a write carries, in transfer order. */
  readonly data: Uint8Array | null;
  /** The client's reserved pages (the bounce limit of direct devices). */
  readonly reservedPages: number;
}

/** Predicts the outcome of `spec` and applies it to `devices`. */
export function runModel(devices: readonly ModelDevice[], spec: ModelRequestSpec): ModelOutcome {
  const requests = new Map<number, ModelRequest[]>();
  const errors: ModelError[][] = spec.regions.map(() => []);
  let errorBits = 0n;
  const maxCount = Math.max(0, ...spec.regions.map((region) => region.count));
  const readBytes = spec.op === 'read' ? new Uint8Array(maxCount * SECTOR_SIZE) : null;
  for (const [index, region] of spec.regions.entries()) {
    const device = devices[region.device];
    if (device === undefined) throw new Error('model: no such device');
    if (region.count === 0 && !spec.flags.preflush) continue;
    const planned = planRegion(device, region, spec);
    if ('unsupported' in planned) {
      errorBits |= 1n << BigInt(index);
      (errors[index] as ModelError[]).push({ code: 'DMIO_ERR_NOT_SUPPORTED', errno: 'EOPNOTSUPP',
        device: device.name, sector: region.sector, countSectors: region.count });
      continue;
    }
    const list = requests.get(region.device) ?? [];
    requests.set(region.device, list);
    for (const request of planned.requests) {
      list.push(request);
      applyRequest(device, request, spec.data, readBytes);
      if (request.errno === null) continue;
      errorBits |= 1n << BigInt(index);
      (errors[index] as ModelError[]).push({ code: 'DMIO_ERR_IO', errno: request.errno,
        device: request.errorDevice, sector: request.sector,
        countSectors: request.countSectors });
    }
  }
  return { requests, errorBits, errors, readBytes };
}

function planRegion(
  device: ModelDevice, region: ModelRegion, spec: ModelRequestSpec,
): { requests: ModelRequest[] } | { unsupported: true } {
  const ioprio = spec.ioprio ?? IOPRIO_DEFAULT;
  const make = (op: DeviceOp, sector: number, countSectors: number, segmentCount: number,
    transferOffsetBytes: number): ModelRequest => {
    const base = { op, sector, countSectors, segmentCount, flags: spec.flags, ioprio,
      transferOffsetBytes };
    return { ...base, ...decideFault(device, base) };
  };
  if (region.count === 0) {
    const op = spec.op === 'read' ? 'read' : 'write';
    return { requests: [make(op, region.sector, 0, 0, 0)] };
  }
  const blockSectors = device.logicalBlockBytes / SECTOR_SIZE;
  if (spec.op === 'discard' || spec.op === 'write-zeroes') {
    const limit = spec.op === 'discard' ? device.maxDiscardSectors : device.maxWriteZeroesSectors;
    const pieceMax = limit - (limit % blockSectors);
    if (pieceMax === 0) return { unsupported: true };
    const requests: ModelRequest[] = [];
    for (let done = 0; done < region.count; done += pieceMax) {
      requests.push(make(spec.op, region.sector + done, Math.min(pieceMax, region.count - done),
        0, 0));
    }
    return { requests };
  }
  return { requests: splitData(device, region, spec).map(([offset, bytes, segments]) =>
    make(spec.op, region.sector + offset / SECTOR_SIZE, bytes / SECTOR_SIZE, segments, offset)) };
}

/**
 * Greedy filling: each request takes pieces of memory (chunk remainders) until it holds the
 * most bytes it may or the most segments it may, then gives back whatever does not end on a
 * logical block. Returns [transfer offset, bytes, segment count seen by the device].
 */
function splitData(
  device: ModelDevice, region: ModelRegion, spec: ModelRequestSpec,
): Array<[number, number, number]> {
  const blockBytes = device.logicalBlockBytes;
  const totalBytes = region.count * SECTOR_SIZE;
  let bytesMax = device.maxSectorsPerRequest * SECTOR_SIZE;
  if (device.direct) bytesMax = Math.min(bytesMax, spec.reservedPages * PAGE_SIZE);
  bytesMax -= bytesMax % blockBytes;
  const segmentsMax = Math.min(BIO_MAX_VECS, device.maxSegmentsPerRequest);
  const pieces = [...spec.chunks];
  const out: Array<[number, number, number]> = [];
  for (let done = 0; done < totalBytes;) {
    const want = Math.min(bytesMax, totalBytes - done);
    const segments: number[] = [];
    let bytes = 0;
    while (bytes < want) {
      const piece = pieces.shift();
      if (piece === undefined) throw new Error('model: memory too short');
      // A piece that continues the previous segment in memory extends it, even when the
      // request already has its most segments; any other piece needs a free segment.
      const joins = segments.length > 0 && piece.joinsPrevious;
      if (!joins && segments.length >= segmentsMax) {
        pieces.unshift(piece);
        break;
      }
      const take = Math.min(piece.bytes, want - bytes);
      if (piece.bytes > take) pieces.unshift({ bytes: piece.bytes - take, joinsPrevious: true });
      if (joins) {
        segments[segments.length - 1] = (segments[segments.length - 1] as number) + take;
      } else {
        segments.push(take);
      }
      bytes += take;
    }
    for (let excess = bytes % blockBytes; excess > 0;) {
      const last = segments.pop() as number;
      const giveBack = Math.min(last, excess);
      if (last > giveBack) segments.push(last - giveBack);
      pieces.unshift({ bytes: giveBack, joinsPrevious: last > giveBack });
      bytes -= giveBack;
      excess -= giveBack;
    }
    if (bytes === 0) throw new Error('model: unsplittable (the generator must avoid it)');
    out.push([done, bytes, device.direct ? Math.ceil(bytes / PAGE_SIZE) : segments.length]);
    done += bytes;
  }
  return out;
}

/** The fault device's decision, then the RAM device's past-end check. */
function decideFault(
  device: ModelDevice,
  request: { op: DeviceOp; sector: number; countSectors: number; flags: RequestFlags },
): { injected: string | null; errno: string | null; errorDevice: string } {
  let injected: string | null = null;
  if (device.down) {
    injected = 'EIO';
  } else {
    for (const range of device.ranges) {
      if (matchesOps(request, range.ops) && overlaps(request, range)) {
        injected = range.errno ?? 'EIO';
        break;
      }
    }
  }
  if (injected !== null) return { injected, errno: injected, errorDevice: device.name };
  const pastEnd = request.sector + request.countSectors > device.sizeSectors;
  return { injected: null, errno: pastEnd ? 'EIO' : null, errorDevice: device.innerName };
}

function matchesOps(
  request: { op: DeviceOp; countSectors: number; flags: RequestFlags },
  ops: readonly FaultOp[] | undefined,
): boolean {
  if (ops === undefined) return true;
  if (request.flags.preflush && ops.includes('flush')) return true;
  if (request.countSectors === 0) return ops.includes('flush');
  return ops.includes(request.op);
}

function overlaps(request: { sector: number; countSectors: number }, range: FaultRange): boolean {
  const end = request.sector + Math.max(request.countSectors, 1);
  return request.sector < range.sector + range.countSectors && range.sector < end;
}

function applyRequest(
  device: ModelDevice, request: ModelRequest, data: Uint8Array | null,
  readBytes: Uint8Array | null,
): void {
  const at = request.sector * SECTOR_SIZE;
  const lengthBytes = request.countSectors * SECTOR_SIZE;
  const from = request.transferOffsetBytes;
  if (request.op === 'read') {
    if (readBytes === null) throw new Error('model: read without a buffer');
    if (request.errno === null) readBytes.set(device.bytes.subarray(at, at + lengthBytes), from);
    else readBytes.fill(0, from, from + lengthBytes);
    return;
  }
  if (request.errno !== null || lengthBytes === 0) return;
  if (request.op === 'write') {
    if (data === null) throw new Error('model: write without data');
    device.bytes.set(data.subarray(from, from + lengthBytes), at);
  } else {
    device.bytes.fill(0, at, at + lengthBytes);
  }
}
