// Owns the io_uring engine of local devices: read and write steps go to one of its two rings of
// dmio's own (sys/io-uring.ts); every other step, and any transfer a ring does not take (more
// than URING_IOVECS_PER_ENTRY_MAX buffers, memory that could move, a full ring), to the
// threadpool engine it holds. A device opened with O_DIRECT sends its reads and writes to the
// direct ring; a buffered device sends its reads to the buffered ring, and its writes to the
// threadpool while that ring has a polling thread (the default: ext4 hands a buffered write
// from io_uring to a kernel worker, and a lone small write waits longer that way than on the
// threadpool), to the buffered ring when it has none (`sqPollIdleMs: 0`, the server's engine):
// a batch of writes then costs one io_uring_enter instead of a thread wake-up per write and an
// event-loop wake-up per completion, and the kernel's worker writes one file's entries in turn,
// as ext4's inode lock serialises the threadpool's writes to one file anyway (measured in
// docs/performance.md, "Serve writes"). An engine made with `inlineWrites` (the server's) first
// offers each buffered write to file-inline-write.ts, which copies whole pages into the page
// cache on the calling thread while the kernel is far from throttling writers, and saves the
// worker's wake-up. The buffered ring's default kernel polling thread
// (SQPOLL) takes each entry as it is published and whose wake-ups busy-wait briefly for the
// next completion: cached reads complete within microseconds. Without that thread, a buffered
// read of 64 KiB or more prepared while another request is in flight goes to one of the
// kernel's io-wq workers (`offloadBusyReads`), so copying it out of the page cache runs on the
// other core instead of inside the event loop's io_uring_enter; a cached read on an idle ring,
// or a smaller one, is copied inline, where the hand-off costs more than it saves
// (docs/performance.md, "Serve reads on the kernel's workers"). An O_DIRECT read never needs
// that: the block layer completes it. The direct ring has no polling thread by default: a
// batch is submitted with one io_uring_enter per event-loop task, which leaves the
// second core to the device (a loop device's worker). Both are made on first use; a ring the
// kernel refuses leaves its steps on the threadpool. The step's I/O priority goes into the
// entry's ioprio field.
// Measurements behind these choices: docs/performance.md.

import { AssertionError } from 'node:assert';
import { isMainThread } from 'node:worker_threads';
import { IOPRIO_DEFAULT } from '../constants.js';
import { IoUring, SQPOLL_IDLE_MS_MAX } from '../sys/io-uring.js';
import { SysError } from '../sys/libc.js';
import { validateBoolean, validateIntegerInRange, validateOptionsObject } from '../validate.js';
import type { FileEngine, FileTarget, StepCallback } from './file-engine.js';
import type { Step } from './file-steps.js';
import { InlineWrites } from './file-inline-write.js';
import { ThreadpoolEngine } from './file-threadpool-engine.js';

/** Entries of each ring: steps in flight on it, over all devices of the engine. */
export const RING_ENTRIES = 128;

/**
 * How long a ring's kernel polling thread keeps polling after its last request. While it polls
 * it occupies a core; after that a new batch costs one wake-up call.
 */
export const RING_SQPOLL_IDLE_MS = 10;

/**
 * How long a wake-up of the buffered ring waits for the next completion while callbacks keep
 * it fed: a cached read completes within a few microseconds of its submission.
 */
export const BUFFERED_RING_SPIN_US = 20;

/** How an io_uring engine sets up its rings. */
export interface IoUringEngineOptions {
  /**
   * Milliseconds the buffered ring's kernel polling thread (SQPOLL) keeps polling after its
   * last request (default RING_SQPOLL_IDLE_MS); 0 sets that ring up without a polling thread,
   * so no core ever spins for it (cached reads then cost one system call per batch), sends
   * buffered writes to that ring too instead of the threadpool, and hands reads of 64 KiB or
   * more prepared behind others to the kernel's workers (`offloadBusyReads`).
   */
  readonly sqPollIdleMs?: number;
  /**
   * Milliseconds the direct (O_DIRECT) ring's polling thread keeps polling; 0, the default,
   * gives it none.
   */
  readonly directSqPollIdleMs?: number;
  /**
   * Runs a buffered write on the calling thread, straight into the page cache, when it is
   * whole pages of at most 1 MiB and the kernel is far from throttling writers; it goes back
   * to the ring for a while after one that stalled (file-inline-write.ts). Default false:
   * `dmio serve`'s engine sets it, where a kernel worker's wake-up per write cost more than
   * the copy.
   */
  readonly inlineWrites?: boolean;
}

/**
 * The priority an entry carries: the request's, except dm-io's default (`IOPRIO_DEFAULT`, what
 * a caller gets who asked for none), which becomes 0 so the kernel applies the process's own
 * priority (`ionice`) as it does for the threadpool's system calls.
 */
export function ringIoprio(ioprio: number): number {
  return ioprio === IOPRIO_DEFAULT ? 0 : ioprio;
}

/**
 * Runs reads and O_DIRECT writes on dmio's own io_uring (buffered writes too when the buffered
 * ring has no polling thread), everything else on the threadpool.
 */
