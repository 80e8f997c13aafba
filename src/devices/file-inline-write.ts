// Owns inline buffered writes, the io_uring engine's shortcut for `dmio serve`'s engine
// (`IoUringEngineOptions.inlineWrites`). ext4 and tmpfs cannot take a buffered write without
// blocking (they refuse RWF_NOWAIT), so on a ring each one goes to a kernel worker: a thread
// wake-up per write and a hand-off back. A whole-page write of cached memory is a copy into the
// page cache of tens of microseconds, cheaper done on the calling thread. What can make it
// block is the kernel throttling writers once too much of memory is dirty (pauses of up to
// 200 ms, which would hold every connection of the event loop), a read of a partial page, or
// a filesystem stall; so a write runs inline only when all of these hold:
// - it is buffered, page-aligned in position and length (no read-modify-write of a page), and
//   at most INLINE_WRITE_BYTES_MAX, to a block device or a file on a local filesystem
//   (INLINE_WRITE_FILESYSTEMS, by `fstatfs` at a device's first write here, remembered): a
//   write to NFS, CIFS, FUSE or an overlay can wait on a server or a daemon, so it always
//   takes the ring;
// - the system's dirty pages are well below the point where throttling starts: half the
//   headroom read from /proc/vmstat (sys/dirty-pages.ts) at most DIRTY_SAMPLE_MS ago, less
//   what was written inline since, covers it;
// - no other step that writes (or flushes, zeroes, discards) is running off the event loop
//   on the same device: ext4 and tmpfs hold the file's inode lock for a whole write, so a
//   page written inline behind a 32 MiB write on the ring would wait for it (measured: 381 ms)
//   and could overtake a write still queued; the engine reports such steps (`offLoop`);
// - no inline write stalled lately: one that took INLINE_WRITE_STALL_MS or more (a throttled
//   cgroup, a journal commit, reclaim) sends writes back to the ring for a back-off that doubles
//   from INLINE_WRITE_BACKOFF_MS up to INLINE_WRITE_BACKOFF_MAX_MS while stalls repeat, and
//   starts from the first again once a back-off has been over that long without a stall.
// Anything else returns false having done nothing, and the step takes the ring. A write that
// fails inline reports its error as the ring would; callbacks never run inside `tryWrite`.
// Measured in docs/performance.md, "Serve writes on the event loop".

import fs from 'node:fs';
import { performance } from 'node:perf_hooks';
import { MIB, PAGE_SIZE } from '../constants.js';
import { dirtyHeadroomBytes } from '../sys/dirty-pages.js';
import { filesystemMagicSync } from '../sys/libc.js';
import type { FileTarget, StepCallback } from './file-engine.js';
import type { Step, StepResult } from './file-steps.js';
import { transferSync } from './file-syscalls.js';
import { ImmediateCompletions } from './immediate-completions.js';

/** Largest write run inline (1 MiB): about 0.1-0.3 ms of copying into the page cache here. */
export const INLINE_WRITE_BYTES_MAX = MIB;
/** An inline write that takes this long or longer is a stall: writes go back to the ring. */
export const INLINE_WRITE_STALL_MS = 10;
/** The first back-off after a stall; it doubles while stalls repeat. */
export const INLINE_WRITE_BACKOFF_MS = 1000;
/**
 * The longest back-off; a stall more than this after the end of the last back-off starts
 * again from the first.
 */
export const INLINE_WRITE_BACKOFF_MAX_MS = 60_000;
/** How long one reading of the dirty-page headroom is trusted. */
export const DIRTY_SAMPLE_MS = 100;

/**
 * Filesystems (`f_type` magic numbers) whose buffered writes are copies into local memory:
 * ext2/3/4, XFS, btrfs, tmpfs, F2FS, bcachefs, ZFS.
 */
export const INLINE_WRITE_FILESYSTEMS: ReadonlyMap<number, string> = new Map([
  [0xef53, 'ext2/3/4'], [0x58465342, 'xfs'], [0x9123683e, 'btrfs'], [0x01021994, 'tmpfs'],
  [0xf2f52010, 'f2fs'], [0xca451a4e, 'bcachefs'], [0x2fc12fc1, 'zfs'],
]);

/**
 * Whether writes to the device on `fd` may ever run inline: a block device, or a file on one
 * of INLINE_WRITE_FILESYSTEMS; false where that cannot be told.
 */
export function writesInlineAllowed(fd: number): boolean {
  let magic: ReturnType<typeof filesystemMagicSync>;
  try {
    if (fs.fstatSync(fd).isBlockDevice()) return true;
    magic = filesystemMagicSync(fd);
  } catch {
    return false; // A closed descriptor, or no libc bindings here.
  }
  return typeof magic === 'number' && INLINE_WRITE_FILESYSTEMS.has(magic);
}

