// Owns write-behind for a local device opened with `writeBehindBytes` (a destination whose
// writes its caller will flush, such as every destination of `dmio copy`): once that many bytes
// of writes (and copy offload into the device) have completed since the last background flush
// began, it starts an `fdatasync` in the background, at most one at a time per device, so the
// caller's own flush at the end finds little left to write. Without it the
// kernel starts writing a copy's pages back only past `dirty_background_ratio` (gigabytes on a
// large machine) and the final flush writes the whole copy after the copy; with it the two
// overlap (measurements in docs/performance.md, "Durable copies").
//
// The background flush goes through a second descriptor of the same inode (opened through
// /proc/self/fd), never the device's own: a writeback error is reported once per open file
// description (the kernel's errseq), so a background flush on the device's descriptor could
// take an error that the caller's flush must report. On the second descriptor it cannot: the
// caller's flush still reports every error since the device was opened, and the background
// flush's own outcome is only counted. Where /proc is missing the device has no write-behind.

import fs from 'node:fs';
import { MIB } from '../constants.js';

/**
 * The CLI's bytes written between two background flushes: a flush's fixed cost (a journal
 * commit, a device cache flush) stays small beside the data it writes; 32, 64 and 128 MiB
 * measured alike (docs/performance.md).
 */
export const WRITE_BEHIND_BYTES_DEFAULT = 64 * MIB;

/** What write-behind did, for tests and diagnostics. */
export interface WriteBehindStats {
  /** Background flushes that completed without error. */
  flushes: number;
  /** Background flushes that failed (the caller's own flush reports the error). */
  failures: number;
}

/** The background flushing of one device; made by `openWriteBehind`. */
export class WriteBehind {
  readonly stats: WriteBehindStats = { flushes: 0, failures: 0 };
  readonly #fd: number;
  readonly #flushBytes: number;
  #unflushedBytes = 0;
  #flushing = false;
  #closing = false;
  #idle: (() => void) | undefined;

  /** @internal Use `openWriteBehind`. */
  constructor(fd: number, flushBytes: number) {
    this.#fd = fd;
    this.#flushBytes = flushBytes;
  }

  /** Counts `lengthBytes` written to the device; starts a background flush when due. */
  wrote(lengthBytes: number): void {
    this.#unflushedBytes += lengthBytes;
    if (!this.#flushing && !this.#closing && this.#unflushedBytes >= this.#flushBytes) {
      this.#flush();
    }
  }

  #flush(): void {
    this.#flushing = true;
    this.#unflushedBytes = 0;
    fs.fdatasync(this.#fd, (error) => {
      this.#flushing = false;
      if (error === null) this.stats.flushes += 1;
      else this.stats.failures += 1;
      this.#idle?.();
    });
  }

  /** Waits for a background flush in flight, then closes the second descriptor. */
  async close(): Promise<void> {
    this.#closing = true;
    if (this.#flushing) {
      await new Promise<void>((resolve) => {
        this.#idle = resolve;
      });
    }
    await new Promise<void>((resolve) => {
      // Only a background flush ever used this descriptor: a failure to close it loses nothing.
      fs.close(this.#fd, () => resolve());
    });
  }
}

/**
 * Write-behind for the device whose descriptor is `fd`, flushing every `flushBytes`: a second,
 * read-only descriptor of the same inode, or null where it cannot be opened (no /proc).
 */
export function openWriteBehind(fd: number, flushBytes: number): WriteBehind | null {
  try {
    return new WriteBehind(fs.openSync(`/proc/self/fd/${fd}`, fs.constants.O_RDONLY),
      flushBytes);
  } catch {
    return null;
  }
}
