// Owns the dm-io entry points and the one path every request takes, as the kernel's
// dm_io → dp_init → async_io → dispatch_io → do_region → submit_bio:
//   planRequest (request.ts: validated once) → dispatchRegions (dispatch.ts: every device
//   request planned, before any is submitted) → DmIoClient.assertRoom (the whole request
//   fits the client's queue, else DMIO_ERR_CLIENT_BUSY) → DmIoClient.submit → device.
// `dmIo` runs it with a Promise or a notify callback (the Promise form is the notify form with
// an internal callback, as sync_io is async_io plus a completion, and it adds the sync flag);
// `dmIoBlocking` runs the same plan on the calling thread through `submitBlocking`; kcopyd's
// chunks enter at `submitPlan` with a plan built from jobs it validated when they arrived.
// A request of one region that came to one device request completes without a tracker: its
// result is that request's outcome.

import assert from '../assert.js';
import type { DeviceDone } from '../devices/block-device.js';
import { StateError } from '../errors.js';
import type { DmIoClient } from './client.js';
import { dispatchRegions, type Dispatched, type PlannedRequest } from './dispatch.js';
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
  const plan = planRequest(request, regions, notify === null);
  const dispatched = admitted(plan);
  if (notify !== null) {
    start(plan, dispatched, (result) => notify.fn(result.errorBits, notify.context, result));
    return undefined;
  }
  // A device whose submit throws (a broken contract) rejects the Promise.
  return new Promise((resolve) => start(plan, dispatched, resolve));
}

/**
 * @internal Starts an already validated `plan` (the entry kcopyd uses for its chunks: its jobs
 * were validated when they were submitted); `complete` runs once, never before this returns.
 * @throws StateError `DMIO_ERR_CLIENT_BUSY`, with nothing submitted, when the client's queue
 * cannot hold the plan's device requests.
 */
export function submitPlan(plan: DmIoPlan, complete: (result: DmIoResult) => void): void {
  start(plan, admitted(plan), complete);
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
  const plan = planRequest(request, regions, true);
  for (const region of plan.regions) {
    if (!region.device.canBlock || region.device.submitSync === undefined) {
      throw new StateError('DMIO_ERR_CANNOT_BLOCK', region.device.name,
        'the device cannot complete requests without awaiting; use dmIo');
    }
  }
  const { client } = plan;
  const dispatched = dispatchRegions(plan);
  const only = onlyRequest(plan, dispatched);
  if (only !== null) return oneRequestResult(only, client.submitBlocking(only));
  let outcome: DmIoResult | null = null;
  const tracker = new IoTracker(plan.regions.length, (result) => {
    outcome = result;
  });
  issueTracked(dispatched, tracker, (entry, done) => done(client.submitBlocking(entry)));
  assert.ok(outcome !== null, 'a blocking request completes before it returns');
  return outcome;
}

/** The plan's device requests, once the client has room for all of them (else it throws). */
function admitted(plan: DmIoPlan): Dispatched {
  const dispatched = dispatchRegions(plan);
  plan.client.assertRoom(dispatched.requests);
  return dispatched;
}

/** Submits admitted requests; `complete` runs once, never before this returns. */
function start(
  plan: DmIoPlan, dispatched: Dispatched, complete: (result: DmIoResult) => void,
): void {
  const client: DmIoClient = plan.client;
  const only = onlyRequest(plan, dispatched);
  if (only !== null) {
    // The client never calls `done` inside `submit`, so this completion is already deferred.
    client.submit(only, (error) => complete(oneRequestResult(only, error)));
    return;
  }
  let issuing = true;
  const tracker = new IoTracker(plan.regions.length, (result) => {
    if (issuing) queueMicrotask(() => complete(result));
    else complete(result);
  });
  issueTracked(dispatched, tracker, (entry, done) => client.submit(entry, done));
  issuing = false;
}

/** Issues one planned request; `done` reports its outcome exactly once. */
type Issue = (entry: PlannedRequest, done: DeviceDone) => void;

/**
 * Reports the failed regions, then issues every request holding one tracker reference; a
 * failed read is zero-filled before its reference drops and errors name their region. The
 * bias is dropped last: when nothing was issued (no regions, only skipped or unsupported
 * ones) that drop completes the request. A device whose submit throws stops the loop: the
 * requests already out complete, but the request never does (the throw is the answer).
 */
function issueTracked(dispatched: Dispatched, tracker: IoTracker, issue: Issue): void {
  for (const failure of dispatched.failures) {
    for (const view of failure.unread ?? []) view.fill(0);
    tracker.take();
    tracker.drop(failure.regionIndex, failure.error);
  }
  for (const entry of dispatched.requests) {
    tracker.take();
    issue(entry, (error) => {
      tracker.drop(entry.regionIndex,
        error === null ? null : failedRequest(entry.request, error, entry.regionIndex));
    });
  }
  tracker.dropBias();
}

/** The one device request of a one-region plan that came to exactly one, else null. */
function onlyRequest(plan: DmIoPlan, dispatched: Dispatched): PlannedRequest | null {
  if (plan.regions.length !== 1 || dispatched.failures.length !== 0) return null;
  return dispatched.requests.length === 1 ? dispatched.requests[0] ?? null : null;
}

/** The result of a one-region request from its one device request's outcome. */
function oneRequestResult(entry: PlannedRequest, error: Parameters<DeviceDone>[0]): DmIoResult {
  if (error === null) return { errorBits: 0n, errors: [undefined] };
  return { errorBits: 1n, errors: [failedRequest(entry.request, error, 0)] };
}
