// Owns writecache writeback: cached blocks are copied to the origin (at the sector they hold)
// with kcopyd, oldest first, in batches of at most `writeback_jobs` blocks, one kcopyd job per
// run of blocks that follow each other both in the cache and on the origin. It starts when the
// free blocks (counting those under writeback) fall to the high watermark's share and goes on
// until they pass the low watermark's (or until none is cached, with `cleaner` or
// `writeBackAll`). Before a pass it waits until no write has gone around the cache to the
// origin for `pause_writeback` ms. A batch: commit first if it holds uncommitted blocks, copy,
// flush the origin, then free the blocks (writecache-target.ts persists that before reuse). A
// failed copy sets the target's sticky error and stops writeback; the blocks stay cached.

import type { DmIoClient } from '../core/client.js';
import { dmKcopydClientDestroy } from '../kcopyd/kcopyd.js';
import type { KcopydClient } from '../kcopyd/kcopyd-client.js';
import { dmKcopydCopy } from '../kcopyd/submit.js';
import { createBackgroundKcopyd } from './background-kcopyd.js';
import { flushDevice } from './target-io.js';
import type { WritecacheTarget } from './writecache-target.js';
import { bytesToSectorsExact } from '../units.js';

/** Largest run of blocks one kcopyd job copies. */
const RUN_BLOCKS_MAX = 256;

/** What writeback needs besides the target. */
export interface WritebackParts {
  readonly client: DmIoClient;
  readonly throttlePercent: number;
  readonly now: () => number;
}

/** The writeback engine of one writecache target. */
export class WritecacheWriteback {
  readonly #target: WritecacheTarget;
  readonly #parts: WritebackParts;
  #kcopyd: KcopydClient | null = null;
  #running: Promise<void> | null = null;
  #active = false;
  #writeAll = false;
  #stopped = false;
  #again = false;

  constructor(target: WritecacheTarget, parts: WritebackParts) {
    this.#target = target;
    this.#parts = parts;
  }

