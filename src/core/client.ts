// Owns the dm-io client: the bounded resources every request draws on, reserved up front. A
// client holds an aligned page pool (bounce pages for O_DIRECT devices when caller memory is
// not aligned) and a limit on device requests in flight. Requests beyond either limit wait in
// FIFO order and start as earlier ones complete; memory never grows with load.
//
// Invariants: `#inflight <= inflightMax`; a waiting request starts only when everything queued
// before it has started (no overtaking); every bounce page goes back to the pool before the
// request's `done` runs; `destroy` resolves only when nothing is in flight or waiting.

import assert from '../assert.js';
import {
  CLIENT_INFLIGHT_DEFAULT, CLIENT_INFLIGHT_MAX, CLIENT_RESERVED_PAGES_DEFAULT,
  CLIENT_RESERVED_PAGES_MAX, PAGE_SIZE,
} from '../constants.js';
import type { BlockDevice, DeviceDone, DeviceRequest } from '../devices/block-device.js';
import { segmentsBytes } from '../devices/block-device.js';
import { InvalidArgTypeError, StateError } from '../errors.js';
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
}

/** A request waiting for an in-flight slot or for bounce pages. */
interface PendingRequest {
  readonly device: BlockDevice;
  readonly request: DeviceRequest;
  readonly done: DeviceDone;
  readonly bouncePages: number;
}

/**
 * The resources dm-io requests draw on. Create with `dmIoClientCreate`, release with
 * `dmIoClientDestroy`.
 */
export class DmIoClient {
  /** Pages in the bounce pool. */
  readonly reservedPages: number;
  /** Most device requests in flight at once. */
  readonly inflightMax: number;
  readonly #pool: PagePool;
  readonly #pending: PendingRequest[] = [];
  #pendingHead = 0;
  #inflight = 0;
  #destroyed = false;
  #drained: (() => void) | null = null;

  /** @internal Use `dmIoClientCreate`. */
  constructor(reservedPages: number, inflightMax: number) {
    this.reservedPages = reservedPages;
    this.inflightMax = inflightMax;
    this.#pool = new PagePool(reservedPages);
  }

  /** Device requests in flight now. */
  get inflight(): number {
    return this.#inflight;
  }

