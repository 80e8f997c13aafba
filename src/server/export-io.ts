// Owns what each NBD command does to an export's device through dm-io, written once as an
// I/O program (io-program.ts) that both server drivers run: byte ranges become dm-io regions of
// whole logical blocks. The server is a dm-io consumer like a kernel target; it never calls
// the device directly. Partial blocks (from clients that asked for no block sizes) are
// read-modify-written under the export's range lock. Each program returns `null` on success or
// the failure to send; a device error never throws out of it. `flushDevice` runs the flush on
// the event loop for the server's own close.
//
// Zeroing: native write-zeroes when the device has it (FAST_ZERO may use only that, and gets
// ENOTSUP at once otherwise), else writes of a shared zero buffer. NO_HOLE takes native
// write-zeroes only where they never deallocate (see `ServedExport.zeroesNatively`).
// Trimming is advisory: only whole blocks are discarded, and a device that cannot discard
// (or refuses) makes TRIM a successful no-op.

import type { DmIoClient } from '../core/client.js';
import type { DmIoOp } from '../core/request.js';
import { allocAligned } from '../memory/aligned.js';
import { NBD_ENOTSUP } from '../nbd/protocol.js';
import type { NbdFailure } from './errno-map.js';
import { runIoProgram, yieldIo, yieldLock, type IoProgram } from './io-program.js';
import { SERVER_ZERO_CHUNK_BYTES } from './limits.js';
import type { ServedExport } from './nbd-export.js';

/** Zeroes shared by every fallback zero write; never written to. */
const ZERO_CHUNK = new Uint8Array(SERVER_ZERO_CHUNK_BYTES);

/** Flags of a WRITE_ZEROES. */
export interface ZeroFlags {
  readonly fua: boolean;
  readonly noHole: boolean;
  readonly fastZero: boolean;
}

/** Memory for `lengthBytes` of I/O to the export's device (aligned when the device needs it). */
export function allocIoBuffer(served: ServedExport, lengthBytes: number): Uint8Array {
  if (lengthBytes === 0) return new Uint8Array(0);
  return served.device.limits.memoryAlignmentBytes > 0 ?
    allocAligned(lengthBytes) : Buffer.allocUnsafe(lengthBytes);
}

/** Reads `[offsetBytes, +target.length)` into `target`. */
export function* readProgram(
  served: ServedExport, offsetBytes: number, target: Uint8Array,
): IoProgram<NbdFailure | null> {
  if (target.length === 0) return null;
  const span = alignedSpan(served, offsetBytes, target.length);
  if (span.startBytes === offsetBytes && span.endBytes === offsetBytes + target.length) {
    return yield* blocksIo('read', offsetBytes, target.length, target, false);
  }
  const bounce = allocIoBuffer(served, span.endBytes - span.startBytes);
  const failure = yield* blocksIo('read', span.startBytes, bounce.length, bounce, false);
  if (failure !== null) return failure;
  const from = offsetBytes - span.startBytes;
  target.set(bounce.subarray(from, from + target.length));
  return null;
}

/** Writes `data` at `offsetBytes`; with `fua`, durably before it returns. */
export function* writeProgram(
  served: ServedExport, offsetBytes: number, data: Uint8Array, fua: boolean,
): IoProgram<NbdFailure | null> {
  if (data.length === 0) return fua ? yield* flushProgram() : null;
  const endBytes = offsetBytes + data.length;
  const span = alignedSpan(served, offsetBytes, data.length);
  if (span.startBytes === offsetBytes && span.endBytes === endBytes) {
    const release = yield* yieldLock(offsetBytes, endBytes, false);
    try {
      return yield* blocksIo('write', offsetBytes, data.length, data, fua);
    } finally {
      release();
    }
  }
  const release = yield* yieldLock(span.startBytes, span.endBytes, true);
  try {
    return yield* mergeAndWrite(served, span, offsetBytes, data, fua);
  } finally {
    release();
  }
}

/** Makes every write that completed before it durable. */
export function* flushProgram(): IoProgram<NbdFailure | null> {
  return yield* yieldIo({
    kind: 'io', op: 'write', offsetBytes: 0, lengthBytes: 0, preflush: true,
  });
}

/** Discards the whole blocks of a range; never fails because the device cannot discard. */
export function* trimProgram(
  served: ServedExport, offsetBytes: number, lengthBytes: number, fua: boolean,
): IoProgram<NbdFailure | null> {
  const inner = innerSpan(served, offsetBytes, lengthBytes);
  if (inner.endBytes > inner.startBytes && served.device.limits.maxDiscardSectors > 0) {
    const release = yield* yieldLock(inner.startBytes, inner.endBytes, false);
    let failure: NbdFailure | null;
    try {
      failure = yield* blocksIo('discard', inner.startBytes, inner.endBytes - inner.startBytes,
        undefined, false);
    } finally {
      release();
    }
    // A device that turned out unable to discard leaves the data in place: still a valid TRIM.
    if (failure !== null && failure.notSupported !== true) return failure;
  }
  return fua ? yield* flushProgram() : null;
}

