// Owns validation at the kcopyd boundary: everything a copy, zero or client creation can get
// wrong is found here, before a job exists or anything is submitted. Too many destinations,
// mismatched counts, bad options (flags are named booleans, never bit numbers; a signal must
// be an AbortSignal), closed or read-only devices, misaligned regions, a destroyed client, too
// many outstanding jobs. A region is checked by dm-io's one region check (`validateRegion`),
// once, when the job is submitted: every chunk is a sub-range of it, so chunks go to dm-io
// without another check. Overlapping source and destination ranges are not refused, as in the
// kernel: the caller must not ask for them.

import { validateRegion, type DmIoRegion } from '../core/request.js';
import {
  validateBoolean, validateFunction, validateOptionsObject, validateUnsigned,
} from '../validate.js';
import { InvalidArgTypeError, InvalidRequestError, StateError } from '../errors.js';
import { DM_KCOPYD_MAX_REGIONS } from './constants.js';
import type { KcopydChunkReadFn, KcopydProgressFn } from './job.js';
import type { KcopydSparseOptions } from './sparse.js';
import { KcopydClient } from './kcopyd-client.js';

/** Options of `dmKcopydCopy` and `dmKcopydZero`. */
export interface KcopydJobOptions {
  /**
   * Keep going after errors (`DM_KCOPYD_IGNORE_ERROR`): a chunk whose read failed is written
   * with zeros where the read failed, and every chunk is processed. Ignored with `writeSeq`.
   */
  ignoreError?: boolean;
  /**
   * Write destinations in ascending offset order (`DM_KCOPYD_WRITE_SEQ`), for zoned or
   * append-only targets; turns `ignoreError` off.
   */
  writeSeq?: boolean;
  /** Called from the worker after each chunk with bytes done and bytes in total. */
  onProgress?: KcopydProgressFn;
  /** Copies only: called from the worker with each chunk's source data before it is written. */
  onChunkRead?: KcopydChunkReadFn;
  /**
   * Copies only: let the destinations copy each chunk themselves where they can (copy offload,
   * `copy_file_range` between regular files opened without O_DIRECT), so the data does not
   * pass through the client's pages. A chunk whose offload fails is copied again through
   * pages, which reports read and write errors as usual; a pair of devices that cannot offload
   * is copied through pages from then on. Not used with `writeSeq` or `onChunkRead`, which
   * need ordered writes or the data in memory. Default false.
   */
  copyOffload?: boolean;
  /**
   * Once a destination's write fails, write no later chunk to it and go on with the others to
   * the end (default false: the kernel's rule, where the first error stops new chunks for
   * every destination, unless `ignoreError`). The job then ends early only when every
   * destination has failed, or when a read fails without `ignoreError`. Chunks already issued
   * to a destination when it fails still finish. Works with split and unsplit jobs, zero jobs,
   * `writeSeq` (the other destinations keep their order) and `copyOffload` (failed
   * destinations are left out of the offloaded copy).
   */
  dropFailedDestinations?: boolean;
  /**
   * Cancels the job when it fires. Already aborted at submission: `AbortedError`
   * (`DMIO_ERR_ABORTED`) is thrown and nothing is submitted. Later: no new chunk starts and no
   * queued I/O is issued, I/O in flight settles, every page comes back, and the job completes
   * once with `aborted: true`; each destination it did not finish has its `writeErr` bit and
   * a DMIO_ERR_ABORTED error whose `cause` is `signal.reason`. The listener is removed when
   * the job completes.
   */
  signal?: AbortSignal;
  /**
   * Make the job durable before it completes (default false: the kernel's kcopyd never
   * flushes, its callers do). Once the job's last write has completed, every destination that
   * was written to (`writtenBytes[d] > 0`, so also one that failed later or a cancelled job's)
   * gets one flush: a zero-count PREFLUSH region of one dm-io write (`fdatasync` for files and
   * block devices, `NBD_CMD_FLUSH` for NBD). A failed flush sets that destination's `writeErr`
   * bit and `writeErrors[d]` (unless it already had an error) and makes `writtenBytes[d]` 0:
   * after a failed flush nothing the job wrote there is known to be on stable storage, so the
   * destination is not complete.
   */
  flush?: boolean;
  /**
   * Copies only: keep holes (sparse.ts). `true` is `{}`: zero blocks of 4096 bytes and the
   * source's extents are holes, and every destination gets write-zeroes for them (plain zeros
   * where it has no write-zeroes). `{ blockBytes, holes }` sets the zero-detection block (0:
   * extents only) and, for all destinations or each, 'skip' (write nothing: a new file, a device
   * known to read zeros), 'write-zeroes' or 'write' (allocated zeros). Bytes read from a hole
   * are zeros either way, so `writtenBytes` and the result do not change. Turned off by
   * `writeSeq`, which gets every byte in order.
   */
  sparse?: boolean | KcopydSparseOptions;
}