  /** Free-block threshold at which writeback starts (high watermark). */
  get #startBelow(): number {
    const { blockCount } = this.#target.layout;
    return Math.floor((blockCount * (100 - this.#target.options.highWatermark) + 50) / 100);
  }

  /** Free-block threshold above which writeback stops (low watermark). */
  get #stopAbove(): number {
    const { blockCount } = this.#target.layout;
    return Math.floor((blockCount * (100 - this.#target.options.lowWatermark) + 50) / 100);
  }

  /** Checks the watermarks and starts a pass when needed. */
  kick(): void {
    if (this.#stopped || this.#target.errored) return;
    const available = this.#target.freeBlocks + this.#target.writebackBlocks;
    if (available <= this.#startBelow || this.#target.options.cleaner) this.#active = true;
    if (!this.#active && !this.#writeAll) return;
    if (this.#running !== null) {
      this.#again = true;
      return;
    }
    this.#running = this.#run().finally(() => {
      this.#running = null;
      if (this.#again) {
        this.#again = false;
        this.kick();
      }
    });
  }

  /** Writes back every cached block; resolves when none is left (or on error or stop). */
  async writeBackAll(): Promise<void> {
    this.#writeAll = true;
    try {
      while (!this.#stopped && !this.#target.errored && this.#hasCached()) {
        this.kick();
        await (this.#running ?? Promise.resolve());
      }
    } finally {
      this.#writeAll = false;
    }
  }

  /** Stops after the batch in flight; resolves when it has ended. */
  async stop(): Promise<void> {
    this.#stopped = true;
    await (this.#running ?? Promise.resolve());
    if (this.#kcopyd !== null) await dmKcopydClientDestroy(this.#kcopyd);
    this.#kcopyd = null;
  }

  #hasCached(): boolean {
    return !this.#target.cachedBlocks().next().done;
  }

  #wanted(): boolean {
    if (this.#writeAll || this.#target.options.cleaner) return this.#hasCached();
    const available = this.#target.freeBlocks + this.#target.writebackBlocks;
    if (available > this.#stopAbove) this.#active = false;
    return this.#active && this.#hasCached();
  }

  async #run(): Promise<void> {
    while (!this.#stopped && !this.#target.errored && this.#wanted()) {
      await this.#pause();
      const batch = this.#pickBatch();
      if (batch.length === 0) return;
      // Marked first: from now on writes to these blocks allocate new ones instead of
      // overwriting in place; writes already in flight land before the copy reads the blocks.
      for (const index of batch) this.#target.setUnderWriteback(index, true);
      let ok = true;
      try {
        if (batch.some((index) => this.#target.isUncommitted(index))) await this.#target.commit();
        await this.#target.waitBlocksIdle(batch);
      } catch {
        ok = false;
      }
      ok = ok && await this.#copy(batch);
      if (!ok) {
        for (const index of batch) this.#target.setUnderWriteback(index, false);
        return;
      }
      await this.#target.freeWrittenBack(batch);
    }
  }

  /** Waits until no write went around the cache for `pause_writeback` ms (not when cleaning). */
  async #pause(): Promise<void> {
    for (;;) {
      if (this.#stopped || this.#writeAll || this.#target.options.cleaner) return;
      const waitMs = this.#target.options.pauseWritebackMs - this.#target.sinceOriginWriteMs();
      if (waitMs <= 0) return;
      await new Promise((resolve) => setTimeout(resolve, Math.min(waitMs, 200)));
    }
  }

  /**
   * The oldest cached blocks not under writeback: at most `writeback_jobs`, and, unless
   * everything is to be written back, only as many as take free + under writeback past the low
   * watermark (as the kernel counts each block it adds).
   */
  #pickBatch(): number[] {
    const batch: number[] = [];
    const available = this.#target.freeBlocks + this.#target.writebackBlocks;
    const all = this.#writeAll || this.#target.options.cleaner;
    const jobs = Math.min(this.#target.options.writebackJobs,
      all ? Number.MAX_SAFE_INTEGER : Math.max(1, this.#stopAbove - available + 1));
    for (const index of this.#target.cachedBlocks()) {
      if (batch.length >= jobs) break;
      if (!this.#target.isUnderWriteback(index)) batch.push(index);
    }
    return batch;
  }

  /** Copies the batch to the origin in runs, then flushes the origin; false on any error. */
  async #copy(batch: readonly number[]): Promise<boolean> {
    const target = this.#target;
    const blockSectors = bytesToSectorsExact(target.layout.blockBytes);
    const sorted = [...batch].sort((a, b) => target.blockSector(a) - target.blockSector(b));
    const runs: number[][] = [];
    for (const index of sorted) {
      const run = runs[runs.length - 1];
      const last = run?.[run.length - 1];
      if (run !== undefined && last !== undefined && run.length < RUN_BLOCKS_MAX &&
          index === last + 1 && target.blockSector(index) === target.blockSector(last) + blockSectors) {
        run.push(index);
      } else {
        runs.push([index]);
      }
    }
    const kcopyd = this.#client();
    const results = await Promise.all(runs.map((run) => {
      const first = run[0] as number;
      const count = run.length * blockSectors;
      const originSector = target.blockSector(first);
      const clipped = Math.min(count, target.origin.sizeSectors - originSector);
      return dmKcopydCopy(kcopyd, { device: target.cache, sector: target.dataSector(first), count: clipped },
        [{ device: target.origin, sector: originSector, count: clipped }], {});
    }));
    const failed = results.find((result) => result.readErr || result.writeErr !== 0n);
    if (failed !== undefined) {
      const error = failed.readError ?? failed.writeErrors[0];
      if (error !== undefined) target.setError(error);
      return false;
    }
    return new Promise((resolve) => flushDevice(this.#parts.client, target.origin, (error) => {
      if (error !== null) target.setError(error);
      resolve(error === null);
    }));
  }

  #client(): KcopydClient {
    this.#kcopyd ??= createBackgroundKcopyd(this.#parts.client, this.#parts.throttlePercent);
    return this.#kcopyd;
  }
}