/** Makes a range read back as zeros, honouring NO_HOLE, FAST_ZERO and FUA. */
export function* zeroProgram(
  served: ServedExport, offsetBytes: number, lengthBytes: number, flags: ZeroFlags,
): IoProgram<NbdFailure | null> {
  const native = served.zeroesNatively(flags.noHole);
  if (flags.fastZero && !served.zeroesFast(flags.noHole)) {
    return { errorNumber: NBD_ENOTSUP, message: 'zeroing this range would not be fast' };
  }
  const inner = innerSpan(served, offsetBytes, lengthBytes);
  const endBytes = offsetBytes + lengthBytes;
  // Partial blocks at either edge: written as zeros through read-modify-write.
  const edges: Array<[number, number]> = inner.endBytes > inner.startBytes ?
    [[offsetBytes, inner.startBytes], [inner.endBytes, endBytes]] : [[offsetBytes, endBytes]];
  for (const [edgeStart, edgeEnd] of edges) {
    if (edgeEnd <= edgeStart) continue;
    const failure = yield* writeProgram(served, edgeStart,
      ZERO_CHUNK.subarray(0, edgeEnd - edgeStart), false);
    if (failure !== null) return failure;
  }
  if (inner.endBytes > inner.startBytes) {
    const release = yield* yieldLock(inner.startBytes, inner.endBytes, false);
    try {
      const failure = yield* zeroWholeBlocks(inner.startBytes, inner.endBytes - inner.startBytes,
        native);
      if (failure !== null) return failure;
    } finally {
      release();
    }
  }
  return flags.fua ? yield* flushProgram() : null;
}

function* zeroWholeBlocks(
  offsetBytes: number, lengthBytes: number, native: boolean,
): IoProgram<NbdFailure | null> {
  if (native) {
    const failure = yield* blocksIo('write-zeroes', offsetBytes, lengthBytes, undefined, false);
    if (failure === null || failure.notSupported !== true) return failure;
  }
  // Writes of the shared zero buffer, a chunk at a time; dm-io bounces them for O_DIRECT.
  for (let doneBytes = 0; doneBytes < lengthBytes; doneBytes += SERVER_ZERO_CHUNK_BYTES) {
    const chunkBytes = Math.min(SERVER_ZERO_CHUNK_BYTES, lengthBytes - doneBytes);
    const failure = yield* blocksIo('write', offsetBytes + doneBytes, chunkBytes,
      ZERO_CHUNK.subarray(0, chunkBytes), false);
    if (failure !== null) return failure;
  }
  return null;
}

/** Whole blocks around a partial write: read the edge blocks, merge `data`, write them all. */
function* mergeAndWrite(
  served: ServedExport, span: Span, offsetBytes: number, data: Uint8Array, fua: boolean,
): IoProgram<NbdFailure | null> {
  const blockBytes = served.blockBytes;
  const merged = allocIoBuffer(served, span.endBytes - span.startBytes);
  const endBytes = offsetBytes + data.length;
  const edgeBlocks = new Set<number>();
  if (offsetBytes % blockBytes !== 0) edgeBlocks.add(span.startBytes);
  if (endBytes % blockBytes !== 0) edgeBlocks.add(span.endBytes - blockBytes);
  for (const blockStart of edgeBlocks) {
    const at = blockStart - span.startBytes;
    const failure = yield* blocksIo('read', blockStart, blockBytes,
      merged.subarray(at, at + blockBytes), false);
    if (failure !== null) return failure;
  }
  merged.set(data, offsetBytes - span.startBytes);
  return yield* blocksIo('write', span.startBytes, merged.length, merged, fua);
}

/** A byte range. */
interface Span {
  readonly startBytes: number;
  readonly endBytes: number;
}

/** The smallest range of whole logical blocks that covers the given range. */
function alignedSpan(served: ServedExport, offsetBytes: number, lengthBytes: number): Span {
  const blockBytes = served.blockBytes;
  return {
    startBytes: Math.floor(offsetBytes / blockBytes) * blockBytes,
    endBytes: Math.ceil((offsetBytes + lengthBytes) / blockBytes) * blockBytes,
  };
}

/** The largest range of whole logical blocks inside the given range (may be empty). */
function innerSpan(served: ServedExport, offsetBytes: number, lengthBytes: number): Span {
  const blockBytes = served.blockBytes;
  const startBytes = Math.ceil(offsetBytes / blockBytes) * blockBytes;
  const endBytes = Math.max(startBytes,
    Math.floor((offsetBytes + lengthBytes) / blockBytes) * blockBytes);
  return { startBytes, endBytes };
}

/** One dm-io request over whole blocks of the export's device. */
function blocksIo(
  op: DmIoOp, offsetBytes: number, lengthBytes: number, data: Uint8Array | undefined,
  fua: boolean,
): IoProgram<NbdFailure | null> {
  return yieldIo(data === undefined ? { kind: 'io', op, offsetBytes, lengthBytes, fua } :
    { kind: 'io', op, offsetBytes, lengthBytes, data, fua });
}

/** Makes every write that completed before this call durable (`flushProgram`). */
export function flushDevice(client: DmIoClient, served: ServedExport): Promise<NbdFailure | null> {
  return runIoProgram(client, served, flushProgram());
}
