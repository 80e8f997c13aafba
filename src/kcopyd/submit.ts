// Owns the public kcopyd job calls: copy, zero, and prepared callbacks. Each validates
// everything first (a typed error, nothing submitted), then builds the job and hands it to the
// client (`submitJob`), which queues it whole or splits it.
// Without `fn`, copy and zero return a Promise of the result; I/O errors never reject it.

import assert from '../assert.js';
import { validateRegion, type DmIoRegion } from '../core/request.js';
import { validateBoolean, validateFunction } from '../validate.js';
import {
  AbortedError, InvalidArgTypeError, InvalidRequestError, OutOfRangeError,
} from '../errors.js';
import { KCOPYD_WRITE_ERR_ALL } from './constants.js';
import { KcopydJob, type KcopydNotifyFn, type KcopydResult } from './job.js';
import { validateSparse } from './sparse.js';
import type { KcopydClient } from './kcopyd-client.js';
import {
  validateClientForJob, validateDests, validateJobOptions, validateNotifyFn,
  type KcopydJobOptions, type ValidJobOptions,
} from './validate-job.js';

/**
 * Copies `from` to up to 8 destinations (`DM_KCOPYD_MAX_REGIONS`) of the same sector count.
 * Longer than a sub-job, the copy is split into chunks, at most 8 in flight, taken in offset
 * order. A chunk whose read fails is not written (unless `ignoreError`: zeros are written where
 * the read failed); a write failing on one destination still writes the others of that chunk.
 * After the first error no new chunk starts (the kernel's rule), unless `ignoreError`, or
 * `dropFailedDestinations` (the failed destination is left out and the others go on). Source
 * and destinations must not overlap; as in the kernel, that is not checked.
 *
 * With `fn`, returns `undefined` and later calls `fn(readErr, writeErr, context, result)` once,
 * from the client's worker. Without it, returns a Promise of the result (never rejected).
 * `writeErr` bit *d* is destination *d*; all ones when the write phase could not be issued.
 * `result.writtenBytes[d]` is what destination *d* got: it is complete exactly when that
 * equals `count * SECTOR_SIZE` (a clear bit alone does not say so when the job stopped early).
 * `result.aborted` tells a job cancelled by `signal` or by a throwing `onProgress` or
 * `onChunkRead`; its unfinished destinations then have their bits set. A throwing `fn` is
 * rethrown on a later tick (an uncaught exception): the job had already completed.
 *
 * @throws InvalidArgTypeError, OutOfRangeError, InvalidRequestError
 * (`DMIO_ERR_TOO_MANY_REGIONS`, `DMIO_ERR_INVALID_ARG_VALUE` for mismatched counts or unknown
 * options, `DMIO_ERR_MISALIGNED`), StateError (`DMIO_ERR_KCOPYD_DESTROYED`,
 * `DMIO_ERR_DEVICE_CLOSED`, `DMIO_ERR_READ_ONLY`), AbortedError (`DMIO_ERR_ABORTED`, the
 * signal was already aborted); nothing is submitted.
 * @example
 * const { readErr, writeErr } = await dmKcopydCopy(kc, { device: src, sector: 0, count: 2048 },
 *   [{ device: a, sector: 0, count: 2048 }, { device: b, sector: 0, count: 2048 }], {});
 */
export function dmKcopydCopy<C = unknown>(
  kc: KcopydClient, from: DmIoRegion, dests: readonly DmIoRegion[],
  options: KcopydJobOptions, fn: KcopydNotifyFn<C>, context?: C,
): undefined;
export function dmKcopydCopy(
  kc: KcopydClient, from: DmIoRegion, dests: readonly DmIoRegion[],
  options?: KcopydJobOptions,
): Promise<KcopydResult>;
export function dmKcopydCopy(
  kc: KcopydClient, from: DmIoRegion, dests: readonly DmIoRegion[],
  options?: KcopydJobOptions, fn?: KcopydNotifyFn, context?: unknown,
): Promise<KcopydResult> | undefined {
  const client = validateClientForJob(kc);
  const source = validateRegion(from, 'from', 'read');
  const targets = validateDests(dests, source.count);
  const valid = validateJobOptions(options);
  const sparse = valid.writeSeq ? null :
    validateSparse((options as { sparse?: unknown } | undefined)?.sparse, targets, source.device);
  validateNotifyFn(fn);
  const offload = valid.copyOffload && !valid.writeSeq && valid.onChunkRead === null &&
    targets.every((dest) => typeof dest.device.copyFrom === 'function');
  return submit(client, (job) => {
    job.op = offload ? 'offload' : 'read';
    job.sparse = sparse;
    job.sourceDevice = source.device;
    job.sourceSector = source.sector;
    job.countSectors = source.count;
    job.dests = targets;
  }, valid, fn, context);
}

/**
 * Writes zeros to up to 8 destinations of the same sector count: with write-zeroes requests
 * when every destination supports them (`limits.maxWriteZeroesSectors > 0`), else with plain
 * writes from the client's one circular zero page, taking no pages from the pool.
 * Calling convention, result (`writtenBytes` counts the zeroed bytes), `dropFailedDestinations`,
 * `signal` and errors as `dmKcopydCopy`; `onChunkRead` and `copyOffload` are refused.
 *
 * @example
 * await dmKcopydZero(kc, [{ device: disk, sector: 0, count: 8192 }], {});
 */
