// Owns the threadpool engine of local devices: each step of a request runs as a callback-style
// `fs` call or a libc call on libuv's threadpool (file-syscalls.ts). Its one shortcut: a small
// read step of a buffered device that allows it (`FileTarget.inlineReads`) is first tried inline
// from the page cache (file-inline-read.ts). It is the engine where io_uring is refused, on
// worker threads, with `engine: 'threadpool'`, and the io_uring engine's engine for the steps
// its ring does not take.

import type { FileEngine, FileTarget, StepCallback } from './file-engine.js';
import { InlineReads } from './file-inline-read.js';
import type { Step } from './file-steps.js';
import { runStepAsync } from './file-syscalls.js';

/** Runs steps on libuv's threadpool. Holds nothing that needs closing. */
export class ThreadpoolEngine implements FileEngine {
  /** Always `threadpool`. */
  readonly kind = 'threadpool' as const;
  readonly #inline = new InlineReads();

  /** Whether small cached reads are still tried inline by this engine. */
  get inlineReads(): boolean {
    return this.#inline.enabled;
  }

  /** Runs `step`; the threadpool's threads are shared, so `ioprio` is not applied. */
  runStep(target: FileTarget, step: Step, _ioprio: number, callback: StepCallback): void {
    if (this.#inline.tryRead(target, step, callback)) return;
    runStepAsync(target.fd, step, callback);
  }

  /** Nothing to release. */
  close(): void {
    // The threadpool is libuv's; inline completions drain on their own.
  }
}
