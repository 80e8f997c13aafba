// Owns discard and write-zeroes on local devices, and the capability cascade behind them
// (modelled on nbdcopy's): each device keeps an ordered list of methods; the first is tried,
// and a method the kernel refuses (EOPNOTSUPP, ENOTTY, ENOSYS, or EINVAL for an fallocate mode
// the filesystem lacks) is dropped for that device and the next one is tried in the same
// request, so callers never see the refusal. Writing zeros from one shared zero buffer is the
// last method and is never refused. Discard has a single method per device kind; when it is
// refused, discard is switched off for the device and the request fails with EOPNOTSUPP.

import assert from '../assert.js';
import { MIB } from '../constants.js';
import { allocAligned } from '../memory/aligned.js';
import { FALLOC_FL } from '../sys/libc.js';
import {
  transferSegments, type Step, type StepProgram, type TransferFailure,
} from './file-steps.js';

/** Ways to zero a range, in the order they are tried. */
export type ZeroMethod = 'zero-range' | 'punch-hole' | 'blkzeroout' | 'write';
/** Ways to discard a range. */
export type DiscardMethod = 'punch-hole' | 'blkdiscard';
/** Any special method, as named in `disableMethods` and in the cascade state. */
export type SpecialMethod = ZeroMethod | 'blkdiscard';

/** Bytes in the shared zero buffer (1 MiB): one write call carries up to 16 views of it. */
export const ZERO_BUFFER_BYTES = MIB;
/** Views of the zero buffer in one fallback write call (16 MiB per call). */
const ZERO_BUFFERS_PER_CALL = 16;

/** Counters of syscalls that completed, kept per device for tests and diagnostics. */
export interface FileDeviceStats {
  /** read/readv calls that completed without error (a 0-byte read included). */
  reads: number;
  /**
   * Reads served inline from the page cache by preadv2(RWF_NOWAIT), with no threadpool trip
   * (also counted in reads).
   */
  inlineReads: number;
  /**
   * Writes copied into the page cache on the calling thread, with no ring or threadpool trip
   * (`IoUringEngineOptions.inlineWrites`; also counted in writes).
   */
  inlineWrites: number;
  /** Reads and writes that dmio's own io_uring moved whole (also counted in reads/writes). */
  ringTransfers: number;
  /** write/writev calls for write requests. */
  writes: number;
  /** fdatasync calls (preflush, FUA, pure flush). */
  fdatasyncs: number;
  /** Discards done: fallocate(PUNCH_HOLE) on files, BLKDISCARD on block devices. */
  discards: number;
  /** Write-zeroes done with fallocate(ZERO_RANGE). */
  zeroRanges: number;
  /** Write-zeroes done with fallocate(PUNCH_HOLE). */
  zeroPunches: number;
  /** Write-zeroes done with BLKZEROOUT. */
  zeroOuts: number;
  /** write/writev calls of zeros, the last write-zeroes method. */
  zeroWrites: number;
  /** copy_file_range calls that copied into this device (copy offload, `copyFrom`). */
  copyRanges: number;
  /** Methods the kernel refused, each then disabled for this device. */
  refusals: number;
}

/** The methods a device still uses; changes only when the kernel refuses one. */
export interface SpecialMethods {
  /** How the device discards; null once discard was refused (or for none at all). */
  discard: DiscardMethod | null;
  /** How the device zeroes, first choice first; always ends with `write`. */
  zeroes: ZeroMethod[];
}

/** What the cascades need from the device. */
export interface SpecialOpContext {
  readonly methods: SpecialMethods;
  readonly stats: FileDeviceStats;
}

/** A fresh stats object with every counter at 0. */
export function emptyStats(): FileDeviceStats {
  return {
    reads: 0, inlineReads: 0, inlineWrites: 0, ringTransfers: 0, writes: 0, fdatasyncs: 0, discards: 0,
    zeroRanges: 0, zeroPunches: 0, zeroOuts: 0, zeroWrites: 0, copyRanges: 0, refusals: 0,
  };
}

/** The initial methods for a device kind, minus those the caller disabled. */
export function initialMethods(
  kind: 'file' | 'block', disabled: readonly SpecialMethod[], discardSupported: boolean,
): SpecialMethods {
  const allZeroes: ZeroMethod[] = kind === 'file' ? ['zero-range', 'punch-hole', 'write'] :
    ['blkzeroout', 'write'];
  const discard: DiscardMethod = kind === 'file' ? 'punch-hole' : 'blkdiscard';
  return {
    discard: discardSupported && !disabled.includes(discard) ? discard : null,
    zeroes: allZeroes.filter((method) => method === 'write' || !disabled.includes(method)),
  };
}

const REFUSAL_ERRNOS: ReadonlySet<string> = new Set(['EOPNOTSUPP', 'ENOTTY', 'ENOSYS']);