export function dmKcopydZero<C = unknown>(
  kc: KcopydClient, dests: readonly DmIoRegion[], options: KcopydJobOptions,
  fn: KcopydNotifyFn<C>, context?: C,
): undefined;
export function dmKcopydZero(
  kc: KcopydClient, dests: readonly DmIoRegion[], options?: KcopydJobOptions,
): Promise<KcopydResult>;
export function dmKcopydZero(
  kc: KcopydClient, dests: readonly DmIoRegion[], options?: KcopydJobOptions,
  fn?: KcopydNotifyFn, context?: unknown,
): Promise<KcopydResult> | undefined {
  const client = validateClientForJob(kc);
  const targets = validateDests(dests, null);
  const valid = validateJobOptions(options);
  if (valid.onChunkRead !== null) {
    throw new InvalidRequestError('DMIO_ERR_INVALID_ARG_VALUE', 'options.onChunkRead',
      'a zero job reads nothing');
  }
  if (valid.copyOffload) {
    throw new InvalidRequestError('DMIO_ERR_INVALID_ARG_VALUE', 'options.copyOffload',
      'a zero job copies nothing');
  }
  if ((options as { sparse?: unknown } | undefined)?.sparse !== undefined) {
    throw new InvalidRequestError('DMIO_ERR_INVALID_ARG_VALUE', 'options.sparse',
      'a zero job has no holes to keep');
  }
  validateNotifyFn(fn);
  const writeZeroes = targets.every((dest) => dest.device.limits.maxWriteZeroesSectors > 0);
  return submit(client, (job) => {
    job.op = writeZeroes ? 'write-zeroes' : 'write';
    job.zero = true;
    job.sourceDevice = null;
    job.sourceSector = 0;
    job.countSectors = targets[0]!.count;
    job.dests = targets;
  }, valid, fn, context);
}

/** Builds the master job, then dispatches it whole or splits it. */
function submit(
  kc: KcopydClient, fill: (job: KcopydJob) => void, options: ValidJobOptions,
  fn: KcopydNotifyFn | undefined, context: unknown,
): Promise<KcopydResult> | undefined {
  if (options.signal?.aborted === true) {
    throw new AbortedError('kcopyd job', 'the signal was aborted before submission',
      { cause: options.signal.reason });
  }
  const job = new KcopydJob('master', null);
  fill(job);
  job.ignoreError = options.ignoreError;
  job.writeSeq = options.writeSeq;
  job.dropFailed = options.dropFailedDestinations;
  job.flush = options.flush;
  job.onProgress = options.onProgress;
  job.onChunkRead = options.onChunkRead;
  job.writeErrors = new Array<undefined>(job.dests.length).fill(undefined);
  job.writtenBytes = new Array<number>(job.dests.length).fill(0);
  let promise: Promise<KcopydResult> | undefined;
  if (fn === undefined) {
    promise = new Promise((resolve) => {
      job.fn = (_readErr, _writeErr, _context, result) => resolve(result);
    });
  } else {
    job.fn = fn;
    job.context = context;
  }
  kc.submitJob(job, options.signal);
  return promise;
}

/** A prepared callback: fire it once with `dmKcopydDoCallback`. */
export type KcopydCallbackToken = KcopydJob;

/**
 * Prepares a callback that will run on the client's worker like a copy's completion, for work
 * done by other means (dm-snapshot's whole-chunk overwrite). Counts as an outstanding job:
 * destroy waits until it has been fired and has run.
 *
 * @throws StateError (`DMIO_ERR_KCOPYD_DESTROYED`), InvalidArgTypeError for a non-function.
 * @example
 * const token = dmKcopydPrepareCallback(kc, (readErr, writeErr) => log(readErr, writeErr));
 * dmKcopydDoCallback(token, false, 0n);
 */
export function dmKcopydPrepareCallback<C = unknown>(
  kc: KcopydClient, fn: KcopydNotifyFn<C>, context?: C,
): KcopydCallbackToken {
  const client = validateClientForJob(kc);
  validateFunction(fn, 'fn');
  const job = new KcopydJob('callback', null);
  job.fn = fn as KcopydNotifyFn;
  job.context = context;
  client.prepareCallback(job);
  return job;
}

/**
 * Fires a prepared callback: from any context, it queues the callback, which then runs on the
 * worker with the given values. Each token fires once.
 *
 * @throws InvalidArgTypeError for a token that is not one; InvalidRequestError
 * (`DMIO_ERR_INVALID_ARG_VALUE`) for a token fired twice; OutOfRangeError for a `writeErr`
 * outside 0 to 2^64 - 1.
 */
export function dmKcopydDoCallback(
  token: KcopydCallbackToken, readErr: boolean, writeErr: bigint,
): void {
  if (!(token instanceof KcopydJob) || token.kind !== 'callback') {
    throw new InvalidArgTypeError('token', 'a token from dmKcopydPrepareCallback', token);
  }
  if (token.fired) {
    throw new InvalidRequestError('DMIO_ERR_INVALID_ARG_VALUE', 'token',
      'this prepared callback was already fired');
  }
  const failedRead = validateBoolean(readErr, 'readErr', false);
  if (typeof writeErr !== 'bigint') throw new InvalidArgTypeError('writeErr', 'a bigint', writeErr);
  if (writeErr < 0n || writeErr > KCOPYD_WRITE_ERR_ALL) {
    throw new OutOfRangeError('writeErr', 'from 0n to 2n ** 64n - 1n', writeErr);
  }
  assert.ok(token.fire !== null && token.list === null);
  token.fired = true;
  token.fire(failedRead, writeErr);
}
