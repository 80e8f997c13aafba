// Owns the system calls behind a step (file-steps.ts): `runStepAsync` issues one step on the
// threadpool as a callback-style `fs` call or a libc call (never a FileHandle promise, which
// costs 3-4x more per operation), for the threadpool engine and for the steps the io_uring
// engine's ring does not take; `runStepSync` issues the same step with a blocking call, for the
// one blocking path. On the threadpool one buffer uses `fs.read`/`fs.write`, several use
// `fs.readv`/`fs.writev`; blocking, one buffer uses libc's `pread64`/`pwrite64`.

import fs from 'node:fs';
import {
  blockRangeIoctlAsync, blockRangeIoctlSync, fallocateAsync, fallocateSync, libcAvailable,
  SysError, transferOneSync,
} from '../sys/libc.js';
import type { Step, StepResult } from './file-steps.js';

const NO_DATA_OK: StepResult = Object.freeze({ bytes: 0, error: null });

function failed(error: unknown): StepResult {
  return { bytes: 0, error };
}

/** Completion of a read or write: the bytes moved, or the error. */
export type TransferCallback = (error: NodeJS.ErrnoException | null, bytes: number) => void;

/**
 * One read or write of `buffers` at `positionBytes` on the threadpool: `fs.read`/`fs.write`
 * for one buffer, `fs.readv`/`fs.writev` for several. `callback` runs on a later turn.
 */
export function transferAsync(
  fd: number, op: 'read' | 'write', buffers: readonly Uint8Array[], positionBytes: number,
  callback: TransferCallback,
): void {
  const only = buffers.length === 1 ? buffers[0] : undefined;
  if (op === 'read') {
    if (only !== undefined) fs.read(fd, only, 0, only.length, positionBytes, callback);
    else fs.readv(fd, buffers, positionBytes, callback);
  } else if (only !== undefined) {
    fs.write(fd, only, 0, only.length, positionBytes, callback);
  } else {
    fs.writev(fd, buffers, positionBytes, callback);
  }
}

/**
 * `transferAsync` with blocking calls: returns the bytes moved; a failed call throws. One buffer
 * goes to `pread64`/`pwrite64` through koffi (libc.ts), which costs less than `fs.readSync`
 * (docs/performance.md, workload 1's blocking rows); several go to `fs.readvSync`/`writevSync`,
 * as does everything where the libc bindings do not load.
 */
export function transferSync(
  fd: number, op: 'read' | 'write', buffers: readonly Uint8Array[], positionBytes: number,
): number {
  const only = buffers.length === 1 ? buffers[0] : undefined;
  if (only !== undefined && libcAvailable()) {
    const result = transferOneSync(fd, op, only, positionBytes);
    if (typeof result !== 'number') throw result;
    return result;
  }
  if (op === 'read') {
    return only !== undefined ? fs.readSync(fd, only, 0, only.length, positionBytes) :
      fs.readvSync(fd, buffers, positionBytes);
  }
  return only !== undefined ? fs.writeSync(fd, only, 0, only.length, positionBytes) :
    fs.writevSync(fd, buffers, positionBytes);
}

/** Runs one step on the threadpool; `callback` always runs on a later turn. */
export function runStepAsync(
  fd: number, step: Step, callback: (result: StepResult) => void,
): void {
  // One closure per step, of the kind the call completes with.
  switch (step.kind) {
    case 'read':
    case 'write':
      transferAsync(fd, step.kind, step.buffers, step.positionBytes, (error, bytes) => {
        callback(error === null ? { bytes, error: null } : failed(error));
      });
      return;
    case 'fdatasync':
      fs.fdatasync(fd, (error) => callback(error === null ? NO_DATA_OK : failed(error)));
      return;
    case 'fallocate':
    case 'ioctl':
      runLibcStepAsync(fd, step, (error) => callback(error === null ? NO_DATA_OK : failed(error)));
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
export function runStepSync(fd: number, step: Step): StepResult {
  try {
    switch (step.kind) {
      case 'read':
      case 'write':
        return {
          bytes: transferSync(fd, step.kind, step.buffers, step.positionBytes), error: null,
        };
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
