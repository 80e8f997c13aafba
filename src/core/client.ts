// Owns the dm-io client: the bounded resources every request draws on, reserved up front. A
// client holds an aligned page pool (bounce pages for O_DIRECT devices when caller memory is
// not aligned) and one `InflightLimiter` over its device requests: at most `inflightMax` in
// flight and the pool's bytes held by bounce buffers, at most `queuedMax` waiting in FIFO order.
//
// One submit path: `submit` starts a device request at once when the limiter has room and
// nothing waits, or queues it; queued requests start, in arrival order, as earlier ones
// finish. Whether a request needs bounce pages is decided when it is planned (dispatch.ts), so
// the client never re-examines memory.
//
// When the queue is full: `assertRoom` is asked for all device requests of one dm-io request
// before the first is submitted, and throws `DMIO_ERR_CLIENT_BUSY` (a StateError) when they
// could not all be started or queued. So a request is refused whole and synchronously, with
// nothing submitted; memory stays bounded by `inflightMax + queuedMax` device requests.
//
// Invariants: a waiting request starts only when everything queued before it has started (no
// overtaking); every bounce page goes back to the pool before the request's `done` runs;
// `done` never runs inside `submit`; `destroy` resolves only when nothing is in flight or waiting.

import assert from '../assert.js';
import {
  CLIENT_INFLIGHT_DEFAULT, CLIENT_INFLIGHT_MAX, CLIENT_QUEUED_DEFAULT, CLIENT_QUEUED_MAX,
  CLIENT_RESERVED_PAGES_DEFAULT, CLIENT_RESERVED_PAGES_MAX, PAGE_SIZE,
} from '../constants.js';
import type { BlockDevice, DeviceDone, DeviceRequest } from '../devices/block-device.js';
import { segmentsBytes } from '../devices/block-device.js';
import { InvalidArgTypeError, StateError } from '../errors.js';
import { InflightLimiter } from '../inflight-limiter.js';
import { allocAlignedPages, isAlignedView } from '../memory/aligned.js';
import { PagePool } from '../memory/page-pool.js';
import { divCeil } from '../units.js';
import { validateIntegerInRange, validateOptionsObject } from '../validate.js';

/** Options of `dmIoClientCreate`. */
export interface DmIoClientOptions {
  /** Aligned pages reserved for bounce buffers (default 256 = 1 MiB, 1 to 65536). */
  reservedPages?: number;
  /** Device requests this client keeps in flight at most (default 128, 1 to 4096). */
  inflightMax?: number;
  /**
   * Device requests that may wait beyond `inflightMax` (default 65536, 0 to 1048576). A
   * dm-io request whose device requests would not all fit is refused with
   * `DMIO_ERR_CLIENT_BUSY`, nothing of it submitted.
   */
  queuedMax?: number;
}

/** One device request as the client takes it: planned, with its bounce need decided. */
export interface ClientRequest {
  readonly device: BlockDevice;
  readonly request: DeviceRequest;
  /** Pool pages the request needs as a bounce buffer; 0 when its memory goes as it is. */
  readonly bouncePages: number;
}

/** Waiting requests are never taken back (destroy drains them), so none is ever rejected. */
const neverRejected = (): void => undefined;

/**
 * The resources dm-io requests draw on. Create with `dmIoClientCreate`, release with
 * `dmIoClientDestroy`.
 */
export class DmIoClient {
  /** Pages in the bounce pool. */
  readonly reservedPages: number;
  /** Most device requests in flight at once. */
  readonly inflightMax: number;
  /** Most device requests waiting at once. */
  readonly queuedMax: number;
  readonly #pool: PagePool;
  readonly #limiter: InflightLimiter;
  #destroyed = false;
  #drained: (() => void) | null = null;

