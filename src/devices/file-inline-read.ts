// Owns inline reads of cached data. A small plain read on a buffered (non-O_DIRECT) device is
// first tried on the calling thread with preadv2(RWF_NOWAIT), which copies from the page cache
// or fails at once with EAGAIN, never blocking; only a read that would need I/O goes to the
// threadpool. A threadpool round trip costs tens of microseconds of wake-ups on a small machine
// where a cached 4 KiB copy costs one, so cached reads gain several times their throughput.
//
// Invariants: `done` never runs inside `submit` — completions wait in a queue drained by one
// `setImmediate`, so the event loop still polls between batches and a closed loop of reads
// cannot starve timers or I/O; anything but a complete read (EAGAIN, a short read, an error)
// leaves nothing done and the request takes the general path unchanged, which reports errors
// as always; a device whose kernel refuses the flag stops trying.

import { callUser } from '../call-user.js';
import type { IoError } from '../errors.js';
import { preadNowaitSync } from '../sys/libc.js';
import { libuvFileEngine } from '../sys/libuv-engine.js';
import { sectorsToBytes } from '../units.js';
import type { DeviceDone, DeviceRequest } from './block-device.js';
import type { FileRequestContext } from './file-request.js';

/**
 * Largest read tried inline (1 MiB): a cached copy of that size holds the event loop for about
 * 0.1-0.2 ms, a bounded pause, and measured faster than a threadpool trip even for kcopyd's
 * chunks (the reads run here while pool threads write). Larger reads go to the threadpool.
 */
export const INLINE_READ_BYTES_MAX = 1024 * 1024;

/**
 * Under libuv's io_uring engine, requests in flight on the device (this one included) above
 * which a read goes to the ring instead: there the kernel's polling thread copies on the other
 * core, which beats copying on the event loop once several reads are queued, while a lone
 * read still completes sooner inline (measured in docs/performance.md).
 */
export const INLINE_READ_RING_INFLIGHT_MAX = 2;

/** Errors after which this kernel or filesystem will never serve RWF_NOWAIT reads. */
const REFUSED = new Set(['EOPNOTSUPP', 'ENOSYS', 'EINVAL']);

/** The inline-read state of one device. */
export class InlineReads {
  #enabled: boolean;
  #pending: Array<DeviceDone> = [];
  #scheduled = false;

  constructor(enabled: boolean) {
    this.#enabled = enabled;
  }

  /** Whether inline reads are still tried on this device. */
  get enabled(): boolean {
    return this.#enabled;
  }

  /**
   * Serves `request` from the page cache when it can; returns false, having done nothing,
   * when the request must take the general path.
   */
  tryRead(
    context: FileRequestContext, fd: number, request: DeviceRequest, done: DeviceDone,
    inflightCount: number,
  ): boolean {
    if (!this.#enabled || !eligible(context, request)) return false;
    if (inflightCount > INLINE_READ_RING_INFLIGHT_MAX && libuvFileEngine() === 'io_uring') {
      return false;
    }
    const segment = request.segments[0] as Uint8Array;
    let result: ReturnType<typeof preadNowaitSync>;
    try {
      result = preadNowaitSync(fd, segment, sectorsToBytes(request.sector));
    } catch {
      this.#enabled = false; // No libc bindings here: never try again.
      return false;
    }
    if (typeof result !== 'number') {
      if (REFUSED.has(result.code)) this.#enabled = false;
      return false;
    }
    if (result !== segment.length) return false;
    context.stats.inlineReads += 1;
    this.#complete(done);
    return true;
  }

  #complete(done: DeviceDone): void {
    this.#pending.push(done);
    if (this.#scheduled) return;
    this.#scheduled = true;
    setImmediate(() => this.#drain());
  }

  /**
   * Completes one batch. Each completion is isolated: a callback that throws is rethrown on a
   * later tick, so it cannot strand the rest of the batch (their in-flight counts and `close()`
   * would never settle).
   */
  #drain(): void {
    const batch = this.#pending;
    this.#pending = [];
    this.#scheduled = false;
    const success: IoError | null = null;
    for (const done of batch) callUser(() => done(success));
  }
}

function eligible(context: FileRequestContext, request: DeviceRequest): boolean {
  if (request.op !== 'read' || request.flags.preflush || request.flags.fua) return false;
  if (request.segments.length !== 1) return false;
  const lengthBytes = sectorsToBytes(request.countSectors);
  if (lengthBytes === 0 || lengthBytes > INLINE_READ_BYTES_MAX) return false;
  if (request.segments[0]?.length !== lengthBytes) return false;
  return !context.closed && request.sector + request.countSectors <= context.sizeSectors;
}
