// Owns the vocabulary between the server's command logic and the code that runs it. Each NBD
// command is written once, as a generator (an `IoProgram`) that yields one `IoStep` at a time
// and receives its answer: a dm-io request to the export's device, a range of the export's
// RangeLock, or one `extents` query. Two runners execute the steps, so both server drivers
// mean the same thing by a command:
//   runIoProgram          the event loop's: dm-io's async path, a lock that may be granted
//                         later, `device.extents`. It adds one promise hop per step that waits
//                         and none for a lock granted at once.
//   runIoProgramBlocking  a connection thread's: `dmIoBlocking`, `RangeLock.acquireBlocking`
//                         (whose cross-thread gate waits with Atomics.wait), `extentsSync`.
//
// Answers: 'io' gets `null` or the NbdFailure to send (device errors, and errors dm-io throws
// before submitting, never reach the program as exceptions); 'lock' gets the RangeRelease;
// 'extents' gets an ExtentsAnswer (devices/block-device.ts). A step that throws while it runs
// (a lock that can never be granted, a device whose `extents` throws) is thrown into the
// program at its `yield`, so the program's try/finally releases what it holds. No answer is
// ever a Promise.

import { SECTOR_SIZE } from '../constants.js';
import type { DmIoClient } from '../core/client.js';
import { dmIo, dmIoBlocking } from '../core/dm-io.js';
import type { DmIoResult } from '../core/io-tracker.js';
import type { DmIoOp, DmIoRegion, DmIoRequest } from '../core/request.js';
import type { BlockDevice, ExtentsAnswer } from '../devices/block-device.js';
import { failureOf, type NbdFailure } from './errno-map.js';
import type { ServedExport } from './nbd-export.js';
import type { RangeRelease } from './range-lock.js';

/** One thing a command needs done. Byte ranges are on the export's device. */
export type IoStep =
  /** One dm-io request over whole logical blocks; answer: `NbdFailure | null`. */
  | {
    readonly kind: 'io';
    readonly op: DmIoOp;
    readonly offsetBytes: number;
    readonly lengthBytes: number;
    /** The memory of a read or write. */
    readonly data?: Uint8Array;
    readonly fua?: boolean;
    readonly preflush?: boolean;
  }
  /** A range of the export's RangeLock, `[startBytes, endBytes)`; answer: its RangeRelease. */
  | {
    readonly kind: 'lock';
    readonly startBytes: number;
    readonly endBytes: number;
    readonly exclusive: boolean;
  }
  /** One `extents` query of the export's device (sectors); answer: its ExtentsAnswer. */
  | { readonly kind: 'extents'; readonly sector: number; readonly countSectors: number };

/** Command logic: yields steps, receives their answers, returns the command's outcome. */
export type IoProgram<T> = Generator<IoStep, T, unknown>;

/** An 'io' step. */
export type IoRequestStep = Extract<IoStep, { kind: 'io' }>;

/** Yields one dm-io request; returns `null` or the failure to send. */
export function* yieldIo(step: IoRequestStep): IoProgram<NbdFailure | null> {
  return (yield step) as NbdFailure | null;
}

/** Yields a lock of `[startBytes, endBytes)`; returns its release (call it exactly once). */
export function* yieldLock(
  startBytes: number, endBytes: number, exclusive: boolean,
): IoProgram<RangeRelease> {
  return (yield { kind: 'lock', startBytes, endBytes, exclusive }) as RangeRelease;
}

/** Yields one `extents` query; throws what the query threw. */
export function* yieldExtents(sector: number, countSectors: number): IoProgram<ExtentsAnswer> {
  return (yield { kind: 'extents', sector, countSectors }) as ExtentsAnswer;
}

/**
 * Runs a program with dm-io's async path. Resolves with the program's outcome; never rejects
 * for a device error (only when the program itself throws, a bug).
 */
export function runIoProgram<T>(
  client: DmIoClient, served: ServedExport, program: IoProgram<T>,
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    new AsyncRun(client, served, program, resolve, reject).resume(undefined, false);
  });
}

/**
 * Runs a program to completion on the calling thread: `dmIoBlocking`, blocking lock and gate
 * waits, `extentsSync`. Returns the program's outcome; throws only what the program throws.
 */
export function runIoProgramBlocking<T>(
  client: DmIoClient, served: ServedExport, program: IoProgram<T>,
): T {
  let next = program.next();
  while (next.done !== true) {
    let answer: unknown;
    try {
      answer = runStepBlocking(client, served, next.value);
    } catch (error) {
      next = program.throw(error);
      continue;
    }
    next = program.next(answer);
  }
  return next.value;
}

/** One program on the async path: steps answered at once continue in the same loop. */
class AsyncRun<T> {
  readonly #client: DmIoClient;
  readonly #served: ServedExport;
  readonly #program: IoProgram<T>;
  readonly #resolve: (value: T) => void;
  readonly #reject: (error: unknown) => void;
  /** The answer of a step that completed inside `#start`, and whether it is a throw. */
  #answer: unknown = undefined;
  #thrown = false;