  /** @internal Use `dmIoClientCreate`. */
  constructor(reservedPages: number, inflightMax: number, queuedMax: number) {
    this.reservedPages = reservedPages;
    this.inflightMax = inflightMax;
    this.queuedMax = queuedMax;
    this.#pool = new PagePool(reservedPages);
    this.#limiter = new InflightLimiter({
      requestsMax: inflightMax, bytesMax: reservedPages * PAGE_SIZE, waitingMax: queuedMax,
    });
  }

  /** Device requests in flight now. */
  get inflight(): number {
    return this.#limiter.requests;
  }

  /** Device requests waiting for a slot or for pages. */
  get queued(): number {
    return this.#limiter.waitingCount;
  }

  /** Pool pages free now. */
  get freePages(): number {
    return this.#pool.freePages;
  }

  /** True once `dmIoClientDestroy` was called. */
  get destroyed(): boolean {
    return this.#destroyed;
  }

  /** @internal Throws `DMIO_ERR_CLIENT_DESTROYED` when the client can take no more work. */
  assertUsable(): void {
    if (this.#destroyed) {
      throw new StateError('DMIO_ERR_CLIENT_DESTROYED', 'client', 'the client was destroyed');
    }
  }

  /**
   * @internal Largest request, in bytes, the client can bounce for `device`: requests to an
   * O_DIRECT device are capped so one of them always fits the pool.
   */
  bounceLimitBytes(device: BlockDevice): number {
    if (device.limits.memoryAlignmentBytes === 0) return Number.MAX_SAFE_INTEGER;
    return this.reservedPages * PAGE_SIZE;
  }

  /**
   * @internal Throws `DMIO_ERR_CLIENT_BUSY` unless `requests`, submitted now in order, would
   * all start or wait without overflowing the queue. Call it before submitting the first.
   */
  assertRoom(requests: readonly ClientRequest[]): void {
    // At most every request waits: no simulation needed while that still fits.
    if (this.#limiter.waitingCount + requests.length <= this.queuedMax) return;
    const heldBytes = requests.map((entry) => entry.bouncePages * PAGE_SIZE);
    if (this.#limiter.admitsAll(heldBytes)) return;
    throw new StateError('DMIO_ERR_CLIENT_BUSY', 'client',
      `${requests.length} device requests do not fit: ${this.queued} of at most ` +
      `${this.queuedMax} already wait behind ${this.inflight} in flight (nothing submitted; ` +
      'retry after completions, split the request, or raise queuedMax)');
  }

  /**
   * @internal Starts `entry` now or queues it (after `assertRoom`); `done` runs once, never
   * inside this call. A device whose `submit` throws took nothing: its slot and pages come
   * back and the throw propagates.
   */
  submit(entry: ClientRequest, done: DeviceDone): void {
    const heldBytes = entry.bouncePages * PAGE_SIZE;
    if (this.#limiter.tryAcquire(heldBytes)) {
      this.#start(entry, done);
      return;
    }
    const queued = this.#limiter.admit({
      heldBytes, start: () => this.#start(entry, done), reject: neverRejected,
    });
    assert.ok(queued, 'assertRoom admitted every request before the first was submitted');
  }

  /**
   * @internal Runs `entry` on the calling thread. Bounce pages come from the pool; when
   * asynchronous requests hold them, one request's worth of aligned memory is allocated for
   * this call and dropped after it, so the blocking path never waits.
   */
  submitBlocking(entry: ClientRequest): DeviceDoneError {
    const { device, request, bouncePages } = entry;
    assert.ok(device.submitSync !== undefined);
    if (bouncePages === 0) return device.submitSync(request);
    const pooled = this.#pool.tryTake(bouncePages);
    const pages = pooled ?? allocAlignedPages(bouncePages);
    try {
      const error = device.submitSync(bounceRequest(request, pages));
      if (error === null && request.op === 'read') copySegments(pages, request.segments);
      return error;
    } finally {
      if (pooled !== null) this.#pool.give(pooled);
    }
  }

  /** @internal Marks the client destroyed; resolves when all its work has completed. */
  destroy(): Promise<void> {
    this.#destroyed = true;
    if (this.inflight === 0 && this.queued === 0) {
      this.#pool.assertAllReturned();
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const previous = this.#drained;
      this.#drained = () => {
        previous?.();
        resolve();
      };
    });
  }

  /**
   * Hands an admitted request to its device, over bounce pages when it needs them. A device
   * that breaks the contract and completes inside `submit` gets its completion deferred to a
   * microtask, so `done` never runs inside `submit` and the queue is never re-entered.
   */
  #start(entry: ClientRequest, done: DeviceDone): void {
    let pages: Uint8Array[] | null = null;
    let request = entry.request;
    if (entry.bouncePages > 0) {
      pages = this.#pool.tryTake(entry.bouncePages);
      assert.ok(pages !== null, 'the limiter admits bounce requests only while pages are free');
      request = bounceRequest(request, pages);
    }
    let submitting = true;
    try {
      entry.device.submit(request, (error) => {
        if (submitting) queueMicrotask(() => this.#finish(entry, pages, done, error));
        else this.#finish(entry, pages, done, error);
      });
    } catch (error) {
      if (pages !== null) this.#pool.give(pages);
      this.#limiter.release(entry.bouncePages * PAGE_SIZE);
      throw error;
    } finally {
      submitting = false;
    }
  }

  #finish(
    entry: ClientRequest, pages: Uint8Array[] | null, done: DeviceDone, error: DeviceDoneError,
  ): void {
    if (pages !== null) {
      if (error === null && entry.request.op === 'read') {
        copySegments(pages, entry.request.segments);
      }
      this.#pool.give(pages);
    }
    this.#limiter.release(entry.bouncePages * PAGE_SIZE);
    try {
      done(error);
    } finally {
      this.#checkDrained();
    }
  }

  #checkDrained(): void {
    if (!this.#destroyed || this.inflight !== 0 || this.queued !== 0) return;
    const drained = this.#drained;
    if (drained === null) return;
    this.#drained = null;
    this.#pool.assertAllReturned();
    drained();
  }
}

