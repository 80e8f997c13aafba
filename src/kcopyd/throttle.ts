// Owns the kcopyd throttle: a limit on the fraction of wall time during which at least one
// throttled I/O is in flight, in percent, over a window of about one second that decays
// (halving-style) once it grows past 1024 ms. One throttle may be shared by several clients,
// which are then limited together. 100 (the default) turns it off: only in-flight I/Os are
// counted. The clock is injectable, so tests run the algorithm on virtual time.
//
// Before each read and each write a job issues, the worker asks `mustWait()`. It accounts the
// time since the last event (busy if any I/O was in flight) and answers whether the busy time
// exceeds `percent` of the total; if so the worker sleeps 100 ms and asks again, at most 10
// times per I/O, then counts the I/O as started. Completions account their time too.

import assert from '../assert.js';
import { validateIntegerInRange, validateOptionsObject } from '../validate.js';
import { InvalidArgTypeError } from '../errors.js';
import {
  KCOPYD_THROTTLE_SLEEP_MS, KCOPYD_THROTTLE_SLEEPS_MAX, KCOPYD_THROTTLE_WINDOW_SHIFT,
} from './constants.js';

/** Options of `dmKcopydThrottleCreate`. */
export interface KcopydThrottleOptions {
  /** Monotonic clock in milliseconds (default `performance.now`). */
  now?: () => number;
}

/** A throttle shared by the kcopyd clients created with it. */
export class KcopydThrottle {
  #percent: number;
  readonly #now: () => number;
  #ioJobs = 0;
  #ioPeriodMs = 0;
  #totalPeriodMs = 0;
  #lastMs: number;

  /** @internal Use `dmKcopydThrottleCreate`. */
  constructor(percent: number, now: () => number) {
    this.#percent = percent;
    this.#now = now;
    this.#lastMs = this.#nowMs();
  }

  /** The busy limit in percent, 0 to 100; 100 means unthrottled. May be changed at any time. */
  get percent(): number {
    return this.#percent;
  }

  set percent(value: number) {
    this.#percent = validateIntegerInRange(value, 'throttle.percent', 0, 100);
  }

  /** I/Os counted as in flight now, across every client sharing the throttle. */
  get ioJobs(): number {
    return this.#ioJobs;
  }

  /** True when the throttle limits anything. */
  get active(): boolean {
    return this.#percent < 100;
  }

  /**
   * @internal Accounts the time since the last event and answers whether the busy time is over
   * the limit, so the caller should sleep before issuing its I/O.
   */
  mustWait(): boolean {
    if (!this.active) return false;
    const nowMs = this.#nowMs();
    const elapsedMs = nowMs - this.#lastMs;
    this.#lastMs = nowMs;
    if (this.#ioJobs > 0) this.#ioPeriodMs += elapsedMs;
    this.#totalPeriodMs += elapsedMs;
    this.#clampAndDecay();
    const skewMs = this.#ioPeriodMs - Math.floor((this.#percent * this.#totalPeriodMs) / 100);
    return skewMs > 0;
  }

  /** @internal Counts one more I/O in flight (after any sleeping). */
  ioStarted(): void {
    this.#ioJobs += 1;
  }

  /** @internal Counts one I/O finished; when none remain, accounts the busy time. */
  ioFinished(): void {
    assert.ok(this.#ioJobs > 0, 'throttle: more I/Os finished than started');
    this.#ioJobs -= 1;
    if (!this.active || this.#ioJobs !== 0) return;
    const nowMs = this.#nowMs();
    const elapsedMs = nowMs - this.#lastMs;
    this.#lastMs = nowMs;
    this.#ioPeriodMs += elapsedMs;
    this.#totalPeriodMs += elapsedMs;
    this.#clampAndDecay();
  }

  /**
   * Keeps busy <= total and shrinks both once the window passes 2^10 ms. Example: total 2500 ms
   * gives 2500 >> 10 = 2, whose highest bit is bit 2 (1-based), so both periods shift right by 2:
   * total 625 ms, and the busy fraction is unchanged.
   */
  #clampAndDecay(): void {
    if (this.#ioPeriodMs > this.#totalPeriodMs) this.#ioPeriodMs = this.#totalPeriodMs;
    if (this.#totalPeriodMs < 2 ** KCOPYD_THROTTLE_WINDOW_SHIFT) return;
    const windows = Math.floor(this.#totalPeriodMs / 2 ** KCOPYD_THROTTLE_WINDOW_SHIFT);
    const shift = Math.floor(Math.log2(windows)) + 1;
    this.#totalPeriodMs = Math.floor(this.#totalPeriodMs / 2 ** shift);
    this.#ioPeriodMs = Math.floor(this.#ioPeriodMs / 2 ** shift);
  }

  #nowMs(): number {
    const nowMs = Math.floor(this.#now());
    assert.ok(Number.isSafeInteger(nowMs), 'throttle clock must return finite milliseconds');
    return nowMs;
  }
}

/**
 * @internal The gate before one I/O: counts it as started at once and returns `null` when the
 * throttle allows it, else returns a promise that sleeps 100 ms at a time (at most 10 times,
 * re-accounting after each sleep) and then counts it.
 */
export function throttleStart(
  throttle: KcopydThrottle, sleep: (ms: number) => Promise<void>,
): Promise<void> | null {
  if (!throttle.mustWait()) {
    throttle.ioStarted();
    return null;
  }
  return (async () => {
    let sleeps = 0;
    let wait = true;
    while (wait && sleeps < KCOPYD_THROTTLE_SLEEPS_MAX) {
      sleeps += 1;
      await sleep(KCOPYD_THROTTLE_SLEEP_MS);
      wait = throttle.mustWait();
    }
    throttle.ioStarted();
  })();
}

/**
 * Creates a throttle to share between kcopyd clients: together they keep at least one I/O in
 * flight for at most `percent` of wall time, measured over about one second.
 *
 * @param percent - Busy limit, 0 to 100 (100 = unthrottled; 0 delays every I/O by about 1 s).
 * @throws OutOfRangeError (`DMIO_ERR_OUT_OF_RANGE`) for a percent outside 0 to 100.
 * @example
 * const throttle = dmKcopydThrottleCreate(50);
 * const a = dmKcopydClientCreate({ throttle });
 * const b = dmKcopydClientCreate({ throttle }); // a and b together stay near 50 % busy
 */
export function dmKcopydThrottleCreate(
  percent = 100, options: KcopydThrottleOptions = {},
): KcopydThrottle {
  const value = validateIntegerInRange(percent, 'percent', 0, 100);
  validateOptionsObject(options, 'options');
  const now = options.now ?? (() => performance.now());
  if (typeof now !== 'function') throw new InvalidArgTypeError('options.now', 'a function', now);
  return new KcopydThrottle(value, now);
}
