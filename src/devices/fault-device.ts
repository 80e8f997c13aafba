// Owns the fault-injecting device, the userspace dm-error / dm-flakey / dm-delay: it wraps any
// device and fails chosen sector ranges for chosen operations with a chosen errno, fails a
// seeded fraction of requests, goes down and up on a period, and delays completions. A failed
// request never reaches the wrapped device, so nothing is written. Every request is recorded in
// a bounded trace, so tests can assert exactly what dm-io submitted (or that nothing was).
// Extent queries pass through to the wrapped device unchanged (no faults, no trace); the fault
// device has `extents` exactly when the wrapped device has.

import assert from '../assert.js';
import type { IoError } from '../errors.js';
import { InvalidRequestError } from '../errors.js';
import { validateIntegerInRange } from '../validate.js';
import type {
  BlockDevice, DeviceDone, DeviceLimits, DeviceOp, DeviceRequest, ExtentsDone, RequestFlags,
} from './block-device.js';
import { requestError } from './request-error.js';
import { sectorsToBytes } from '../units.js';

/** Operations a fault rule can name; `flush` matches pure flushes and preflush requests. */
export type FaultOp = DeviceOp | 'flush';

/** Fail requests overlapping `[sector, sector + countSectors)` for the listed operations. */
export interface FaultRange {
  /** First sector of the failing range. */
  sector: number;
  /** Sectors in the failing range. */
  countSectors: number;
  /** Operations that fail there (default: all). */
  ops?: readonly FaultOp[];
  /** The errno reported (default `EIO`). */
  errno?: string;
}

/** The faults a `FaultDevice` injects; every field may be changed at run time. */
export interface FaultSpec {
  /** Sector ranges that fail. */
  ranges?: readonly FaultRange[];
  /** Fraction of requests (0 to 1) that fail at random, from `seed`. */
  failRate?: number;
  /** Operations `failRate` applies to (default: all). */
  failRateOps?: readonly FaultOp[];
  /** Errno of random failures and of down periods (default `EIO`). */
  errno?: string;
  /** dm-flakey: up for `upMs`, then every request fails for `downMs`, repeating. */
  flakey?: { upMs: number; downMs: number };
  /** Forced down: every request fails until set back to false. */
  down?: boolean;
  /** Delay before completing each request, in milliseconds, or a function of the request. */
  delayMs?: number | ((request: DeviceRequest) => number);
}

/** Options of `createFaultDevice`. */
export interface FaultDeviceOptions extends FaultSpec {
  /** Name in messages (default `fault(<inner name>)`). */
  name?: string;
  /** Seed of the random failures (default 1). */
  seed?: number;
  /** Limit overrides applied on top of the wrapped device's (to force splits). */
  limits?: Partial<DeviceLimits>;
  /** Most trace entries kept; older ones are dropped (default 10000). */
  traceMax?: number;
  /** Clock for `flakey`, in milliseconds (default `performance.now`). */
  now?: () => number;
}

/** One request as the fault device saw it. */
export interface TraceEntry {
  readonly op: DeviceOp;
  readonly sector: number;
  readonly countSectors: number;
  readonly segmentCount: number;
  readonly flags: RequestFlags;
  readonly ioprio: number;
  /** The errno injected, or `null` when the request went to the wrapped device. */
  readonly injected: string | null;
}

/** A device that injects faults in front of another. */
export class FaultDevice implements BlockDevice {
  readonly name: string;
  readonly kind = 'fault' as const;
  readonly inner: BlockDevice;
  readonly limits: DeviceLimits;
  readonly trace: TraceEntry[] = [];
  /** The wrapped device's `extents`, present only when it has one. */
  readonly extents?: (sector: number, countSectors: number, done: ExtentsDone) => void;
  readonly #traceMax: number;
  readonly #now: () => number;
  readonly #startMs: number;
  #spec: FaultSpec;
  #randomState: number;

  constructor(inner: BlockDevice, options: FaultDeviceOptions) {
    this.inner = inner;
    this.name = options.name ?? `fault(${inner.name})`;
    this.limits = { ...inner.limits, ...options.limits };
    this.#traceMax = options.traceMax ?? 10000;
    this.#now = options.now ?? (() => performance.now());
    this.#startMs = this.#now();
    this.#randomState = (options.seed ?? 1) >>> 0 || 1;
    this.#spec = validateSpec(options);
    const innerExtents = inner.extents;
    if (innerExtents !== undefined) {
      this.extents = (sector, countSectors, done) => {
        innerExtents.call(inner, sector, countSectors, done);
      };
    }
  }

  get sizeSectors(): number {
    return this.inner.sizeSectors;
  }

  /** The inner device's true size in bytes (see `BlockDevice.sizeBytes`). */
  get sizeBytes(): number {
    return this.inner.sizeBytes ?? sectorsToBytes(this.inner.sizeSectors);
  }

  get readOnly(): boolean {
    return this.inner.readOnly;
  }