/** Options after validation. */
export interface ValidJobOptions {
  readonly ignoreError: boolean;
  readonly writeSeq: boolean;
  readonly onProgress: KcopydProgressFn | null;
  readonly onChunkRead: KcopydChunkReadFn | null;
  readonly copyOffload: boolean;
  readonly dropFailedDestinations: boolean;
  readonly signal: AbortSignal | null;
  readonly flush: boolean;
}

const JOB_OPTION_KEYS = new Set([
  'ignoreError', 'writeSeq', 'onProgress', 'onChunkRead', 'copyOffload', 'dropFailedDestinations',
  'signal', 'flush', 'sparse',
]);

/** Returns `kc` when it is a live client with room for one more job. */
export function validateClientForJob(kc: unknown): KcopydClient {
  if (!(kc instanceof KcopydClient)) throw new InvalidArgTypeError('kc', 'a KcopydClient', kc);
  kc.assertUsable();
  if (kc.masterJobs >= kc.jobsMax) {
    throw new StateError('DMIO_ERR_KCOPYD_BUSY', 'kcopyd client',
      `${kc.masterJobs} jobs outstanding, the client's jobsMax; wait for a job to complete`);
  }
  return kc;
}

/** Validates job options; a number (a kernel flag mask) is refused by name. */
export function validateJobOptions(options: unknown): ValidJobOptions {
  if (options === undefined || options === null) {
    return {
      ignoreError: false, writeSeq: false, onProgress: null, onChunkRead: null, copyOffload: false,
      dropFailedDestinations: false, signal: null, flush: false,
    };
  }
  if (typeof options === 'number') {
    throw new InvalidArgTypeError('options',
      'an object of named flags such as { ignoreError: true } (not a bit mask)', options);
  }
  validateOptionsObject(options, 'options');
  for (const key of Object.keys(options)) {
    if (!JOB_OPTION_KEYS.has(key)) {
      throw new InvalidRequestError('DMIO_ERR_INVALID_ARG_VALUE', `options.${key}`,
        `unknown option; expected ${[...JOB_OPTION_KEYS].join(', ')}`);
    }
  }
  const given = options as KcopydJobOptions;
  const writeSeq = validateBoolean(given.writeSeq, 'options.writeSeq', false);
  const ignoreError = validateBoolean(given.ignoreError, 'options.ignoreError', false);
  return {
    // "If we need to write sequentially, errors cannot be ignored."
    ignoreError: ignoreError && !writeSeq,
    writeSeq,
    onProgress: given.onProgress === undefined ? null :
      validateFunction<KcopydProgressFn>(given.onProgress, 'options.onProgress'),
    onChunkRead: given.onChunkRead === undefined ? null :
      validateFunction<KcopydChunkReadFn>(given.onChunkRead, 'options.onChunkRead'),
    copyOffload: validateBoolean(given.copyOffload, 'options.copyOffload', false),
    dropFailedDestinations: validateBoolean(given.dropFailedDestinations,
      'options.dropFailedDestinations', false),
    signal: validateSignal(given.signal),
    flush: validateBoolean(given.flush, 'options.flush', false),
  };
}

function validateSignal(signal: unknown): AbortSignal | null {
  if (signal === undefined) return null;
  if (!(signal instanceof AbortSignal)) {
    throw new InvalidArgTypeError('options.signal', 'an AbortSignal', signal);
  }
  return signal;
}

/**
 * Validates 1 to 8 destinations whose counts all equal `countSectors`. The kernel ignores
 * destination counts of split jobs but overruns its pages on an unsplit job with mismatched
 * counts; refusing every mismatch keeps the rule independent of the sub-job size.
 */
export function validateDests(dests: unknown, countSectors: number | null): DmIoRegion[] {
  if (!Array.isArray(dests)) throw new InvalidArgTypeError('dests', 'an array', dests);
  if (dests.length > DM_KCOPYD_MAX_REGIONS) {
    throw new InvalidRequestError('DMIO_ERR_TOO_MANY_REGIONS', 'dests',
      `${dests.length} destinations, at most ${DM_KCOPYD_MAX_REGIONS}`);
  }
  if (dests.length === 0) {
    throw new InvalidRequestError('DMIO_ERR_INVALID_ARG_VALUE', 'dests',
      'at least one destination is needed');
  }
  const regions = dests.map((dest, index) => validateRegion(dest, `dests[${index}]`, 'write'));
  const expected = countSectors ?? regions[0]!.count;
  regions.forEach((region, index) => {
    if (region.count !== expected) {
      throw new InvalidRequestError('DMIO_ERR_INVALID_ARG_VALUE', `dests[${index}].count`,
        `${region.count} sectors, but the ${countSectors === null ? 'first destination' :
          'source'} has ${expected}: every region of a job has the same count`);
    }
  });
  return regions;
}

/** Validates the optional callback. */
export function validateNotifyFn(fn: unknown): void {
  if (fn !== undefined) validateFunction(fn, 'fn');
}
