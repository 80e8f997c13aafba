// Owns inline reads of cached data, the threadpool engine's one shortcut. A small read step on
// a buffered (non-O_DIRECT) device is first tried on the calling thread with
// preadv2(RWF_NOWAIT), which copies from the page cache or fails at once with EAGAIN, never
// blocking; only a read that would need I/O goes to the threadpool. A threadpool round trip
// costs tens of microseconds of wake-ups where a cached 4 KiB copy costs one.
//
// Invariants: a callback never runs inside `tryRead` (completions are delivered by
// immediate-completions.ts); anything but a complete read (EAGAIN, a short read, an error)
// leaves nothing done and the step goes to the threadpool unchanged, which reports errors as
// always; an engine whose kernel refuses the flag stops trying.

import { MIB } from '../constants.js';
import { preadNowaitSync } from '../sys/libc.js';
import type { FileTarget, StepCallback } from './file-engine.js';
import type { Step } from './file-steps.js';
import { ImmediateCompletions } from './immediate-completions.js';

/** Largest read tried inline (1 MiB): a cached copy that size holds the loop about 0.1-0.2 ms. */
export const INLINE_READ_BYTES_MAX = MIB;

/** Errors after which this kernel or filesystem will never serve RWF_NOWAIT reads. */
const REFUSED = new Set(['EOPNOTSUPP', 'ENOSYS', 'EINVAL']);

/** The inline-read state of one threadpool engine. */
export class InlineReads {
  #enabled = true;
  readonly #completions = new ImmediateCompletions();

  /** Whether inline reads are still tried (false once the kernel refused the flag). */
  get enabled(): boolean {
    return this.#enabled;
  }

  /**
   * Serves the read `step` from the page cache when it can; returns false, having done nothing,
   * when it must go to the threadpool.
   */
  tryRead(target: FileTarget, step: Step, callback: StepCallback): boolean {
    if (!this.#enabled || !target.inlineReads || step.kind !== 'read' || step.buffers.length !== 1) return false;
    const buffer = step.buffers[0] as Uint8Array;
    if (buffer.length === 0 || buffer.length > INLINE_READ_BYTES_MAX) return false;
    let result: ReturnType<typeof preadNowaitSync>;
    try {
      result = preadNowaitSync(target.fd, buffer, step.positionBytes);
    } catch {
      this.#enabled = false; // No libc bindings here: never try again.
      return false;
    }
    if (typeof result !== 'number') {
      if (REFUSED.has(result.code)) this.#enabled = false;
      return false;
    }
    if (result !== buffer.length) return false;
    target.stats.inlineReads += 1;
    this.#completions.push(callback, { bytes: result, error: null });
    return true;
  }
}
