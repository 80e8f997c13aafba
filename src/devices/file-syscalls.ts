// Owns running step programs against a file descriptor: `runStepsAsync` issues each step as a
// callback-style `fs` call or a threadpool libc call (never a FileHandle promise, which costs
// 3-4x more per operation), resuming the program from the completion callback; `runStepsSync`
// issues the same steps with blocking calls. One segment uses `fs.read`/`fs.write`, several use
// `fs.readv`/`fs.writev`.

import assert from '../assert.js';
import fs from 'node:fs';
import {
  blockRangeIoctlAsync, blockRangeIoctlSync, fallocateAsync, fallocateSync, SysError,
} from '../sys/libc.js';
import type { Step, StepProgram, StepResult } from './file-steps.js';

const NO_DATA_OK: StepResult = Object.freeze({ bytes: 0, error: null });

function failed(error: unknown): StepResult {
  return { bytes: 0, error };
}

function onlyBuffer(buffers: readonly Uint8Array[]): Uint8Array {
  const buffer = buffers[0];
  assert.ok(buffer !== undefined && buffers.length === 1);
  return buffer;
}

/** Runs one step on the threadpool; `callback` always runs on a later turn. */
function runStepAsync(fd: number, step: Step, callback: (result: StepResult) => void): void {
  const byteCallback = (error: NodeJS.ErrnoException | null, bytes: number): void => {
    callback(error === null ? { bytes, error: null } : failed(error));
  };
  const plainCallback = (error: unknown): void => {
    callback(error === null ? NO_DATA_OK : failed(error));
  };
  switch (step.kind) {
    case 'read':
      if (step.buffers.length === 1) {
        const buffer = onlyBuffer(step.buffers);
        fs.read(fd, buffer, 0, buffer.length, step.positionBytes, byteCallback);
      } else {
        fs.readv(fd, step.buffers, step.positionBytes, byteCallback);
      }
      return;
    case 'write':
      if (step.buffers.length === 1) {
        const buffer = onlyBuffer(step.buffers);
        fs.write(fd, buffer, 0, buffer.length, step.positionBytes, byteCallback);
      } else {
        fs.writev(fd, step.buffers, step.positionBytes, byteCallback);
      }
      return;
    case 'fdatasync':
      fs.fdatasync(fd, plainCallback);
      return;
    case 'fallocate':
    case 'ioctl':
      runLibcStepAsync(fd, step, plainCallback);
      return;
  }
}

function runLibcStepAsync(
  fd: number, step: Extract<Step, { kind: 'fallocate' | 'ioctl' }>,
  callback: (error: unknown) => void,
): void {
  try {
    if (step.kind === 'fallocate') {
      fallocateAsync(fd, step.mode, step.offsetBytes, step.lengthBytes, callback);
    } else {
      blockRangeIoctlAsync(fd, step.request, step.offsetBytes, step.lengthBytes, callback);
    }
  } catch (error) {
    // Only a platform without the bindings (a SysError, ENOSYS) throws here.
    if (!(error instanceof SysError)) throw error;
    process.nextTick(callback, error);
  }
}

/** Runs one step on the calling thread. */
function runStepSync(fd: number, step: Step): StepResult {
  try {
    switch (step.kind) {
      case 'read':
        return { bytes: step.buffers.length === 1 ?
          fs.readSync(fd, onlyBuffer(step.buffers), 0, onlyBuffer(step.buffers).length,
            step.positionBytes) :
          fs.readvSync(fd, step.buffers, step.positionBytes), error: null };
      case 'write':
        return { bytes: step.buffers.length === 1 ?
          fs.writeSync(fd, onlyBuffer(step.buffers), 0, onlyBuffer(step.buffers).length,
            step.positionBytes) :
          fs.writevSync(fd, step.buffers, step.positionBytes), error: null };
      case 'fdatasync':
        fs.fdatasyncSync(fd);
        return NO_DATA_OK;
      case 'fallocate': {
        const error = fallocateSync(fd, step.mode, step.offsetBytes, step.lengthBytes);
        return error === null ? NO_DATA_OK : failed(error);
      }
      case 'ioctl': {
        const error = blockRangeIoctlSync(fd, step.request, step.offsetBytes, step.lengthBytes);
        return error === null ? NO_DATA_OK : failed(error);
      }
    }
  } catch (error) {
    // Only system errors from the fs calls land here; anything else is a bug.
    if (typeof (error as { code?: unknown }).code !== 'string') throw error;
    return failed(error);
  }
}

/**
 * Runs `program` asynchronously and hands its result to `done` on a later turn, also when the
 * program finishes without issuing any step.
 */
export function runStepsAsync<T>(
  fd: number, program: StepProgram<T>, done: (value: T) => void,
): void {
  const first = program.next();
  if (first.done === true) {
    process.nextTick(done, first.value);
    return;
  }
  const resume = (result: StepResult): void => {
    const next = program.next(result);
    if (next.done === true) done(next.value);
    else runStepAsync(fd, next.value, resume);
  };
  runStepAsync(fd, first.value, resume);
}

/**
 * Continues `program`, whose first step the caller already ran: `firstResult` is that step's
 * result. The program must yield that step first (the caller issued exactly it).
 */
export function resumeStepsAsync<T>(
  fd: number, program: StepProgram<T>, firstResult: StepResult, done: (value: T) => void,
): void {
  const first = program.next();
  assert.ok(first.done !== true, 'the program must start with the step already run');
  const resume = (result: StepResult): void => {
    const next = program.next(result);
    if (next.done === true) done(next.value);
    else runStepAsync(fd, next.value, resume);
  };
  resume(firstResult);
}

/** `resumeStepsAsync` for the calling thread. */
export function resumeStepsSync<T>(
  fd: number, program: StepProgram<T>, firstResult: StepResult,
): T {
  const first = program.next();
  assert.ok(first.done !== true, 'the program must start with the step already run');
  let next = program.next(firstResult);
  while (next.done !== true) next = program.next(runStepSync(fd, next.value));
  return next.value;
}

/** Runs `program` to completion on the calling thread. */
export function runStepsSync<T>(fd: number, program: StepProgram<T>): T {
  let next = program.next();
  while (next.done !== true) next = program.next(runStepSync(fd, next.value));
  return next.value;
}
