// Owns kcopyd client creation, flushing and destruction at the public boundary: options are
// validated into the settings a client is built from (sub-job size, job bound, fresh pages or
// an injected page source, throttle, sleep), and destroy waits for every job.

import { DmIoClient } from '../core/client.js';
import {
  validateFunction, validateIntegerInRange, validateOptionsObject,
} from '../validate.js';
import { InvalidArgTypeError, InvalidRequestError } from '../errors.js';
import { PAGE_SECTORS } from '../constants.js';
import {
  KCOPYD_FRESH_SUB_JOBS_DEFAULT, KCOPYD_JOBS_DEFAULT, KCOPYD_JOBS_MAX,
  KCOPYD_SUB_JOB_SECTORS_DEFAULT, KCOPYD_SUB_JOB_SECTORS_MAX,
} from './constants.js';
import { KcopydClient } from './kcopyd-client.js';
import { defaultFreshSource, type KcopydPageSource } from './page-reserve.js';
import { KcopydThrottle } from './throttle.js';

/** Options of `dmKcopydClientCreate`. */
export interface KcopydClientOptions {
  /** A throttle, possibly shared with other clients (default none: unthrottled). */
  throttle?: KcopydThrottle | null;
  /** Sectors per sub-job: a multiple of 8 from 8 to 8192 (default 1024 = 512 KiB). */
  subJobSectors?: number;
  /** Most outstanding copies, zeroes and prepared callbacks (default 1024, at most 65536). */
  jobsMax?: number;
  /**
   * Fresh pages beyond the one-sub-job reserve, allocated with the client (default 7
   * sub-jobs' worth, so one split job keeps 8 chunks in flight); 0 leaves only the reserve.
   */
  freshPages?: number;
  /** Replaces the fresh pool, e.g. with one that fails, to test page exhaustion. */
  pageSource?: KcopydPageSource;
  /**
   * A dm-io client to issue I/O on (default a private one, destroyed with the client). When
   * other users fill a shared one (DMIO_ERR_CLIENT_BUSY), jobs wait for room and retry.
   */
  ioClient?: DmIoClient;
  /**
   * The throttle's sleep and the wait between retries on a busy `ioClient` (default a timer);
   * tests pass one that advances a virtual clock.
   */
  sleep?: (ms: number) => Promise<void>;
}

/**
 * Creates a kcopyd client with its page reserve (one sub-job), fresh pages, private dm-io
 * client and worker. Accepts a throttle alone, as the kernel's `dm_kcopyd_client_create`.
 *
 * @throws InvalidArgTypeError / OutOfRangeError (`DMIO_ERR_OUT_OF_RANGE`) for bad options.
 * @example
 * const kc = dmKcopydClientCreate({ subJobSectors: 2048 });
 * const { readErr, writeErr } = await dmKcopydCopy(kc, source, [a, b], {});
 * await dmKcopydClientDestroy(kc);
 */
export function dmKcopydClientCreate(
  options: KcopydClientOptions | KcopydThrottle = {},
): KcopydClient {
  const given = options instanceof KcopydThrottle ? { throttle: options } : options;
  validateOptionsObject(given, 'options');
  const subJobSectors = validateIntegerInRange(given.subJobSectors ??
    KCOPYD_SUB_JOB_SECTORS_DEFAULT, 'options.subJobSectors', PAGE_SECTORS,
  KCOPYD_SUB_JOB_SECTORS_MAX);
  if (subJobSectors % PAGE_SECTORS !== 0) {
    throw new InvalidRequestError('DMIO_ERR_INVALID_ARG_VALUE', 'options.subJobSectors',
      `${subJobSectors} is not a whole number of ${PAGE_SECTORS}-sector pages`);
  }
  const throttle = given.throttle ?? null;
  if (throttle !== null && !(throttle instanceof KcopydThrottle)) {
    throw new InvalidArgTypeError('options.throttle', 'a KcopydThrottle', throttle);
  }
  const reservePages = subJobSectors / PAGE_SECTORS;
  const freshPages = validateIntegerInRange(given.freshPages ??
    reservePages * KCOPYD_FRESH_SUB_JOBS_DEFAULT, 'options.freshPages', 0,
  reservePages * 64);
  const pageSource = given.pageSource ?? null;
  if (pageSource !== null && (typeof pageSource.tryTake !== 'function' ||
      typeof pageSource.give !== 'function')) {
    throw new InvalidArgTypeError('options.pageSource', 'a { tryTake, give } page source',
      pageSource);
  }
  const ioClient = given.ioClient ?? null;
  if (ioClient !== null && !(ioClient instanceof DmIoClient)) {
    throw new InvalidArgTypeError('options.ioClient', 'a DmIoClient', ioClient);
  }
  return new KcopydClient({
    throttle, subJobSectors,
    jobsMax: validateIntegerInRange(given.jobsMax ?? KCOPYD_JOBS_DEFAULT, 'options.jobsMax', 1,
      KCOPYD_JOBS_MAX),
    freshSource: pageSource ?? defaultFreshSource(freshPages),
    freshPagesMax: pageSource === null ? freshPages : Number.MAX_SAFE_INTEGER,
    ioClient,
    sleep: given.sleep === undefined ? defaultSleep :
      validateFunction<(ms: number) => Promise<void>>(given.sleep, 'options.sleep'),
  });
}

function defaultSleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Destroys a client: new jobs throw `DMIO_ERR_KCOPYD_DESTROYED`; resolves once every job,
 * including every prepared callback, has completed, the lists are empty and every page is back
 * (asserted). A prepared callback that is never fired keeps it waiting. Idempotent.
 *
 * @example
 * await dmKcopydClientDestroy(kc);
 */
export function dmKcopydClientDestroy(kc: KcopydClient): Promise<void> {
  if (!(kc instanceof KcopydClient)) throw new InvalidArgTypeError('kc', 'a KcopydClient', kc);
  return kc.destroy();
}

/**
 * Waits for the client's worker, as the kernel's `dm_kcopyd_client_flush` flushes its
 * workqueue: resolves once every pass queued or running has finished, so every job submitted
 * before the call has been processed as far as it can go (completions already due have run
 * their callbacks, chunks that could be issued were issued). Like the kernel's, it does not
 * wait for I/O still in flight, nor for the jobs that I/O will complete later; await a job's
 * Promise (or `dmKcopydClientDestroy`) for that. Resolves at once when the worker is idle.
 *
 * @example
 * dmKcopydDoCallback(token, false, 0n);
 * await dmKcopydClientFlush(kc);   // the prepared callback has run
 */
export function dmKcopydClientFlush(kc: KcopydClient): Promise<void> {
  if (!(kc instanceof KcopydClient)) throw new InvalidArgTypeError('kc', 'a KcopydClient', kc);
  return kc.whenIdle();
}
