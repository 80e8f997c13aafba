// Owns the dm-io entry points: `dmIo` (asynchronous engine, with a Promise or a notify
// callback) and `dmIoBlocking` (the same region loop run to completion on the calling thread
// for devices that can block). Both validate first, so an argument error throws before
// anything is submitted. The Promise form is the notify form with an internal callback, as the
// kernel's sync_io is async_io plus a completion; it also adds the sync flag.

import assert from '../assert.js';
import type { BlockDevice, DeviceDone, DeviceRequest } from '../devices/block-device.js';
import { StateError } from '../errors.js';
import { dispatchRegions, type DispatchSink } from './dispatch.js';
import { planFast, runFast, runFastBlocking } from './fast-path.js';
import { failedRequest, IoTracker, type DmIoResult } from './io-tracker.js';
import {
  planRequest, validateNotify, type DmIoNotify, type DmIoPlan, type DmIoRegion, type DmIoRequest,
} from './request.js';

/**
 * Runs one dm-io request over up to 64 regions: a read from exactly one region, or a write,
 * discard or write-zeroes of the same data to every region.
 *
 * Without `request.notify` it returns a Promise that settles only after every region has
 * completed, resolving to `{ errorBits, errors }`: bit *i* of `errorBits` is set when region
 * *i* failed, and `errors[i]` is that region's first typed error. I/O errors never reject the
 * Promise. With `request.notify` it returns `undefined` at once and later calls
 * `notify.fn(errorBits, context, result)` exactly once, never before `dmIo` has returned.
 *
 * @throws InvalidArgTypeError, OutOfRangeError, InvalidRequestError, StateError — synchronously,
 * in both forms, with nothing submitted: wrong types, more than 64 regions
 * (`DMIO_ERR_TOO_MANY_REGIONS`), a read of several regions (`DMIO_ERR_MULTI_REGION_READ`), an
 * unknown memory type, memory shorter than a region (`DMIO_ERR_BUFFER_TOO_SHORT`), offsets not
 * on sector or logical-block boundaries (`DMIO_ERR_MISALIGNED`), a closed device, a write to a
 * read-only device, a destroyed client.
 * @example
 * const client = dmIoClientCreate();
 * const data = Buffer.alloc(4096, 0xab);
 * const { errorBits } = await dmIo({ op: 'write', mem: { type: 'kmem', data }, client },
 *   [{ device: a, sector: 0, count: 8 }, { device: b, sector: 0, count: 8 }]);
 */
export function dmIo<C>(
  request: DmIoRequest<C> & { notify: DmIoNotify<C> }, regions: readonly DmIoRegion[],
): undefined;
export function dmIo(request: DmIoRequest, regions: readonly DmIoRegion[]): Promise<DmIoResult>;
export function dmIo(
  request: DmIoRequest, regions: readonly DmIoRegion[],
): Promise<DmIoResult> | undefined {
  const notify = validateNotify((request as { notify?: unknown } | null)?.notify);
  const fast = planFast(request, regions, notify === null);
  if (fast !== null) {
    if (notify === null) return new Promise((resolve) => runFast(fast, resolve));
    runFast(fast, (result) => notify.fn(result.errorBits, notify.context, result));
    return undefined;
  }
  const plan = planRequest(request, regions, notify === null);
  if (notify !== null) {
    submitPlan(plan, (result) => notify.fn(result.errorBits, notify.context, result));
    return undefined;
  }
  return new Promise((resolve) => submitPlan(plan, resolve));
}

/**
 * @internal Starts an already validated `plan` (the entry kcopyd uses for its chunks: its jobs
 * were validated when they were submitted); `complete` runs once, never before this returns.
 */
export function submitPlan(plan: DmIoPlan, complete: (result: DmIoResult) => void): void {
  let dispatching = true;
  const tracker = new IoTracker(plan.regions.length, (result) => {
    if (dispatching) queueMicrotask(() => complete(result));
    else complete(result);
  });
  const sink = trackingSink(tracker, (device, deviceRequest, done) =>
    plan.client.submit(device, deviceRequest, done));
  dispatchRegions(plan, sink);
  // The bias is dropped while still "dispatching": when nothing was submitted (no regions,
  // only skipped or unsupported ones) this drop completes the request, and the callback must
  // still be deferred until after dmIo has returned.
  tracker.dropBias();
  dispatching = false;
}

/**
 * Runs a dm-io request to completion on the calling thread, for code that cannot await. Every
 * region's device must be able to block (files, block devices, RAM); the same validation,
 * region loop, zero-fill and error bits as `dmIo` apply. Bounce pages for O_DIRECT devices come
 * from the client's pool.
 *
 * @throws StateError `DMIO_ERR_CANNOT_BLOCK` when a region's device cannot block (NBD), plus
 * every argument error of `dmIo`.
 * @example
 * const { errorBits } = dmIoBlocking({ op: 'read', mem: { type: 'vm', data }, client },
 *   [{ device, sector: 0, count: 8 }]);
 */
export function dmIoBlocking(request: DmIoRequest, regions: readonly DmIoRegion[]): DmIoResult {
  if (validateNotify((request as { notify?: unknown } | null)?.notify) !== null) {
    throw new StateError('DMIO_ERR_CANNOT_BLOCK', 'request',
      'a blocking request takes no notify callback');
  }
  const fast = planFast(request, regions, true);
  if (fast !== null &&
      fast.devices.every((device) => device.canBlock && device.submitSync !== undefined)) {
    return runFastBlocking(fast);
  }
  const plan = planRequest(request, regions, true);
  for (const region of plan.regions) {
    if (!region.device.canBlock || region.device.submitSync === undefined) {
      throw new StateError('DMIO_ERR_CANNOT_BLOCK', region.device.name,
        'the device cannot complete requests without awaiting; use dmIo');
    }
  }
  let outcome: DmIoResult | null = null;
  const tracker = new IoTracker(plan.regions.length, (result) => {
    outcome = result;
  });
  const sink = trackingSink(tracker, (device, deviceRequest, done) =>
    done(plan.client.submitBlocking(device, deviceRequest)));
  dispatchRegions(plan, sink);
  tracker.dropBias();
  assert.ok(outcome !== null, 'a blocking request completes before it returns');
  return outcome;
}

/** Issues one device request and reports its outcome through `done`, exactly once. */
type Issue = (device: BlockDevice, request: DeviceRequest, done: DeviceDone) => void;

/**
 * The dispatch sink both engines share: each device request holds one tracker reference, a
 * failed read is zero-filled before its reference drops, and errors name their region.
 */
function trackingSink(tracker: IoTracker, issue: Issue): DispatchSink {
  return {
    submit(regionIndex, device, deviceRequest) {
      tracker.take();
      issue(device, deviceRequest, (error) => {
        tracker.drop(regionIndex,
          error === null ? null : failedRequest(deviceRequest, error, regionIndex));
      });
    },
    fail(regionIndex, error) {
      tracker.take();
      tracker.drop(regionIndex, error);
    },
  };
}