type DeviceDoneError = Parameters<DeviceDone>[0];

/**
 * @internal Pool pages a request of `requestBytes` over `segments` needs to reach `device`:
 * 0 when the device takes any memory or every segment is aligned and whole logical blocks
 * (O_DIRECT), else enough pages for the whole request.
 */
export function bouncePagesFor(
  device: BlockDevice, segments: readonly Uint8Array[], requestBytes: number,
): number {
  const alignmentBytes = device.limits.memoryAlignmentBytes;
  if (alignmentBytes === 0 || segments.length === 0) return 0;
  const blockBytes = device.limits.logicalBlockBytes;
  for (const segment of segments) {
    if (!isAlignedView(segment, alignmentBytes) || segment.length % blockBytes !== 0) {
      return divCeil(requestBytes, PAGE_SIZE);
    }
  }
  return 0;
}

/** The same request over pool pages; a write's bytes are copied in first. */
function bounceRequest(request: DeviceRequest, pages: readonly Uint8Array[]): DeviceRequest {
  let remainingBytes = segmentsBytes(request.segments);
  const segments: Uint8Array[] = [];
  for (const page of pages) {
    const lengthBytes = Math.min(PAGE_SIZE, remainingBytes);
    segments.push(page.subarray(0, lengthBytes));
    remainingBytes -= lengthBytes;
  }
  assert.equal(remainingBytes, 0);
  if (request.op === 'write') copySegments(request.segments, segments);
  return { ...request, segments };
}

/** Copies the bytes of `from` (a list of views) into `to`, in order, up to the shorter total. */
function copySegments(from: readonly Uint8Array[], to: readonly Uint8Array[]): void {
  let fromIndex = 0;
  let fromOffset = 0;
  for (const target of to) {
    let targetOffset = 0;
    while (targetOffset < target.length) {
      const source = from[fromIndex];
      if (source === undefined) return;
      const lengthBytes = Math.min(source.length - fromOffset, target.length - targetOffset);
      target.set(source.subarray(fromOffset, fromOffset + lengthBytes), targetOffset);
      targetOffset += lengthBytes;
      fromOffset += lengthBytes;
      if (fromOffset === source.length) {
        fromIndex += 1;
        fromOffset = 0;
      }
    }
  }
}

/**
 * Creates a dm-io client that reserves its bounce pages, in-flight budget and queue bound up
 * front.
 *
 * @throws OutOfRangeError (`DMIO_ERR_OUT_OF_RANGE`) for limits outside their range.
 * @example
 * const client = dmIoClientCreate({ reservedPages: 256, inflightMax: 64 });
 * // ... dmIo({ op: 'read', mem, client }, regions) ...
 * await dmIoClientDestroy(client);
 */
export function dmIoClientCreate(options: DmIoClientOptions = {}): DmIoClient {
  validateOptionsObject(options, 'options');
  const reservedPages = validateIntegerInRange(options.reservedPages ??
    CLIENT_RESERVED_PAGES_DEFAULT, 'options.reservedPages', 1, CLIENT_RESERVED_PAGES_MAX);
  const inflightMax = validateIntegerInRange(options.inflightMax ?? CLIENT_INFLIGHT_DEFAULT,
    'options.inflightMax', 1, CLIENT_INFLIGHT_MAX);
  const queuedMax = validateIntegerInRange(options.queuedMax ?? CLIENT_QUEUED_DEFAULT,
    'options.queuedMax', 0, CLIENT_QUEUED_MAX);
  return new DmIoClient(reservedPages, inflightMax, queuedMax);
}

/**
 * Destroys a client: new requests on it throw `DMIO_ERR_CLIENT_DESTROYED`; the returned
 * promise resolves once every request already submitted has completed and every pool page has
 * come back. Idempotent.
 */
export function dmIoClientDestroy(client: DmIoClient): Promise<void> {
  if (!(client instanceof DmIoClient)) {
    throw new InvalidArgTypeError('client', 'a DmIoClient', client);
  }
  return client.destroy();
}