  get closed(): boolean {
    return this.inner.closed;
  }

  get canBlock(): boolean {
    return this.inner.canBlock;
  }

  /** Replaces some or all of the injected faults. */
  setFaults(spec: FaultSpec): void {
    this.#spec = validateSpec({ ...this.#spec, ...spec });
  }

  /** Empties the trace. */
  clearTrace(): void {
    this.trace.length = 0;
  }

  submit(request: DeviceRequest, done: DeviceDone): void {
    const errno = this.#decide(request);
    const delayMs = this.#delayFor(request);
    const finish = (error: IoError | null): void => {
      if (delayMs > 0) setTimeout(() => done(error), delayMs);
      else done(error);
    };
    if (errno !== null) {
      const error = requestError(this, request, errno);
      queueMicrotask(() => finish(error));
      return;
    }
    this.inner.submit(request, finish);
  }

  submitSync(request: DeviceRequest): IoError | null {
    assert.ok(this.inner.submitSync !== undefined, 'only blocking devices are called here');
    const errno = this.#decide(request);
    if (errno !== null) return requestError(this, request, errno);
    return this.inner.submitSync(request);
  }

  close(): Promise<void> {
    return this.inner.close();
  }

  /** Records the request and returns the errno to inject, or `null`. */
  #decide(request: DeviceRequest): string | null {
    const errno = this.#injected(request);
    if (this.trace.length >= this.#traceMax) this.trace.shift();
    this.trace.push({
      op: request.op, sector: request.sector, countSectors: request.countSectors,
      segmentCount: request.segments.length, flags: request.flags, ioprio: request.ioprio,
      injected: errno,
    });
    return errno;
  }

  #injected(request: DeviceRequest): string | null {
    const spec = this.#spec;
    const fallback = spec.errno ?? 'EIO';
    if (spec.down === true || this.#flakeyDown()) return fallback;
    for (const range of spec.ranges ?? []) {
      if (matchesOps(request, range.ops) && overlaps(request, range)) return range.errno ?? 'EIO';
    }
    const rate = spec.failRate ?? 0;
    if (rate > 0 && matchesOps(request, spec.failRateOps) && this.#random() < rate) {
      return fallback;
    }
    return null;
  }

  #flakeyDown(): boolean {
    const flakey = this.#spec.flakey;
    if (flakey === undefined) return false;
    const periodMs = flakey.upMs + flakey.downMs;
    const intoPeriodMs = (this.#now() - this.#startMs) % periodMs;
    return intoPeriodMs >= flakey.upMs;
  }

  #delayFor(request: DeviceRequest): number {
    const delay = this.#spec.delayMs;
    if (delay === undefined) return 0;
    return typeof delay === 'number' ? delay : delay(request);
  }

  /** xorshift32: a seeded, repeatable sequence in [0, 1). */
  #random(): number {
    let state = this.#randomState;
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    this.#randomState = state >>> 0;
    return this.#randomState / 2 ** 32;
  }
}

function matchesOps(request: DeviceRequest, ops: readonly FaultOp[] | undefined): boolean {
  if (ops === undefined) return true;
  if (request.flags.preflush && ops.includes('flush')) return true;
  if (request.countSectors === 0) return ops.includes('flush');
  return ops.includes(request.op);
}

function overlaps(request: DeviceRequest, range: FaultRange): boolean {
  const requestEnd = request.sector + Math.max(request.countSectors, 1);
  return request.sector < range.sector + range.countSectors && range.sector < requestEnd;
}

function validateSpec(spec: FaultSpec): FaultSpec {
  if (spec.failRate !== undefined && !(spec.failRate >= 0 && spec.failRate <= 1)) {
    throw new InvalidRequestError('DMIO_ERR_INVALID_ARG_VALUE', 'failRate',
      `must be from 0 to 1, got ${spec.failRate}`);
  }
  if (spec.flakey !== undefined) {
    validateIntegerInRange(spec.flakey.upMs, 'flakey.upMs', 0, 2 ** 31);
    validateIntegerInRange(spec.flakey.downMs, 'flakey.downMs', 1, 2 ** 31);
  }
  for (const [index, range] of (spec.ranges ?? []).entries()) {
    validateIntegerInRange(range.sector, `ranges[${index}].sector`, 0, Number.MAX_SAFE_INTEGER);
    validateIntegerInRange(range.countSectors, `ranges[${index}].countSectors`, 1,
      Number.MAX_SAFE_INTEGER);
  }
  return spec;
}

/**
 * Wraps `inner` in a fault injector (dm-error, dm-flakey and dm-delay in one).
 *
 * @example
 * const bad = createFaultDevice(disk, { ranges: [{ sector: 64, countSectors: 8, ops: ['write'] }] });
 */
export function createFaultDevice(inner: BlockDevice, options: FaultDeviceOptions = {}): FaultDevice {
  return new FaultDevice(inner, options);
}
