// Owns how many `copy_file_range` calls (copy offload, file-copy-range.ts) run on libuv's
// threadpool at once. Each is CPU work in the kernel (page cache to page cache, under the
// destination's inode lock), not waiting: kcopyd keeps two chunks in flight per job, each going
// to every destination, so three destinations put six calls on Node's four threads, two of
// which usually write the same file and spin on each other's inode lock. So at most `slotsMax`
// run at once (by default `max(2, availableParallelism())`); the rest wait in submission order
// and start as running ones finish. Buffered writes do not take slots: the hand-off through the
// event loop costs more than they gain. Devices share one default instance per thread
// (`defaultCopySlots`) unless given their own (`FileDeviceOptions.copySlots`).

import { availableParallelism } from 'node:os';
import { InflightLimiter } from '../inflight-limiter.js';
import { validateIntegerInRange } from '../validate.js';

/** Most `copy_file_range` calls running at once in the default slots. */
export const COPY_SLOTS_MAX = Math.max(2, availableParallelism());

/** Gives the slot back; call exactly once, when the copy has finished. */
export type ReleaseSlot = () => void;

/** Work that needs a slot; it receives the release and must call it exactly once. */
export type SlotWork = (release: ReleaseSlot) => void;

/** Waiting work is never taken back from the slots, so nothing is ever rejected. */
const neverRejected = (): void => undefined;

/**
 * A FIFO bound on copy offload calls running at once. Waiting work is bounded by its callers
 * (kcopyd's jobs in flight), not here.
 */
export class CopySlots {
  /** Most calls running at once. */
  readonly slotsMax: number;
  readonly #limiter: InflightLimiter;

  /**
   * Slots for at most `slotsMax` calls at once (default COPY_SLOTS_MAX).
   * @throws InvalidArgTypeError, OutOfRangeError when `slotsMax` is not a positive integer.
   */
  constructor(slotsMax: number = COPY_SLOTS_MAX) {
    validateIntegerInRange(slotsMax, 'slotsMax', 1, Number.MAX_SAFE_INTEGER);
    this.slotsMax = slotsMax;
    this.#limiter = new InflightLimiter({
      requestsMax: slotsMax, bytesMax: Number.MAX_SAFE_INTEGER,
      waitingMax: Number.MAX_SAFE_INTEGER,
    });
  }

  /** Copies running now and waiting for a slot (for tests and diagnostics). */
  get inUse(): { readonly running: number; readonly waiting: number } {
    return { running: this.#limiter.requests, waiting: this.#limiter.waitingCount };
  }

  /**
   * Runs `work` now when a slot is free, else once one frees up (in submission order). A throw
   * from `work` started now gives the slot back and propagates to the caller; one started later
   * gives it back and is rethrown on the next tick, never into the completion that freed it.
   */
  run(work: SlotWork): void {
    let admitting = true;
    this.#limiter.admit({
      heldBytes: 0, start: () => this.#start(work, !admitting), reject: neverRejected,
    });
    admitting = false;
  }

  #start(work: SlotWork, deferred: boolean): void {
    let released = false;
    const release: ReleaseSlot = () => {
      if (released) return;
      released = true;
      this.#limiter.release(0);
    };
    try {
      work(release);
    } catch (error) {
      release();
      if (!deferred) throw error;
      process.nextTick(() => {
        throw error;
      });
    }
  }
}

/** The default slots of this thread, made on first use. */
let defaultSlots: CopySlots | undefined;

/** The slots file devices share unless given their own: COPY_SLOTS_MAX calls at once. */
export function defaultCopySlots(): CopySlots {
  defaultSlots ??= new CopySlots();
  return defaultSlots;
}

/** Copies running and waiting in the default slots (for tests and diagnostics). */
export function copySlotsInUse(): { readonly running: number; readonly waiting: number } {
  return defaultCopySlots().inUse;
}
