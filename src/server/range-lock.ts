// Owns the ordering of writes that share a logical block with a read-modify-write. A client
// that asked for no block sizes may write any byte range; the server then reads the partial
// blocks at the edges, merges the new bytes and writes whole blocks. Two such merges, or a
// merge and a plain write, touching the same block at the same time would put back stale
// bytes, so a merge holds its blocks exclusively while plain writes hold theirs shared:
// writes overlap freely among themselves (the protocol leaves their order to the server), a
// merge waits for overlapping writes and they wait for it. Waiters are served in arrival
// order, so a stream of writes cannot starve a merge. Reads take no lock.
//
// Ranges are in bytes, [startBytes, endBytes). One lock per export, shared by its connections
// on one thread. A threaded server gives each thread's lock the export's ThreadWriteGate
// (thread-write-gate.ts), taken after the range: that orders merges across threads. A thread
// that runs each request to completion before the next takes ranges with `acquireBlocking`:
// nothing local can conflict there, and only the gate waits (blocking the thread).

import type { ThreadWriteGate } from './thread-write-gate.js';

/** A held range; call `release` exactly once. */
export type RangeRelease = () => void;

interface Holder {
  readonly startBytes: number;
  readonly endBytes: number;
  readonly exclusive: boolean;
}

interface Waiter extends Holder {
  readonly grant: (release: RangeRelease) => void;
}

/** Shared and exclusive byte-range locks. */
export class RangeLock {
  readonly #gate: ThreadWriteGate | null;
  readonly #held = new Set<Holder>();
  readonly #waiting: Waiter[] = [];
  #exclusiveHeld = 0;

  constructor(gate: ThreadWriteGate | null = null) {
    this.#gate = gate;
  }

  /** Ranges held now (for tests and leak checks). */
  get heldCount(): number {
    return this.#held.size;
  }

  /**
   * Takes `[startBytes, endBytes)`, shared or exclusive. Resolves at once (synchronously
   * granted) when nothing conflicts and nobody waits; otherwise after the conflicts end.
   */
  acquire(startBytes: number, endBytes: number, exclusive: boolean): Promise<RangeRelease> | RangeRelease {
    const wanted = { startBytes, endBytes, exclusive };
    const local = this.#waiting.length === 0 && !this.#conflictsWithHeld(wanted) ?
      this.#hold(wanted) : new Promise<RangeRelease>((grant) => this.#waiting.push({ ...wanted, grant }));
    if (this.#gate === null) return local;
    if (typeof local === 'function') {
      const gated = this.#gate.enter(exclusive);
      if (typeof gated === 'function') return both(gated, local);
      return gated.then((release) => both(release, local));
    }
    return this.#throughGate(local, exclusive, this.#gate);
  }

  /**
   * Takes `[startBytes, endBytes)` on the calling thread, for a driver that runs every request
   * to completion before the next: no range of this thread can be held across a wait there,
   * so the local part is granted at once (else this throws: a bug). Only the cross-thread gate
   * may wait, blocking the thread (`ThreadWriteGate.enterBlocking`).
   */
  acquireBlocking(startBytes: number, endBytes: number, exclusive: boolean): RangeRelease {
    const wanted = { startBytes, endBytes, exclusive };
    if (this.#waiting.length > 0 || this.#conflictsWithHeld(wanted)) {
      throw new Error(`range [${startBytes}, ${endBytes}) conflicts with one held on this ` +
        'thread: a blocking driver cannot wait for it (a bug: its requests run one at a time)');
    }
    const local = this.#hold(wanted);
    if (this.#gate === null) return local;
    try {
      return both(this.#gate.enterBlocking(exclusive), local);
    } catch (error) {
      local();
      throw error;
    }
  }

  async #throughGate(
    local: Promise<RangeRelease>, exclusive: boolean, gate: ThreadWriteGate,
  ): Promise<RangeRelease> {
    const releaseLocal = await local;
    return both(await gate.enter(exclusive), releaseLocal);
  }

  #hold(holder: Holder): RangeRelease {
    this.#held.add(holder);
    if (holder.exclusive) this.#exclusiveHeld += 1;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#held.delete(holder);
      if (holder.exclusive) this.#exclusiveHeld -= 1;
      this.#wake();
    };
  }

  #conflictsWithHeld(wanted: Holder): boolean {
    // Fast path: shared ranges never conflict with shared ones.
    if (!wanted.exclusive && this.#exclusiveHeld === 0) return false;
    for (const holder of this.#held) if (conflict(holder, wanted)) return true;
    return false;
  }

  /** Grants, in order, every waiter that conflicts neither with holders nor earlier waiters. */
  #wake(): void {
    const stillWaiting: Waiter[] = [];
    for (const waiter of this.#waiting) {
      const blocked = this.#conflictsWithHeld(waiter) ||
        stillWaiting.some((earlier) => conflict(earlier, waiter));
      if (blocked) stillWaiting.push(waiter);
      else waiter.grant(this.#hold(waiter));
    }
    this.#waiting.length = 0;
    this.#waiting.push(...stillWaiting);
  }
}

/** One release for a gate and a range: the gate first, so a thread's waiters see both free. */
function both(releaseGate: RangeRelease, releaseLocal: RangeRelease): RangeRelease {
  return () => {
    releaseGate();
    releaseLocal();
  };
}

function conflict(a: Holder, b: Holder): boolean {
  return (a.exclusive || b.exclusive) && a.startBytes < b.endBytes && b.startBytes < a.endBytes;
}
