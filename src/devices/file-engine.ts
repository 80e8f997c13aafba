// Owns the contract of a local device's engine and the running of step programs on one. A
// `FileEngine` runs one step (file-steps.ts) at a time: the threadpool engine with callback `fs`
// and libc calls (file-threadpool-engine.ts), the io_uring engine through dmio's own ring
// (file-ring.ts). A device is given its engine when it opens (`chooseFileEngine`) and keeps it;
// the engine never looks at a request, only at a step. `runProgram`, `resumeProgram` and
// `runProgramSync` drive a request's step program (file-request.ts) on an engine or on the
// calling thread; which requests need a program at all is decided by the device (file-device.ts,
// its one check `isPlainTransfer`).

import { isMainThread } from 'node:worker_threads';
import type { FileDeviceOptions } from './file-open.js';
import type { Step, StepProgram, StepResult } from './file-steps.js';
import { runStepSync } from './file-syscalls.js';
import { IoUringEngine } from './file-ring.js';
import { ThreadpoolEngine } from './file-threadpool-engine.js';

/** Which engine runs a device's steps. */
export type FileEngineKind = 'threadpool' | 'io_uring';

/** The descriptor a step runs on, and what the engine may need to know about it. */
export interface FileTarget {
  /** The device's open descriptor. */
  readonly fd: number;
  /** Opened with O_DIRECT. */
  readonly direct: boolean;
  /** The threadpool engine may serve small reads of cached data inline (never with `direct`). */
  readonly inlineReads: boolean;
  /** Per-device counters the engine adds to (`inlineReads`, `inlineWrites`, `ringTransfers`). */
  readonly stats: { inlineReads: number; inlineWrites: number; ringTransfers: number };
}

/** Completion of one step; never called synchronously from `runStep`. */
export type StepCallback = (result: StepResult) => void;

/**
 * Runs the steps of local devices' requests. An engine may be shared by many devices (the
 * default one is); it never looks at a request, only at one step.
 */
export interface FileEngine {
  /** Which engine this is. */
  readonly kind: FileEngineKind;
  /**
   * Runs `step` on `target`; `callback` runs exactly once, on a later turn, with the bytes moved
   * or the error (a Node system error or a SysError, both with the errno name in `code`).
   * `ioprio` is the request's I/O priority (class << 13 | level); engines that cannot carry it
   * run the step at the process's priority.
   */
  runStep(target: FileTarget, step: Step, ioprio: number, callback: StepCallback): void;
  /**
   * Releases what the engine holds (the io_uring engine's rings) after what is in flight has
   * completed. Idempotent. Only the owner of an engine closes it: devices never do, and the
   * default engine lives as long as its thread.
   */
  close(): void;
}

/** The default engine of this thread, made on first use (see `defaultFileEngine`). */
let defaultEngine: FileEngine | undefined;

/**
 * The engine file devices share unless given their own (`FileDeviceOptions.engine`): an
 * `IoUringEngine` with its default options on the main thread, a `ThreadpoolEngine` on worker
 * threads (where no ring is made). Where the kernel refuses io_uring, the io_uring engine runs
 * every step on the threadpool. Made on first use and never closed: idle rings keep nothing
 * alive, and the buffered ring's polling thread sleeps RING_SQPOLL_IDLE_MS after its last read.
 * A caller who wants no polling thread passes `engine: 'threadpool'` or its own
 * `new IoUringEngine({ sqPollIdleMs: 0 })`.
 */
export function defaultFileEngine(): FileEngine {
  defaultEngine ??= isMainThread ? new IoUringEngine() : new ThreadpoolEngine();
  return defaultEngine;
}

/** The engine a device opened with `options` runs on. */
export function chooseFileEngine(options: FileDeviceOptions): FileEngine {
  const choice = options.engine ?? (options.ioUring === false ? 'threadpool' : 'io_uring');
  if (choice === 'io_uring') return defaultFileEngine();
  if (choice === 'threadpool') return new ThreadpoolEngine();
  return choice;
}

/**
 * Runs `program` on `engine` and hands its result to `done` on a later turn, also when the
 * program finishes without issuing any step.
 */
export function runProgram<T>(
  engine: FileEngine, target: FileTarget, ioprio: number, program: StepProgram<T>,
  done: (value: T) => void,
): void {
  const first = program.next();
  if (first.done === true) {
    process.nextTick(done, first.value);
    return;
  }
  engine.runStep(target, first.value, ioprio, resumer(engine, target, ioprio, program, done));
}

/**
 * Continues `program`, whose first step already ran on a later turn with `firstResult` (a
 * plain transfer that came back short or failed); `done` runs on this turn or a later one.
 */
export function resumeProgram<T>(
  engine: FileEngine, target: FileTarget, ioprio: number, program: StepProgram<T>,
  firstResult: StepResult, done: (value: T) => void,
): void {
  const first = program.next();
  if (first.done === true) {
    done(first.value);
    return;
  }
  resumer(engine, target, ioprio, program, done)(firstResult);
}

/** Runs `program` to completion on the calling thread, its first step result `firstResult`. */
export function runProgramSync<T>(
  fd: number, program: StepProgram<T>, firstResult?: StepResult,
): T {
  let next = program.next();
  if (next.done !== true && firstResult !== undefined) next = program.next(firstResult);
  while (next.done !== true) next = program.next(runStepSync(fd, next.value));
  return next.value;
}

/** The step callback that feeds each result to `program` and runs its next step. */
function resumer<T>(
  engine: FileEngine, target: FileTarget, ioprio: number, program: StepProgram<T>,
  done: (value: T) => void,
): StepCallback {
  const resume = (result: StepResult): void => {
    const next = program.next(result);
    if (next.done === true) done(next.value);
    else engine.runStep(target, next.value, ioprio, resume);
  };
  return resume;
}