/** True when `error` means "this method is not available here", not "this request failed". */
function isRefusal(method: SpecialMethod | DiscardMethod, error: unknown): boolean {
  const errno = (error as { code?: unknown } | null)?.code;
  if (typeof errno !== 'string') return false;
  if (REFUSAL_ERRNOS.has(errno)) return true;
  // fallocate says EINVAL for a mode the filesystem lacks; our offsets and lengths are valid.
  // For the block ioctls EINVAL means a misaligned range, which is the request's fault.
  return errno === 'EINVAL' && (method === 'zero-range' || method === 'punch-hole');
}

/** Discards `lengthBytes` at `offsetBytes`; returns null or the failure. */
export function* discardRange(
  context: SpecialOpContext, offsetBytes: number, lengthBytes: number,
): StepProgram<TransferFailure | { readonly errno: 'EOPNOTSUPP' } | null> {
  const method = context.methods.discard;
  if (method === null) return { errno: 'EOPNOTSUPP' };
  const result = yield methodStep(method, offsetBytes, lengthBytes);
  if (result.error === null) {
    context.stats.discards += 1;
    return null;
  }
  if (!isRefusal(method, result.error)) return { error: result.error };
  if (context.methods.discard !== null) {
    context.methods.discard = null;
    context.stats.refusals += 1;
  }
  return { errno: 'EOPNOTSUPP' };
}

/** Zeroes `lengthBytes` at `offsetBytes` with the first method that works. */
export function* zeroRange(
  context: SpecialOpContext, offsetBytes: number, lengthBytes: number,
): StepProgram<TransferFailure | null> {
  // Bounded: each pass either returns or removes one method, and `write` is never removed.
  for (;;) {
    const method = context.methods.zeroes[0];
    assert.ok(method !== undefined, 'the zero cascade always ends with write');
    if (method === 'write') return yield* writeZeros(context, offsetBytes, lengthBytes);
    const result = yield methodStep(method, offsetBytes, lengthBytes);
    if (result.error === null) {
      countZeroMethod(context.stats, method);
      return null;
    }
    if (!isRefusal(method, result.error)) return { error: result.error };
    disableZeroMethod(context, method);
  }
}

/** The one syscall a special method issues for a range. */
function methodStep(
  method: Exclude<SpecialMethod, 'write'>, offsetBytes: number, lengthBytes: number,
): Step {
  switch (method) {
    case 'zero-range':
      return { kind: 'fallocate', mode: FALLOC_FL.ZERO_RANGE | FALLOC_FL.KEEP_SIZE, offsetBytes,
        lengthBytes };
    case 'punch-hole':
      return { kind: 'fallocate', mode: FALLOC_FL.PUNCH_HOLE | FALLOC_FL.KEEP_SIZE, offsetBytes,
        lengthBytes };
    case 'blkzeroout':
      return { kind: 'ioctl', request: 'BLKZEROOUT', offsetBytes, lengthBytes };
    case 'blkdiscard':
      return { kind: 'ioctl', request: 'BLKDISCARD', offsetBytes, lengthBytes };
  }
}

function countZeroMethod(stats: FileDeviceStats, method: Exclude<ZeroMethod, 'write'>): void {
  if (method === 'zero-range') stats.zeroRanges += 1;
  else if (method === 'punch-hole') stats.zeroPunches += 1;
  else stats.zeroOuts += 1;
}

function disableZeroMethod(context: SpecialOpContext, method: ZeroMethod): void {
  assert.notEqual(method, 'write');
  const index = context.methods.zeroes.indexOf(method);
  // Another request in flight may have disabled it already.
  if (index < 0) return;
  context.methods.zeroes.splice(index, 1);
  context.stats.refusals += 1;
}

/**
 * The default instance of the zero buffer: made on first use, only ever written from, so one
 * copy serves every device of the thread.
 */
let zeroBuffer: Uint8Array | undefined;

function sharedZeroBuffer(): Uint8Array {
  // Aligned memory, so O_DIRECT devices can write from it too.
  zeroBuffer ??= allocAligned(ZERO_BUFFER_BYTES);
  return zeroBuffer;
}

function* writeZeros(
  context: SpecialOpContext, offsetBytes: number, lengthBytes: number,
): StepProgram<TransferFailure | null> {
  const zeros = sharedZeroBuffer();
  const segments: Uint8Array[] = [];
  for (let doneBytes = 0; doneBytes < lengthBytes; doneBytes += zeros.length) {
    segments.push(zeros.subarray(0, Math.min(zeros.length, lengthBytes - doneBytes)));
  }
  const program = transferSegments('write', segments, offsetBytes, ZERO_BUFFERS_PER_CALL);
  let next = program.next();
  while (next.done !== true) {
    const result = yield next.value;
    if (result.error === null) context.stats.zeroWrites += 1;
    next = program.next(result);
  }
  return next.value;
}