  constructor(
    client: DmIoClient, served: ServedExport, program: IoProgram<T>,
    resolve: (value: T) => void, reject: (error: unknown) => void,
  ) {
    this.#client = client;
    this.#served = served;
    this.#program = program;
    this.#resolve = resolve;
    this.#reject = reject;
  }

  /** Gives the program an answer (or throws `answer` into it) and runs it to its next wait. */
  resume(answer: unknown, thrown: boolean): void {
    this.#answer = answer;
    this.#thrown = thrown;
    for (;;) {
      let next: IteratorResult<IoStep, T>;
      try {
        next = this.#thrown ? this.#program.throw(this.#answer) : this.#program.next(this.#answer);
      } catch (error) {
        this.#reject(error);
        return;
      }
      if (next.done === true) {
        this.#resolve(next.value);
        return;
      }
      if (!this.#start(next.value)) return;
    }
  }

  /** Starts a step: true with its answer set when it completed at once, false when it waits. */
  #start(step: IoStep): boolean {
    try {
      switch (step.kind) {
        case 'io':
          return this.#startIo(step);
        case 'lock':
          return this.#startLock(step.startBytes, step.endBytes, step.exclusive);
        case 'extents':
          this.#startExtents(step.sector, step.countSectors);
          return false;
      }
    } catch (error) {
      this.#answer = error;
      this.#thrown = true;
      return true;
    }
  }

  #startIo(step: IoRequestStep): boolean {
    let pending: Promise<DmIoResult>;
    try {
      pending = dmIo(dmIoRequestOf(this.#client, step), regionsOf(this.#served, step));
    } catch (error) {
      // Thrown before anything was submitted (validation, a busy client): a failure to send.
      this.#answer = failureOf(error);
      this.#thrown = false;
      return true;
    }
    pending.then((result) => this.resume(answerOf(result), false),
      (error: unknown) => this.resume(failureOf(error), false));
    return false;
  }

  #startLock(startBytes: number, endBytes: number, exclusive: boolean): boolean {
    const granted = this.#served.lock.acquire(startBytes, endBytes, exclusive);
    if (typeof granted === 'function') {
      this.#answer = granted;
      this.#thrown = false;
      return true;
    }
    granted.then((release) => this.resume(release, false),
      (error: unknown) => this.resume(error, true));
    return false;
  }

  #startExtents(sector: number, countSectors: number): void {
    const device = this.#served.device;
    const extentsOf = device.extents;
    if (extentsOf === undefined) throw noExtents(device);
    // A device that throws rejects the promise; the program gets the throw at its `yield`.
    new Promise<ExtentsAnswer>((resolve) => {
      extentsOf.call(device, sector, countSectors, (error, extents) => resolve({ error, extents }));
    }).then((answer) => this.resume(answer, false), (error: unknown) => this.resume(error, true));
  }
}

/** Runs one step on the calling thread and returns its answer. */
function runStepBlocking(client: DmIoClient, served: ServedExport, step: IoStep): unknown {
  switch (step.kind) {
    case 'io':
      try {
        return answerOf(dmIoBlocking(dmIoRequestOf(client, step), regionsOf(served, step)));
      } catch (error) {
        return failureOf(error);
      }
    case 'lock':
      return served.lock.acquireBlocking(step.startBytes, step.endBytes, step.exclusive);
    case 'extents':
      return extentsBlocking(served.device, step.sector, step.countSectors);
  }
}

/**
 * True when `runIoProgramBlocking` can run every program on `device`: it completes requests on
 * the calling thread (`submitSync`) and, if it answers extent queries, does so there too.
 */
export function runsBlocking(device: BlockDevice): boolean {
  return device.canBlock && device.submitSync !== undefined &&
    (device.extents === undefined || device.extentsSync !== undefined);
}

function extentsBlocking(device: BlockDevice, sector: number, countSectors: number): ExtentsAnswer {
  if (device.extents === undefined) throw noExtents(device);
  if (device.extentsSync === undefined) {
    throw new Error(`device ${device.name} has extents but no extentsSync: the blocking ` +
      'server driver cannot answer BLOCK_STATUS from it (a bug: `runsBlocking` refuses it)');
  }
  return device.extentsSync(sector, countSectors);
}

function noExtents(device: BlockDevice): Error {
  return new Error(`device ${device.name} has no extents: a program asked it anyway (a bug)`);
}

/** The dm-io request of an 'io' step: its op and flags, with its data as kmem memory. */
function dmIoRequestOf(client: DmIoClient, step: IoRequestStep): DmIoRequest {
  const flags = { fua: step.fua === true, preflush: step.preflush === true };
  return step.data === undefined ? { op: step.op, client, flags } :
    { op: step.op, client, flags, mem: { type: 'kmem', data: step.data } };
}

/** The one region of an 'io' step, on the export's device. */
function regionsOf(served: ServedExport, step: IoRequestStep): DmIoRegion[] {
  return [{
    device: served.device,
    sector: step.offsetBytes / SECTOR_SIZE,
    count: step.lengthBytes / SECTOR_SIZE,
  }];
}

/** `null` when the one region succeeded, else the failure to send. */
function answerOf(result: DmIoResult): NbdFailure | null {
  return result.errorBits === 0n ? null : failureOf(result.errors[0]);
}
