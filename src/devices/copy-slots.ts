// Owns how many `copy_file_range` calls (copy offload, file-copy-range.ts) run on libuv's
// threadpool at once, process-wide. Each is CPU work in the kernel (page cache to page cache,
// under the destination's inode lock), not waiting. kcopyd keeps two chunks in flight per job,
// each going to every destination, so three destinations put six calls on Node's four threads:
// two of them usually write the same file and spin on each other's inode lock. On a two-core
// machine, ten interleaved 1 GiB copies to three files took a median 0.75 s wall and 1.08 s
// CPU with two slots against 0.88 s and 1.36 s with four. So at most
// `max(2, availableParallelism())` run at once; the rest wait in submission order and start as
// running ones finish (through the event loop, which costs a few tens of µs per hand-off: fine
// for millisecond-long copies, too much for 1 MiB buffered writes, which measured half as fast
// with such a limit and so do not take slots). With four or more cores it binds no more than
// Node's default four threads do.

import { availableParallelism } from 'node:os';
import { InflightLimiter } from '../inflight-limiter.js';

/** Most `copy_file_range` calls running at once in this process. */
export const COPY_SLOTS_MAX = Math.max(2, availableParallelism());

/** Gives the slot back; call exactly once, when the copy has finished. */
export type ReleaseSlot = () => void;

/** Work that needs a slot; it receives the release and must call it exactly once. */
export type SlotWork = (release: ReleaseSlot) => void;

/**
 * The slots: the FIFO limiter NBD devices bound their commands with, counting calls only (no
 * payload bound). Waiting work is bounded by its callers (kcopyd's jobs in flight), not here.
 */
const slots = new InflightLimiter({
  requestsMax: COPY_SLOTS_MAX, bytesMax: Number.MAX_SAFE_INTEGER,
  waitingMax: Number.MAX_SAFE_INTEGER,
});

/** Waiting work is never taken back from the slots, so nothing is ever rejected. */
const neverRejected = (): void => undefined;

/** Copies running now and waiting for a slot (for tests and diagnostics). */
export function copySlotsInUse(): { readonly running: number; readonly waiting: number } {
  return { running: slots.requests, waiting: slots.waitingCount };
}

/**
 * Runs `work` now when a slot is free, else once one frees up (in submission order). A throw
 * from `work` started now gives the slot back and propagates to the caller; one started later
 * gives it back and is rethrown on the next tick, never into the completion that freed the slot.
 */
export function withCopySlot(work: SlotWork): void {
  let admitting = true;
  slots.admit({ payloadBytes: 0, start: () => start(work, !admitting), reject: neverRejected });
  admitting = false;
}

function start(work: SlotWork, deferred: boolean): void {
  let released = false;
  const release: ReleaseSlot = () => {
    if (released) return;
    released = true;
    slots.release(0);
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
