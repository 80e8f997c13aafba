// Owns every fixed number of kcopyd: destination and sub-job limits, the throttle's sleep and
// window, the "all ones" write error, and the job bound. Each says why it exists; their
// relationships are asserted when the module loads.

import assert from '../assert.js';
import { MIB, PAGE_SECTORS, SECTOR_SIZE } from '../constants.js';

/** Most destinations one copy or zero job may name, as the kernel's `DM_KCOPYD_MAX_REGIONS`. */
export const DM_KCOPYD_MAX_REGIONS = 8;
/** Sub-jobs a split job keeps in flight at most (the kernel's `SPLIT_COUNT`). */
export const KCOPYD_SPLIT_COUNT = 8;
/** Default sub-job size: 1024 sectors (512 KiB), the kernel's default `kcopyd_subjob_size_kb`. */
export const KCOPYD_SUB_JOB_SECTORS_DEFAULT = MIB / 2 / SECTOR_SIZE;
/**
 * Largest sub-job: 8192 sectors (4 MiB). The kernel clamps at 1 MiB; userspace benefits from
 * larger requests, and 4 MiB keeps one client's reserve plus fresh pages near 32 MiB.
 */
export const KCOPYD_SUB_JOB_SECTORS_MAX = (4 * MIB) / SECTOR_SIZE;
/** Throttle sleep per attempt, in milliseconds: the kernel's `SLEEP_USEC`, found by experiment. */
export const KCOPYD_THROTTLE_SLEEP_MS = 100;
/** Sleeps per I/O submission at most, the kernel's `MAX_SLEEPS`: avoids a livelock. */
export const KCOPYD_THROTTLE_SLEEPS_MAX = 10;
/** log2 of the throttle's accounting window in milliseconds: 2^10 = 1024 ms, about 1 s. */
export const KCOPYD_THROTTLE_WINDOW_SHIFT = 10;
/** `writeErr` when the write phase could not be issued at all: every bit set (`~0UL`). */
export const KCOPYD_WRITE_ERR_ALL = (1n << 64n) - 1n;
/** Default bound on outstanding jobs (copies, zeroes, prepared callbacks) of one client. */
export const KCOPYD_JOBS_DEFAULT = 1024;
/** Upper bound on `jobsMax`, so a typo cannot make the job lists unbounded in practice. */
export const KCOPYD_JOBS_MAX = 65536;
/** Default fresh pages beyond the reserve: enough for the other 7 sub-jobs of one split job. */
export const KCOPYD_FRESH_SUB_JOBS_DEFAULT = KCOPYD_SPLIT_COUNT - 1;

assert.equal(KCOPYD_SUB_JOB_SECTORS_DEFAULT % PAGE_SECTORS, 0, 'sub-jobs hold whole pages');
assert.equal(KCOPYD_SUB_JOB_SECTORS_MAX % PAGE_SECTORS, 0, 'sub-jobs hold whole pages');
assert.ok(KCOPYD_SUB_JOB_SECTORS_DEFAULT <= KCOPYD_SUB_JOB_SECTORS_MAX);
assert.ok(DM_KCOPYD_MAX_REGIONS <= 64, 'writeErr bits fit the 64-bit bitset');
assert.ok(KCOPYD_JOBS_DEFAULT <= KCOPYD_JOBS_MAX);

/**
 * Offloaded chunks (copy_file_range) of one job in flight at once: one leaves each chunk
 * waiting for its slowest destination, more make chunks of one file contend for its lock
 * (measurements in docs/performance.md).
 */
export const KCOPYD_OFFLOADS_IN_FLIGHT_MAX = 2;

/**
 * First wait, in milliseconds, before kcopyd retries I/O its dm-io client refused as busy
 * (DMIO_ERR_CLIENT_BUSY: a shared client's waiting queue full of other users' requests). The
 * completions of kcopyd's own I/O on that client usually retry sooner; the timer covers a
 * client where none is in flight.
 */
export const KCOPYD_BUSY_RETRY_MS_MIN = 1;
/**
 * Longest wait between such retries: the wait doubles per refusal up to here (the throttle's
 * sleep), so a client that stays full costs about ten worker passes a second, never a spin.
 */
export const KCOPYD_BUSY_RETRY_MS_MAX = KCOPYD_THROTTLE_SLEEP_MS;

assert.ok(KCOPYD_BUSY_RETRY_MS_MIN >= 1 && KCOPYD_BUSY_RETRY_MS_MIN <= KCOPYD_BUSY_RETRY_MS_MAX);
