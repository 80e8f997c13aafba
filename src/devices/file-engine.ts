// Owns the one request path of a local device (regular file or block device) and the contract of
// the engine under it. A `FileEngine` runs one step of a request's step program (file-steps.ts,
// written once in file-request.ts) at a time: the threadpool engine with callback `fs` and libc
// calls, the io_uring engine through dmio's own ring. A device is given its engine when it opens
// and keeps it. `submitFileRequest` and `submitFileRequestSync` are the only drivers: a plain
// read or write (`isPlainTransfer`, the one eligibility check) is issued as its single transfer
// step without building the program, and anything else, or a transfer that came back short or
// failed, runs (or resumes) the program. So the semantics stay those of file-request.ts
// whichever engine runs the steps.
//
// Which engine a device gets is decided in file-device.ts (`defaultFileEngine`).

import type { IoError } from '../errors.js';
import { sectorsToBytes } from '../units.js';
import type { DeviceRequest } from './block-device.js';
import {
  type FileRequestContext, isPlainTransfer, runFileRequest, runPlainTransfer,
} from './file-request.js';
import type { Step, StepProgram, StepResult } from './file-steps.js';
import { runStepSync } from './file-syscalls.js';

/** Which engine runs a device's steps. */
export type FileEngineKind = 'threadpool' | 'io_uring';

/** The descriptor a step runs on, and what the engine may need to know about it. */
export interface FileTarget {
  /** The device's open descriptor. */
  readonly fd: number;
  /** Opened with O_DIRECT. */
  readonly direct: boolean;
  /** The threadpool engine may serve small reads of cached data inline (never with `direct`). */
  readonly inlineReads: boolean;
  /** Per-device counters the engine adds to (`inlineReads`, `ringTransfers`). */
  readonly stats: { inlineReads: number; ringTransfers: number };
}

/** Completion of one step; never called synchronously from `runStep`. */
export type StepCallback = (result: StepResult) => void;

/**
 * Runs the steps of local devices' requests. An engine may be shared by many devices (the
 * default one is); it never looks at a request, only at one step.
 */
export interface FileEngine {
  /** Which engine this is. */
  readonly kind: FileEngineKind;
  /**
   * Runs `step` on `target`; `callback` runs exactly once, on a later turn, with the bytes moved
   * or the error (a Node system error or a SysError, both with the errno name in `code`).
   * `ioprio` is the request's I/O priority (class << 13 | level); engines that cannot carry it
   * run the step at the process's priority.
   */
  runStep(target: FileTarget, step: Step, ioprio: number, callback: StepCallback): void;
  /**
   * Releases what the engine holds (the io_uring engine's rings) after what is in flight has
   * completed. Idempotent. Only the owner of an engine closes it: devices never do, and the
   * default engine lives as long as its thread.
   */
  close(): void;
}

/**
 * Runs `request` on `engine`: the one asynchronous path of a local device. `done` runs exactly
 * once, on a later turn. A malformed request fails an assertion here, before any step.
 */
export function submitFileRequest(
  engine: FileEngine, target: FileTarget, context: FileRequestContext, request: DeviceRequest,
  done: (error: IoError | null) => void,
): void {
  if (!isPlainTransfer(context, request)) {
    runSteps(engine, target, request.ioprio, runFileRequest(context, request), done);
    return;
  }
  const step: Step = {
    kind: request.op as 'read' | 'write', buffers: request.segments,
    positionBytes: sectorsToBytes(request.sector),
  };
  engine.runStep(target, step, request.ioprio, (result) => {
    if (result.error === null && result.bytes === sectorsToBytes(request.countSectors)) {
      countTransfer(context, request);
      done(null);
    } else {
      resumeSteps(engine, target, request.ioprio, runPlainTransfer(context, request), result,
        done);
    }
  });
}

/** Runs `request` to completion on the calling thread: the one blocking path. */
export function submitFileRequestSync(
  target: FileTarget, context: FileRequestContext, request: DeviceRequest,
): IoError | null {
  if (!isPlainTransfer(context, request)) {
    const program = runFileRequest(context, request);
    let next = program.next();
    while (next.done !== true) next = program.next(runStepSync(target.fd, next.value));
    return next.value;
  }
  const result = runStepSync(target.fd, {
    kind: request.op as 'read' | 'write', buffers: request.segments,
    positionBytes: sectorsToBytes(request.sector),
  });
  if (result.error === null && result.bytes === sectorsToBytes(request.countSectors)) {
    countTransfer(context, request);
    return null;
  }
  const program = runPlainTransfer(context, request);
  const first = program.next();
  if (first.done === true) return first.value;
  let next = program.next(result);
  while (next.done !== true) next = program.next(runStepSync(target.fd, next.value));
  return next.value;
}

/** Counts the one call that moved all of a plain request's data. */
function countTransfer(context: FileRequestContext, request: DeviceRequest): void {
  if (request.op === 'read') context.stats.reads += 1;
  else context.stats.writes += 1;
}

/**
 * Runs `program` on `engine` and hands its result to `done` on a later turn, also when the
 * program finishes without issuing any step.
 */
function runSteps<T>(
  engine: FileEngine, target: FileTarget, ioprio: number, program: StepProgram<T>,
  done: (value: T) => void,
): void {
  const first = program.next();
  if (first.done === true) {
    process.nextTick(done, first.value);
    return;
  }
  const resume = (result: StepResult): void => {
    const next = program.next(result);
    if (next.done === true) done(next.value);
    else engine.runStep(target, next.value, ioprio, resume);
  };
  engine.runStep(target, first.value, ioprio, resume);
}

/**
 * Continues `program`, whose first step (the plain transfer) already ran with `firstResult`.
 */
function resumeSteps<T>(
  engine: FileEngine, target: FileTarget, ioprio: number, program: StepProgram<T>,
  firstResult: StepResult, done: (value: T) => void,
): void {
  const first = program.next();
  if (first.done === true) {
    done(first.value);
    return;
  }
  const resume = (result: StepResult): void => {
    const next = program.next(result);
    if (next.done === true) done(next.value);
    else engine.runStep(target, next.value, ioprio, resume);
  };
  resume(firstResult);
}