/** Where an `InlineWrites` reads its time and the headroom (real ones unless a test swaps them). */
export interface InlineWriteEnvironment {
  readonly nowMs: () => number;
  readonly headroomBytes: () => number | null;
}

const SYSTEM: InlineWriteEnvironment = {
  nowMs: () => performance.now(),
  headroomBytes: dirtyHeadroomBytes,
};

/** The inline-write state of one engine. */
export class InlineWrites {
  readonly #environment: InlineWriteEnvironment;
  readonly #completions = new ImmediateCompletions();
  /** Bytes that may still be written inline before the next reading of the headroom. */
  #budgetBytes = 0;
  #sampledAtMs = Number.NEGATIVE_INFINITY;
  #offUntilMs = Number.NEGATIVE_INFINITY;
  #stallsInARow = 0;
  /** `writesInlineAllowed` of each device this engine was asked to write. */
  readonly #allowed = new WeakMap<FileTarget, boolean>();
  /** Steps other than reads running off the calling thread, per device. */
  readonly #offLoopSteps = new WeakMap<FileTarget, number>();
  /** Diagnostics: inline writes that stalled, and readings of the headroom. */
  readonly counters = { stalls: 0, samples: 0 };

  constructor(environment: InlineWriteEnvironment = SYSTEM) {
    this.#environment = environment;
  }

  /**
   * Writes `step` into the page cache on the calling thread when that cannot block for long;
   * returns false, having done nothing, when it must take the ring.
   */
  tryWrite(target: FileTarget, step: Step, callback: StepCallback): boolean {
    if (step.kind !== 'write' || target.direct || step.positionBytes % PAGE_SIZE !== 0) {
      return false;
    }
    let lengthBytes = 0;
    for (const buffer of step.buffers) lengthBytes += buffer.length;
    if (lengthBytes === 0 || lengthBytes > INLINE_WRITE_BYTES_MAX || lengthBytes % PAGE_SIZE !== 0) {
      return false;
    }
    if (!this.#allows(target) || this.#offLoopSteps.has(target)) return false;
    const startMs = this.#environment.nowMs();
    if (startMs < this.#offUntilMs || !this.#budgetCovers(startMs, lengthBytes)) return false;
    let result: StepResult;
    try {
      result = { bytes: transferSync(target.fd, 'write', step.buffers, step.positionBytes),
        error: null };
    } catch (error) {
      result = { bytes: 0, error };
    }
    this.#budgetBytes -= lengthBytes;
    const endMs = this.#environment.nowMs();
    if (endMs - startMs >= INLINE_WRITE_STALL_MS) this.#stalled(endMs);
    if (result.bytes === lengthBytes) target.stats.inlineWrites += 1;
    this.#completions.push(callback, result);
    return true;
  }

  /**
   * Marks a step other than a read that is about to run on `target` off the calling thread
   * (a ring or the threadpool); returns its callback, which ends the mark. No write to
   * `target` runs inline until every marked step has completed.
   */
  offLoop(target: FileTarget, callback: StepCallback): StepCallback {
    this.#offLoopSteps.set(target, (this.#offLoopSteps.get(target) ?? 0) + 1);
    return (result) => {
      const left = (this.#offLoopSteps.get(target) ?? 1) - 1;
      if (left === 0) this.#offLoopSteps.delete(target);
      else this.#offLoopSteps.set(target, left);
      callback(result);
    };
  }

  /** Whether `target` may ever be written inline, found out once. */
  #allows(target: FileTarget): boolean {
    let allowed = this.#allowed.get(target);
    if (allowed === undefined) {
      allowed = writesInlineAllowed(target.fd);
      this.#allowed.set(target, allowed);
    }
    return allowed;
  }

  /** Whether the budget covers `lengthBytes`, reading the headroom again when it is stale. */
  #budgetCovers(nowMs: number, lengthBytes: number): boolean {
    if (nowMs - this.#sampledAtMs >= DIRTY_SAMPLE_MS) {
      this.#sampledAtMs = nowMs;
      this.counters.samples += 1;
      this.#budgetBytes = (this.#environment.headroomBytes() ?? 0) / 2;
    }
    return this.#budgetBytes >= lengthBytes;
  }

  #stalled(atMs: number): void {
    this.counters.stalls += 1;
    if (atMs - this.#offUntilMs > INLINE_WRITE_BACKOFF_MAX_MS) this.#stallsInARow = 0;
    this.#stallsInARow += 1;
    this.#offUntilMs = atMs + Math.min(INLINE_WRITE_BACKOFF_MAX_MS,
      INLINE_WRITE_BACKOFF_MS * 2 ** (this.#stallsInARow - 1));
  }
}
