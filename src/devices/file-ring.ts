// Owns the io_uring path of local devices: which of this thread's two rings a plain read or write
// goes to, and how its completion joins the request logic. Both rings have a kernel polling thread
// (SQPOLL) that takes each entry as it is published and completes it while the event loop runs
// JavaScript. A device opened with O_DIRECT sends its reads and writes to one; a buffered device
// sends its reads to the other, whose wake-ups also busy-wait briefly for the next completion
// (cached reads complete within microseconds; O_DIRECT ones measured no faster that way).
// Buffered writes stay on the threadpool: ext4 hands a buffered write from io_uring to a kernel
// worker, measured slower than the threadpool (docs/performance.md). Both rings are made on first
// use; a kernel or sandbox that refuses io_uring turns the path off for the process, worker threads
// never use it (see makeRing), and a full ring sends the request to the other paths. A call that
// comes back short or failed continues in the general transfer loop, exactly as on the fast path,
// so the semantics stay those of file-request.ts. The request's I/O priority goes into the
// entry's ioprio field, so the kernel schedules ring I/O with it; requests on the other paths
// (the threadpool, whose threads are shared, and the calling thread's own system calls) run
// at the process's priority.

import { isMainThread } from 'node:worker_threads';
import { IOPRIO_DEFAULT } from '../constants.js';
import { sectorsToBytes } from '../units.js';
import type { IoError } from '../errors.js';
import { IoUring, URING_IOVECS_PER_ENTRY_MAX } from '../sys/io-uring.js';
import { SysError } from '../sys/libc.js';
import type { DeviceRequest } from './block-device.js';
import { finishFastCall, takesFastPath } from './file-fast-path.js';
import type { FileRequestContext } from './file-request.js';

/** Entries of each ring: requests in flight on it, over all devices of this thread. */
export const RING_ENTRIES = 128;

/**
 * How long each ring's kernel thread keeps polling after its last request. While it polls it
 * occupies a core; after that a new batch costs one wake-up call.
 */
export const RING_SQPOLL_IDLE_MS = 10;

/**
 * How long a wake-up of the buffered ring waits for the next completion while callbacks keep
 * it fed: a cached read completes within a few microseconds of its submission.
 */
export const BUFFERED_RING_SPIN_US = 20;

/** The two rings of this thread: undefined until first asked for, null once refused. */
const rings: { direct?: IoUring | null; buffered?: IoUring | null } = {};

function makeRing(direct: boolean): IoUring | null {
  // A worker thread's loop is torn down with koffi's poll handle still on it, which crashes
  // the process when the worker exits (seen on Node 20): rings live on the main thread only.
  if (!isMainThread) return null;
  try {
    return IoUring.create(RING_ENTRIES,
      { sqPollIdleMs: RING_SQPOLL_IDLE_MS, spinUs: direct ? 0 : BUFFERED_RING_SPIN_US });
  } catch {
    return null; // ENOSYS, EPERM (seccomp, io_uring_disabled), no bindings: use the others.
  }
}

/**
 * The priority an entry carries: the request's, except dm-io's default (`IOPRIO_DEFAULT`, what
 * a caller gets who asked for none), which becomes 0 so the kernel applies the process's own
 * priority (`ionice`) as it does for the threadpool's system calls.
 */
export function ringIoprio(ioprio: number): number {
  return ioprio === IOPRIO_DEFAULT ? 0 : ioprio;
}

/** The ring for a device opened with or without O_DIRECT; undefined where there is none. */
export function deviceRing(direct: boolean): IoUring | undefined {
  const key = direct ? 'direct' : 'buffered';
  let ring = rings[key];
  if (ring === undefined) {
    ring = makeRing(direct);
    rings[key] = ring;
  }
  return ring ?? undefined;
}

/**
 * Issues `request` through the device's ring when it can; returns false, having done nothing,
 * when it must take another path. `done` runs exactly once, after this returns (from the ring's
 * poll callback or, on the buffered ring, from a later microtask's wait for completions).
 */
export function submitRing(
  context: FileRequestContext, fd: number, direct: boolean, request: DeviceRequest,
  done: (error: IoError | null) => void,
): boolean {
  if (!direct && request.op !== 'read') return false;
  if (request.segments.length > URING_IOVECS_PER_ENTRY_MAX) return false;
  if (!takesFastPath(context, request)) return false;
  const ring = deviceRing(direct);
  if (ring === undefined) return false;
  const lengthBytes = sectorsToBytes(request.countSectors);
  // takesFastPath admitted only reads and writes.
  const op = request.op as 'read' | 'write';
  return ring.prepareTransfer(fd, op, request.segments, sectorsToBytes(request.sector),
    ringIoprio(request.ioprio), (result) => {
      if (result === lengthBytes) context.stats.ringTransfers += 1;
      if (result >= 0) finishFastCall(context, fd, request, result, null, done);
      else finishFastCall(context, fd, request, 0, new SysError(-result, op), done);
    });
}