  /** Device requests waiting for a slot or for pages. */
  get queued(): number {
    return this.#pending.length - this.#pendingHead;
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
   * @internal Starts `request` on `device` now or queues it; `done` runs once. `aligned`: the
   * caller already checked that the memory needs no bounce (dm-io's fast path does).
   */
  submit(device: BlockDevice, request: DeviceRequest, done: DeviceDone, aligned = false): void {
    const bounce = !aligned && needsBounce(device, request);
    if (!bounce && this.#inflight < this.inflightMax && this.queued === 0) {
      this.#submitDirect(device, request, done);
      return;
    }
    const bouncePages = bounce ? divCeil(segmentsBytes(request.segments), PAGE_SIZE) : 0;
    assert.ok(bouncePages <= this.reservedPages, 'dispatch caps requests to the pool');
    const pending: PendingRequest = { device, request, done, bouncePages };
    if (this.queued === 0 && this.#tryStart(pending)) return;
    this.#pending.push(pending);
  }

  /**
   * @internal Runs `request` on `device` on the calling thread. Bounce pages come from the
   * pool; when asynchronous requests hold them, one request's worth of aligned memory is
   * allocated for this call and dropped after it, so the blocking path never waits. `aligned`
   * as for `submit`.
   */
  submitBlocking(device: BlockDevice, request: DeviceRequest, aligned = false): DeviceDoneError {
    assert.ok(device.submitSync !== undefined);
    if (aligned || !needsBounce(device, request)) return device.submitSync(request);
    const pageCount = divCeil(segmentsBytes(request.segments), PAGE_SIZE);
    const pooled = this.#pool.tryTake(pageCount);
    const pages = pooled ?? allocAlignedPages(pageCount);
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
    if (this.#inflight === 0 && this.queued === 0) {
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

  #tryStart(pending: PendingRequest): boolean {
    if (this.#inflight >= this.inflightMax) return false;
    if (pending.bouncePages === 0) {
      this.#inflight += 1;
      this.#submitTo(pending, pending.request, null);
      return true;
    }
    const pages = this.#pool.tryTake(pending.bouncePages);
    if (pages === null) return false;
    this.#inflight += 1;
    this.#submitTo(pending, bounceRequest(pending.request, pages), pages);
    return true;
  }

  /**
   * Hands `request` to the device. A device that breaks the contract and completes inside
   * `submit` would re-enter `#pump` while the entry being started is still at the queue's head
   * and start it again, endlessly; such a completion is deferred to a microtask instead.
   */
  #submitTo(pending: PendingRequest, request: DeviceRequest, pages: Uint8Array[] | null): void {
    let submitting = true;
    try {
      pending.device.submit(request, (error) => {
        if (submitting) queueMicrotask(() => this.#finish(pending, pages, error));
        else this.#finish(pending, pages, error);
      });
    } catch (error) {
      // A device that throws from `submit` took nothing: its slot and pages come back.
      this.#inflight -= 1;
      if (pages !== null) this.#pool.give(pages);
      throw error;
    } finally {
      submitting = false;
    }
  }

  /**
   * Starts a request that needs no bounce pages while a slot is free and nothing waits: the
   * common case, with one closure and no queue record. A completion inside `submit` (a device
   * breaking the contract) is deferred, as in `#submitTo`.
   */
  #submitDirect(device: BlockDevice, request: DeviceRequest, done: DeviceDone): void {
    this.#inflight += 1;
    let submitting = true;
    try {
      device.submit(request, (error) => {
        if (submitting) queueMicrotask(() => this.#finishDirect(done, error));
        else this.#finishDirect(done, error);
      });
    } catch (error) {
      // A device that throws from `submit` (a broken invariant) took nothing in flight.
      this.#inflight -= 1;
      throw error;
    } finally {
      submitting = false;
    }
  }

  #finishDirect(done: DeviceDone, error: DeviceDoneError): void {
    assert.ok(this.#inflight > 0);
    this.#inflight -= 1;
    this.#pump();
    try {
      done(error);
    } finally {
      this.#checkDrained();
    }
  }

  #finish(pending: PendingRequest, pages: Uint8Array[] | null, error: DeviceDoneError): void {
    assert.ok(this.#inflight > 0);
    this.#inflight -= 1;
    if (pages !== null) {
      if (error === null && pending.request.op === 'read') {
        copySegments(pages, pending.request.segments);
      }
      this.#pool.give(pages);
    }
    this.#pump();
    try {
      pending.done(error);
    } finally {
      this.#checkDrained();
    }
  }

  #pump(): void {
    while (this.queued > 0) {
      const next = this.#pending[this.#pendingHead];
      assert.ok(next !== undefined);
      if (!this.#tryStart(next)) break;
      this.#pending[this.#pendingHead] = undefined as unknown as PendingRequest;
      this.#pendingHead += 1;
    }
    if (this.#pendingHead > 1024 && this.#pendingHead * 2 > this.#pending.length) {
      this.#pending.splice(0, this.#pendingHead);
      this.#pendingHead = 0;
    }
  }

  #checkDrained(): void {
    if (!this.#destroyed || this.#inflight !== 0 || this.queued !== 0) return;
    const drained = this.#drained;
    if (drained === null) return;
    this.#drained = null;
    this.#pool.assertAllReturned();
    drained();
  }
}

type DeviceDoneError = Parameters<DeviceDone>[0];

/** True when a request's memory cannot go to the device as it is (O_DIRECT alignment). */
function needsBounce(device: BlockDevice, request: DeviceRequest): boolean {
  const alignmentBytes = device.limits.memoryAlignmentBytes;
  if (alignmentBytes === 0 || request.segments.length === 0) return false;
  const blockBytes = device.limits.logicalBlockBytes;
  for (const segment of request.segments) {
    if (!isAlignedView(segment, alignmentBytes)) return true;
    if (segment.length % blockBytes !== 0) return true;
  }
  return false;
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
 * Creates a dm-io client that reserves its bounce pages and in-flight budget up front.
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
  return new DmIoClient(reservedPages, inflightMax);
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
