// Owns counting a target's own work in flight, so `stop` can wait until every piece it took has
// completed. Completions are wrapped: the count drops just before the caller's `done` runs.

/** Counts pieces in flight; `idle()` resolves when the count is zero. */
export class InflightCounter {
  #count = 0;
  #waiters: Array<() => void> = [];

  /** Pieces in flight now. */
  get count(): number {
    return this.#count;
  }

  /** Counts one piece; the returned callback ends it and then calls `done`. */
  track<A extends unknown[]>(done: (...args: A) => void): (...args: A) => void {
    this.#count += 1;
    return (...args: A) => {
      this.#count -= 1;
      try {
        done(...args);
      } finally {
        if (this.#count === 0) this.#wake();
      }
    };
  }

  /** Resolves once nothing is in flight. */
  idle(): Promise<void> {
    if (this.#count === 0) return Promise.resolve();
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  #wake(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const wake of waiters) wake();
  }
}