export class IoUringEngine implements FileEngine {
  /** Always `io_uring`. */
  readonly kind = 'io_uring' as const;
  readonly #threadpool = new ThreadpoolEngine();
  readonly #sqPollIdleMs: number;
  readonly #directSqPollIdleMs: number;
  /** Inline buffered writes, when the options asked for them. */
  readonly #inlineWrites: InlineWrites | null;
  /** The rings: undefined until first asked for, null once refused. */
  #direct: IoUring | null | undefined;
  #buffered: IoUring | null | undefined;
  #closed = false;

  /**
   * An engine whose rings are made on first use. Call `close()` when done with it (the default
   * engine is never closed).
   * @throws InvalidArgTypeError (`DMIO_ERR_INVALID_ARG_TYPE`) for options that are not an object
   * or an idle time that is not a number, or `inlineWrites` that is not a boolean; OutOfRangeError (`DMIO_ERR_OUT_OF_RANGE`) for one
   * that is not an integer from 0 to SQPOLL_IDLE_MS_MAX. (A ring the kernel refuses is not an
   * error: its steps run on the threadpool.)
   */
  constructor(options: IoUringEngineOptions = {}) {
    validateOptionsObject(options, 'options');
    this.#sqPollIdleMs = validateIntegerInRange(options.sqPollIdleMs ?? RING_SQPOLL_IDLE_MS,
      'options.sqPollIdleMs', 0, SQPOLL_IDLE_MS_MAX);
    this.#directSqPollIdleMs = validateIntegerInRange(options.directSqPollIdleMs ?? 0,
      'options.directSqPollIdleMs', 0, SQPOLL_IDLE_MS_MAX);
    this.#inlineWrites = validateBoolean(options.inlineWrites, 'options.inlineWrites', false) ?
      new InlineWrites() : null;
  }

  /** The inline-write counters (stalls, headroom readings); null without `inlineWrites`. */
  get inlineWriteCounters(): Readonly<InlineWrites['counters']> | null {
    return this.#inlineWrites?.counters ?? null;
  }

  /**
   * The ring for devices opened with or without O_DIRECT, made now if needed; undefined where
   * the kernel refuses io_uring or the engine is closed.
   */
  ring(direct: boolean): IoUring | undefined {
    if (this.#closed) return undefined;
    let ring = direct ? this.#direct : this.#buffered;
    if (ring === undefined) {
      ring = makeRing(direct ? this.#directSqPollIdleMs : this.#sqPollIdleMs, !direct);
      if (direct) this.#direct = ring;
      else this.#buffered = ring;
    }
    return ring ?? undefined;
  }

  /**
   * Runs `step`: inline when it is a buffered write `inlineWrites` takes, on a ring when it is
   * a transfer a ring takes, else on the threadpool.
   */
  runStep(target: FileTarget, step: Step, ioprio: number, original: StepCallback): void {
    let callback = original;
    if (this.#inlineWrites !== null && step.kind !== 'read' && !target.direct) {
      if (!this.#closed && this.#inlineWrites.tryWrite(target, step, callback)) return;
      callback = this.#inlineWrites.offLoop(target, callback);
    }
    const ringTakes = step.kind === 'read' ||
      (step.kind === 'write' && (target.direct || this.#sqPollIdleMs === 0));
    if (ringTakes && this.#tryRing(target, step, ioprio, callback)) return;
    this.#threadpool.runStep(target, step, ioprio, callback);
  }

  #tryRing(
    target: FileTarget, step: Extract<Step, { kind: 'read' | 'write' }>, ioprio: number,
    callback: StepCallback,
  ): boolean {
    const ring = this.ring(target.direct);
    if (ring === undefined) return false;
    let stepBytes = 0;
    for (const buffer of step.buffers) stepBytes += buffer.length;
    const op = step.kind;
    return ring.prepareTransfer(target.fd, op, step.buffers, step.positionBytes,
      ringIoprio(ioprio), (result) => {
        if (result === stepBytes) target.stats.ringTransfers += 1;
        callback(result >= 0 ? { bytes: result, error: null } :
          { bytes: 0, error: new SysError(-result, op) });
      });
  }

  /**
   * Completes what is on the rings, then releases them; later steps run on the threadpool.
   * Idempotent; not from inside a completion callback.
   */
  close(): void {
    this.#closed = true;
    this.#direct?.close();
    this.#buffered?.close();
    this.#direct = null;
    this.#buffered = null;
  }
}

function makeRing(sqPollIdleMs: number, buffered: boolean): IoUring | null {
  // A worker thread's loop is torn down with koffi's poll handle still on it, which crashes
  // the process when the worker exits (seen on Node 20): rings live on the main thread only.
  if (!isMainThread) return null;
  try {
    return IoUring.create(RING_ENTRIES, {
      sqPollIdleMs, spinUs: buffered && sqPollIdleMs > 0 ? BUFFERED_RING_SPIN_US : 0,
      offloadBusyReads: buffered && sqPollIdleMs === 0,
    });
  } catch (error) {
    // A failed assertion is a bug (assert.ts: the library never catches one), not a refusal.
    if (error instanceof AssertionError) throw error;
    return null; // ENOSYS, EPERM (seccomp, io_uring_disabled), no bindings: the threadpool.
  }
}
