// Owns the semantics of one request to a local device, written once as a step program (see
// file-steps.ts) and run by both `submit` and `submitSync`. Order: refuse what must never reach
// the kernel (closed device, past the end, a write to a read-only device), then the preflush
// (fdatasync), then the operation itself, then, for FUA, an fdatasync that makes the write
// durable before completion. Stats count only syscalls that completed. A plain read or write
// skips the program (file-device.ts `isPlainTransfer`) unless its one step comes back short or
// failed; `runPlainTransfer` then finishes it.

import assert from '../assert.js';
import type { IoError } from '../errors.js';
import { sectorsToBytes } from '../units.js';
import { type DeviceRequest, segmentsBytes } from './block-device.js';
import type { StepProgram } from './file-steps.js';
import { transferSegments, type TransferFailure } from './file-steps.js';
import { discardRange, zeroRange, type SpecialOpContext } from './file-special-ops.js';
import { pastEndError, requestError } from './request-error.js';

/** What the request logic needs from a local device. */
export interface FileRequestContext extends SpecialOpContext {
  readonly name: string;
  readonly sizeSectors: number;
  readonly readOnly: boolean;
  readonly closed: boolean;
}

/** The request's outcome: null on success. */
export function* runFileRequest(
  context: FileRequestContext, request: DeviceRequest,
): StepProgram<IoError | null> {
  const refusal = refuseEarly(context, request);
  if (refusal !== null) return refusal;
  if (request.flags.preflush) {
    const result = yield { kind: 'fdatasync' };
    if (result.error !== null) return requestError(context, request, result.error, 'fdatasync');
    context.stats.fdatasyncs += 1;
  }
  if (request.countSectors === 0) return null;
  const failure = yield* runOperation(context, request);
  if (failure !== null) return failureError(context, request, failure);
  if (request.flags.fua && request.op !== 'read') {
    const result = yield { kind: 'fdatasync' };
    if (result.error !== null) return requestError(context, request, result.error, 'fdatasync');
    context.stats.fdatasyncs += 1;
  }
  return null;
}

/** Failures decided before any syscall; they complete the request without touching the fd. */
function refuseEarly(context: FileRequestContext, request: DeviceRequest): IoError | null {
  if (context.closed) return requestError(context, request, 'EBADF');
  if (request.sector + request.countSectors > context.sizeSectors) {
    return pastEndError(context, request);
  }
  if (context.readOnly && request.op !== 'read' && request.countSectors > 0) {
    return requestError(context, request, 'EROFS');
  }
  return null;
}

type OperationFailure = TransferFailure | { readonly errno: 'EOPNOTSUPP' };

function* runOperation(
  context: FileRequestContext, request: DeviceRequest,
): StepProgram<OperationFailure | null> {
  const offsetBytes = sectorsToBytes(request.sector);
  const lengthBytes = sectorsToBytes(request.countSectors);
  switch (request.op) {
    case 'read':
    case 'write':
      return yield* transferData(context, request, offsetBytes, lengthBytes);
    case 'discard':
      return yield* discardRange(context, offsetBytes, lengthBytes);
    case 'write-zeroes':
      return yield* zeroRange(context, offsetBytes, lengthBytes);
  }
}

function* transferData(
  context: FileRequestContext, request: DeviceRequest, offsetBytes: number, lengthBytes: number,
): StepProgram<TransferFailure | null> {
  assert.ok(request.op === 'read' || request.op === 'write');
  assert.equal(segmentsBytes(request.segments), lengthBytes, 'segments must cover the request');
  const program = transferSegments(request.op, request.segments, offsetBytes);
  let next = program.next();
  while (next.done !== true) {
    const result = yield next.value;
    if (result.error === null) {
      if (request.op === 'read') context.stats.reads += 1;
      else context.stats.writes += 1;
    }
    next = program.next(result);
  }
  return next.value;
}

/**
 * The data transfer of a plain read or write alone (no refusal checks, no flags): what is left
 * of a request issued as its one transfer step (file-device.ts `isPlainTransfer`), once that step came back
 * short or failed. Its first step is that same step.
 */
export function* runPlainTransfer(
  context: FileRequestContext, request: DeviceRequest,
): StepProgram<IoError | null> {
  assert.ok(!request.flags.preflush && !request.flags.fua);
  const offsetBytes = sectorsToBytes(request.sector);
  const failure = yield* transferData(context, request, offsetBytes,
    sectorsToBytes(request.countSectors));
  return failure === null ? null : failureError(context, request, failure);
}

function failureError(
  context: FileRequestContext, request: DeviceRequest, failure: OperationFailure,
): IoError {
  if ('errno' in failure) return requestError(context, request, failure.errno);
  const syscall = (failure.error as { syscall?: unknown }).syscall;
  return requestError(context, request, failure.error,
    typeof syscall === 'string' ? syscall : undefined);
}
