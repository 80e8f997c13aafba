// Owns the vocabulary between a local device's request logic and the code that runs syscalls.
// Request logic is written once, as a generator that yields one `Step` (one syscall) at a time
// and receives its `StepResult`. `submit` runs each step on the device's engine, io_uring or
// threadpool (file-device.ts calls `engine.runStep`; file-engine.ts `runProgram` drives a
// program there), `submitSync` on the calling thread (file-engine.ts `runProgramSync` with
// file-syscalls.ts `runStepSync`). So `submit` and `submitSync` cannot drift apart.
//
// This file also owns the data-transfer loop: a read or write of many segments is issued as
// vectored calls of at most `buffersPerCallMax` buffers (IOV_MAX, 1024, by default), and a
// short transfer continues from the exact byte where the kernel stopped.

import assert from '../assert.js';
import { IOV_MAX } from '../constants.js';
import type { BlockRangeIoctl } from '../sys/libc.js';

/** One syscall a request needs. */
export type Step =
  | {
    readonly kind: 'read' | 'write';
    /** Buffers in order; at most IOV_MAX. */
    readonly buffers: readonly Uint8Array[];
    readonly positionBytes: number;
  }
  | { readonly kind: 'fdatasync' }
  | {
    readonly kind: 'fallocate';
    readonly mode: number;
    readonly offsetBytes: number;
    readonly lengthBytes: number;
  }
  | {
    readonly kind: 'ioctl';
    readonly request: BlockRangeIoctl;
    readonly offsetBytes: number;
    readonly lengthBytes: number;
  };

/** What one step did: bytes moved (reads and writes) or the error it failed with. */
export interface StepResult {
  /** Bytes transferred; 0 for steps that move no data. */
  readonly bytes: number;
  /** A Node system error or a SysError (both carry the errno name in `code`), or null. */
  readonly error: unknown;
}

/** Request logic: yields steps, receives their results, returns the request's outcome. */
export type StepProgram<T> = Generator<Step, T, StepResult>;

/** Why a transfer stopped early: the kernel's error, or a 0-byte transfer inside the device. */
export type TransferFailure = { readonly error: unknown } | { readonly errno: 'EIO' };

/**
 * Moves `segments` to or from the byte position `positionBytes`, looping until every byte
 * moved. Returns null on success. Example: 2000 segments of 512 bytes are one call of 1024
 * buffers, which the kernel may cut short at any byte, then calls for the rest.
 */
export function* transferSegments(
  kind: 'read' | 'write',
  segments: readonly Uint8Array[],
  positionBytes: number,
  buffersPerCallMax: number = IOV_MAX,
): StepProgram<TransferFailure | null> {
  assert.ok(buffersPerCallMax >= 1 && buffersPerCallMax <= IOV_MAX);
  let segmentIndex = 0;
  let segmentOffsetBytes = 0;
  let currentPositionBytes = positionBytes;
  while (segmentIndex < segments.length) {
    const buffers = callBuffers(segments, segmentIndex, segmentOffsetBytes, buffersPerCallMax);
    const result = yield { kind, buffers, positionBytes: currentPositionBytes };
    if (result.error !== null) return { error: result.error };
    // A 0-byte transfer inside the device means the file shrank under us: an I/O error.
    if (result.bytes === 0) return { errno: 'EIO' };
    currentPositionBytes += result.bytes;
    let movedBytes = result.bytes + segmentOffsetBytes;
    while (segmentIndex < segments.length && movedBytes >= segmentLength(segments, segmentIndex)) {
      movedBytes -= segmentLength(segments, segmentIndex);
      segmentIndex += 1;
    }
    segmentOffsetBytes = movedBytes;
    assert.ok(segmentIndex < segments.length || segmentOffsetBytes === 0, 'moved too much');
  }
  return null;
}

function segmentLength(segments: readonly Uint8Array[], index: number): number {
  const segment = segments[index];
  assert.ok(segment !== undefined);
  return segment.length;
}

/** The buffers of the next call; the request's own array when it fits whole (no copy). */
function callBuffers(
  segments: readonly Uint8Array[], firstIndex: number, firstOffsetBytes: number,
  buffersPerCallMax: number,
): readonly Uint8Array[] {
  if (firstIndex === 0 && firstOffsetBytes === 0 && segments.length <= buffersPerCallMax) {
    return segments;
  }
  const buffers = segments.slice(firstIndex, firstIndex + buffersPerCallMax);
  const first = buffers[0];
  assert.ok(first !== undefined);
  if (firstOffsetBytes > 0) buffers[0] = first.subarray(firstOffsetBytes);
  return buffers;
}
