// Owns the measuring loops of the workers. A closed loop keeps `depth` operations in flight:
// each completion issues the next one on the same slot until the deadline. The first
// `warmupMs` are not counted (ramp-up, JIT); counting starts at the first completion after the
// warm-up and stops at the last completion, so the drain after the deadline is measured with
// the operations it completes. Completion closures are made once per slot: the loop itself
// allocates nothing per operation, so what is measured is the code under test.

import { performance } from 'node:perf_hooks';
import type { WorkerMeasurement } from './jobs.js';

/** Starts one operation on `slot`; calls `done` exactly once when it completes. */
export type IssueFn = (slot: number, done: SlotDone) => void;
/** Completion of one operation. */
export type SlotDone = (error: Error | null) => void;

/** The timing window of a measured run. */
export interface LoopTiming {
  readonly warmupMs: number;
  readonly durationMs: number;
}

/** Runs `issue` with `depth` operations in flight for the warm-up plus the measured window. */
export function runClosedLoop(
  depth: number, timing: LoopTiming, issue: IssueFn,
): Promise<WorkerMeasurement> {
  return new Promise((resolve, reject) => {
    const warmEndMs = performance.now() + timing.warmupMs;
    const endMs = warmEndMs + timing.durationMs;
    let completed = 0;
    let countedFrom = -1;
    let countedFromMs = 0;
    let countedFromCpu: NodeJS.CpuUsage = process.cpuUsage();
    let active = depth;
    let failure: Error | null = null;
    const onDone = (slot: number): SlotDone => {
      const done = (error: Error | null): void => {
        completed += 1;
        if (error !== null) failure ??= error;
        const nowMs = performance.now();
        if (countedFrom < 0 && nowMs >= warmEndMs) {
          countedFrom = completed;
          countedFromMs = nowMs;
          countedFromCpu = process.cpuUsage();
        }
        if (nowMs < endMs && failure === null) {
          issue(slot, done);
          return;
        }
        active -= 1;
        if (active > 0) return;
        if (failure !== null) reject(failure);
        else {
          resolve({ ops: completed - countedFrom, bytes: 0, elapsedMs: nowMs - countedFromMs,
            cpuUs: cpuSince(countedFromCpu) });
        }
      };
      return done;
    };
    for (let slot = 0; slot < depth; slot += 1) issue(slot, onDone(slot));
  });
}

/** Runs `operation` back to back on this thread for the warm-up plus the measured window. */
export function runSyncLoop(timing: LoopTiming, operation: () => void): WorkerMeasurement {
  const warmEndMs = performance.now() + timing.warmupMs;
  while (performance.now() < warmEndMs) {
    for (let index = 0; index < 64; index += 1) operation();
  }
  const startMs = performance.now();
  const startCpu = process.cpuUsage();
  const endMs = startMs + timing.durationMs;
  let ops = 0;
  let nowMs = startMs;
  while (nowMs < endMs) {
    for (let index = 0; index < 64; index += 1) operation();
    ops += 64;
    nowMs = performance.now();
  }
  return { ops, bytes: 0, elapsedMs: nowMs - startMs, cpuUs: cpuSince(startCpu) };
}

/** CPU microseconds (user + system, all threads) since `start`. */
export function cpuSince(start: NodeJS.CpuUsage): number {
  const used = process.cpuUsage(start);
  return used.user + used.system;
}

/**
 * Issues `totalOps` operations (indexes 0, 1, 2, ...) with at most `depth` in flight and
 * resolves with the time from the first issue to the last completion.
 */
export function runCountedLoop(
  depth: number, totalOps: number, issue: (opIndex: number, slot: number, done: SlotDone) => void,
): Promise<WorkerMeasurement> {
  return new Promise((resolve, reject) => {
    const startMs = performance.now();
    const startCpu = process.cpuUsage();
    let nextOp = 0;
    let active = 0;
    let failure: Error | null = null;
    const onDone = (slot: number): SlotDone => {
      const done = (error: Error | null): void => {
        if (error !== null) failure ??= error;
        if (nextOp < totalOps && failure === null) {
          issue(nextOp++, slot, done);
          return;
        }
        active -= 1;
        if (active > 0) return;
        if (failure !== null) reject(failure);
        else {
          resolve({ ops: totalOps, bytes: 0, elapsedMs: performance.now() - startMs,
            cpuUs: cpuSince(startCpu) });
        }
      };
      return done;
    };
    for (let slot = 0; slot < depth && nextOp < totalOps; slot += 1) {
      active += 1;
      issue(nextOp++, slot, onDone(slot));
    }
    if (active === 0) resolve({ ops: 0, bytes: 0, elapsedMs: 0, cpuUs: 0 });
  });
}

/** A deterministic xorshift32 stream of block indexes below `blockCount`. */
export class RandomBlocks {
  #state: number;
  readonly #blockCount: number;

  constructor(seed: number, blockCount: number) {
    this.#state = (seed | 0) === 0 ? 0x9e3779b9 : seed | 0;
    this.#blockCount = blockCount;
  }

  /** The next block index. */
  next(): number {
    let x = this.#state;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.#state = x;
    return (x >>> 0) % this.#blockCount;
  }
}
