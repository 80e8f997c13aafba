// Owns the completions of steps an engine ran on the calling thread (inline cached reads,
// inline buffered writes): they wait in a queue drained by one `setImmediate`, so a step's
// callback never runs inside `runStep`, the event loop still polls between batches, and a
// closed loop of inline steps cannot starve timers or I/O.

import { callUser } from '../call-user.js';
import type { StepCallback } from './file-engine.js';
import type { StepResult } from './file-steps.js';

/** Step completions delivered together on the next check phase of the event loop. */
export class ImmediateCompletions {
  #pending: Array<{ callback: StepCallback; result: StepResult }> = [];
  #scheduled = false;

  /** Queues `callback(result)` for the next drain. */
  push(callback: StepCallback, result: StepResult): void {
    this.#pending.push({ callback, result });
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
    for (const { callback, result } of batch) callUser(() => callback(result));
  }
}
