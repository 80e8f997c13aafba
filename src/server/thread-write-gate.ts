// Owns the ordering of read-modify-writes across connection threads. Within one thread the
// export's RangeLock orders a merge (exclusive) against overlapping writes (shared); threads
// do not share that lock, so a threaded server puts this gate behind it: a merge holds the
// gate exclusively for the whole export, every write, trim and zeroing holds it shared. Only
// clients that asked for no block sizes and send partial blocks ever merge, so serialising
// merges export-wide costs the usual client nothing: a plain write pays two atomic adds.
//
// The state lives in a SharedArrayBuffer made by the server and given to every thread: one
// Int32 for the merge owner (0 free, else slot + 1), then one Int32 per thread slot counting
// the shared holders of that thread. Per-slot counts let the server clear what a thread held
// if that thread dies, so the others never wait on it. The protocol of an entry is written
// once, as a generator of waits: `enter` waits with Atomics.waitAsync (never blocking an event
// loop), `enterBlocking` with Atomics.wait (a thread that runs requests to completion). Either
// way a waiter rechecks at least every WAIT_RECHECK_MS.

import assert from '../assert.js';
import type { RangeRelease } from './range-lock.js';

/** Longest single wait before the state is read again. */
const WAIT_RECHECK_MS = 1_000;
/** Index of the merge owner in the state array. */
const OWNER = 0;

/** Shared state for `slots` threads. */
export function createWriteGateState(slots: number): SharedArrayBuffer {
  assert.ok(Number.isSafeInteger(slots) && slots > 0);
  return new SharedArrayBuffer((1 + slots) * Int32Array.BYTES_PER_ELEMENT);
}

/**
 * Forgets what thread `slot` held (it died): its shared count and its merge, waking waiters.
 */
export function clearWriteGateSlot(state: SharedArrayBuffer, slot: number): void {
  const words = new Int32Array(state);
  Atomics.store(words, 1 + slot, 0);
  Atomics.notify(words, 1 + slot);
  if (Atomics.compareExchange(words, OWNER, slot + 1, 0) === slot + 1) {
    Atomics.notify(words, OWNER);
  }
}

/** One thread's view of an export's gate. */
export class ThreadWriteGate {
  readonly #words: Int32Array;
  readonly #slot: number;

  constructor(state: SharedArrayBuffer, slot: number) {
    this.#words = new Int32Array(state);
    assert.ok(Number.isSafeInteger(slot) && slot >= 0 && slot < this.#words.length - 1);
    this.#slot = slot;
  }

  /** Holds the gate shared (a write) or exclusively (a merge); release exactly once. */
  enter(exclusive: boolean): RangeRelease | Promise<RangeRelease> {
    if (!exclusive && this.#tryShared()) return this.#sharedRelease();
    return enterAsync(this.#words, this.#entry(exclusive));
  }

  /**
   * `enter` on the calling thread: the same protocol, each wait an `Atomics.wait` (for a
   * thread that may block; never an event loop's).
   */
  enterBlocking(exclusive: boolean): RangeRelease {
    if (!exclusive && this.#tryShared()) return this.#sharedRelease();
    const words = this.#words;
    const entry = this.#entry(exclusive);
    for (let next = entry.next(); ; next = entry.next()) {
      if (next.done === true) return next.value;
      Atomics.wait(words, next.value.index, next.value.value, WAIT_RECHECK_MS);
    }
  }

  #entry(exclusive: boolean): GateEntry {
    return exclusive ? this.#exclusiveEntry() : this.#sharedEntry();
  }

  #tryShared(): boolean {
    const words = this.#words;
    if (Atomics.load(words, OWNER) !== 0) return false;
    Atomics.add(words, 1 + this.#slot, 1);
    // A merge that took the gate between the two reads sees this count and waits for it; one
    // that took it before is seen here, and this write steps back.
    if (Atomics.load(words, OWNER) === 0) return true;
    this.#leaveShared();
    return false;
  }

  #leaveShared(): void {
    const words = this.#words;
    const index = 1 + this.#slot;
    // The count may already be 0 when the server cleared this slot; never go below it. Only a
    // merge waits on a count, and only after it took the owner word, so a count that drops to
    // 0 with no owner wakes nobody (Atomics.notify takes a process-wide lock in V8).
    if (Atomics.load(words, index) > 0 && Atomics.sub(words, index, 1) === 1 &&
        Atomics.load(words, OWNER) !== 0) {
      Atomics.notify(words, index);
    }
  }

  #sharedRelease(): RangeRelease {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#leaveShared();
    };
  }

  /** A write's entry: retried whenever the merge that holds the gate may have left. */
  *#sharedEntry(): GateEntry {
    while (!this.#tryShared()) {
      const owner = Atomics.load(this.#words, OWNER);
      if (owner !== 0) yield { index: OWNER, value: owner };
    }
    return this.#sharedRelease();
  }

  /** A merge's entry: take the owner word, then wait for every slot's writes to leave. */
  *#exclusiveEntry(): GateEntry {
    const words = this.#words;
    const owner = this.#slot + 1;
    for (;;) {
      const current = Atomics.compareExchange(words, OWNER, 0, owner);
      if (current === 0) break;
      yield { index: OWNER, value: current };
    }
    for (let index = 1; index < words.length; index += 1) {
      for (let count = Atomics.load(words, index); count > 0; count = Atomics.load(words, index)) {
        yield { index, value: count };
      }
    }
    let released = false;
    return () => {
      if (released) return;
      released = true;
      if (Atomics.compareExchange(words, OWNER, owner, 0) === owner) Atomics.notify(words, OWNER);
    };
  }
}

/** One wait of an entry: until `words[index]` may no longer be `value`. */
interface GateWait {
  readonly index: number;
  readonly value: number;
}

/**
 * The gate protocol of one entry, written once: yields each wait, returns the release. Both
 * `enter` (Atomics.waitAsync) and `enterBlocking` (Atomics.wait) run it.
 */
type GateEntry = Generator<GateWait, RangeRelease, void>;

/** Runs an entry, each wait an `Atomics.waitAsync`. */
async function enterAsync(words: Int32Array, entry: GateEntry): Promise<RangeRelease> {
  for (let next = entry.next(); ; next = entry.next()) {
    if (next.done === true) return next.value;
    await waitWhileEqual(words, next.value.index, next.value.value);
  }
}

/** `Atomics.waitAsync` (ES2024, in Node 20's V8), which the project's ES2023 lib lacks. */
interface AtomicsWaitAsync {
  waitAsync(words: Int32Array, index: number, value: number, timeoutMs: number):
    { async: false; value: string } | { async: true; value: Promise<string> };
}

/** Resolves once `words[index]` may no longer be `value` (or after WAIT_RECHECK_MS). */
async function waitWhileEqual(words: Int32Array, index: number, value: number): Promise<void> {
  const waited = (Atomics as unknown as AtomicsWaitAsync).waitAsync(words, index, value,
    WAIT_RECHECK_MS);
  if (waited.async) await waited.value;
}
