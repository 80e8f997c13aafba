// Owns the local backend: a `BlockDevice` over a regular file (`kind: 'file'`) or a Linux block
// device such as a loop device (`kind: 'block'`), through one file descriptor and one engine
// chosen when it opens (file-engine.ts: the io_uring engine by default, or the threadpool), and
// the one request path onto that engine. `isPlainTransfer` is its one check: a plain read or
// write goes to the engine as its single transfer step; anything else, or a transfer that came
// back short or failed, runs (or resumes) the step program of file-request.ts, whose semantics
// `submit` and `submitSync` share. The device counts requests in flight so that `close()` can
// wait for them before it closes the descriptor; `closed` turns true as soon as `close()`
// begins, and requests submitted after that fail with EBADF without a syscall. Extent queries
// (`extents`) are counted the same way: a regular file answers from SEEK_DATA/SEEK_HOLE
// (file-extents.ts); a block device reports all data. `extentsSync` runs the same walk with
// blocking seeks. A device opened with `writeBehindBytes`
// tells its write-behind (file-write-behind.ts) about every write and copy offload that
// completed, and closes it before its own descriptor.

import fs from 'node:fs';
import assert from '../assert.js';
import { IOV_MAX } from '../constants.js';
import { IoError, errnoOf } from '../errors.js';
import { sectorsToBytes } from '../units.js';
import {
  type BlockDevice, type DeviceDone, type DeviceExtent, type DeviceLimits, type DeviceRequest,
  type ExtentsAnswer, type ExtentsDone, segmentsBytes,
} from './block-device.js';
import { DATA } from './extent-list.js';
import { walkFileExtents } from './file-extents.js';
import { extentsError } from './request-error.js';
import { libcAvailable, seekAsync, seekSync, SysError } from '../sys/libc.js';
import { withoutDiscard, type QueueLimits } from './file-limits.js';
import { type FileDeviceOptions, openLocalDevice, validateFileDeviceOptions } from './file-open.js';
import {
  type FileRequestContext, runFileRequest, runPlainTransfer,
} from './file-request.js';
import {
  emptyStats, type FileDeviceStats, initialMethods, type SpecialMethods, type ZeroMethod,
  type DiscardMethod,
} from './file-special-ops.js';
import { copyRangeAsync } from './file-copy-range.js';
import {
  chooseFileEngine, type FileEngine, type FileTarget, resumeProgram, runProgram, runProgramSync,
} from './file-engine.js';
import type { Step, StepResult } from './file-steps.js';
import { runStepSync } from './file-syscalls.js';
import { type CopySlots, defaultCopySlots } from './copy-slots.js';
import { openWriteBehind, type WriteBehind, type WriteBehindStats } from './file-write-behind.js';

/** The context with `closed` writable: the device's one closing flag, set in `close()`. */
type DeviceContext = Omit<FileRequestContext, 'closed'> & { closed: boolean };

/** A regular file or block device opened by `openFileDevice`. */
export class FileDevice implements BlockDevice {
  /** The path it was opened with. */
  readonly name: string;
  /** `file` for a regular file, `block` for a block device. */
  readonly kind: 'file' | 'block';
  /** Size in 512-byte sectors (whole logical blocks). */
  readonly sizeSectors: number;
  /**
   * The true size in bytes (the regular file's length, the block device's BLKGETSIZE64):
   * more than `sizeSectors * 512` when it ends in a partial logical block, which no request
   * can address.
   */
  readonly sizeBytes: number;
  /** Opened read-only. */
  readonly readOnly: boolean;
  /** Opened with O_DIRECT. */
  readonly direct: boolean;
  /** Always true: `submitSync` exists. */
  readonly canBlock = true;
  /** The sysfs queue limits the limits were derived from, when the kernel has them. */
  readonly queue: QueueLimits | undefined;
  /** Syscalls completed so far; read-only for callers. */
  readonly stats: Readonly<FileDeviceStats>;

  readonly #fd: number;
  readonly #context: DeviceContext;
  readonly #methods: SpecialMethods;
  #limits: DeviceLimits;
  #closePromise: Promise<void> | undefined;
  #inflightCount = 0;
  #drained: (() => void) | undefined;
  readonly #engine: FileEngine;
  readonly #target: FileTarget;
  readonly #copySlots: CopySlots;
  readonly #writeBehind: WriteBehind | null;

  /** @internal Use `openFileDevice`. */
  constructor(name: string, opened: {
    fd: number; kind: 'file' | 'block'; sizeSectors: number; sizeBytes: number;
    limits: DeviceLimits;
    queue: QueueLimits | undefined; readOnly: boolean; direct: boolean;
    disableMethods: FileDeviceOptions['disableMethods']; inlineCachedReads: boolean;
    engine: FileEngine; copySlots: CopySlots; writeBehindBytes: number;
  }) {
    this.name = name;
    this.kind = opened.kind;
    this.sizeSectors = opened.sizeSectors;
    this.sizeBytes = opened.sizeBytes;
    this.readOnly = opened.readOnly;
    this.direct = opened.direct;
    this.queue = opened.queue;
    this.#fd = opened.fd;
    this.#limits = opened.limits;
    this.#engine = opened.engine;
    this.#copySlots = opened.copySlots;
    this.#writeBehind = opened.writeBehindBytes > 0 ?
      openWriteBehind(opened.fd, opened.writeBehindBytes) : null;
    const stats = emptyStats();
    this.stats = stats;
    this.#target = {
      fd: opened.fd, direct: opened.direct, inlineReads: opened.inlineCachedReads, stats,
    };
    this.#methods = initialMethods(opened.kind, opened.disableMethods ?? [],
      opened.limits.maxDiscardSectors > 0);
    // A plain field (set by close()), not a getter: `isPlainTransfer` reads it on every request.
    this.#context = {
      name, sizeSectors: this.sizeSectors, readOnly: this.readOnly, methods: this.#methods, stats,
      closed: false,
    };
  }

  /**
   * Whether this device lets its engine serve small cached reads inline (preadv2 RWF_NOWAIT):
   * the threadpool engine's shortcut, for buffered devices opened without
   * `inlineCachedReads: false`. The io_uring engine sends reads to its ring instead.
   */
  get inlineCachedReads(): boolean {
    return this.#target.inlineReads;
  }

  /**
   * @internal A path that opens this very file or block device again from any thread of this
   * process while the device is open (`/proc/self/fd/N`), whatever its name now points to.
   */
  get reopenPath(): string {
    return `/proc/self/fd/${this.#fd}`;
  }

  /** The engine that runs this device's steps. */
  get engine(): FileEngine {
    return this.#engine;
  }

  /** Current limits; discard drops to 0 once the kernel has refused it. */
  get limits(): DeviceLimits {
    if (this.#methods.discard === null && this.#limits.maxDiscardSectors !== 0) {
      this.#limits = withoutDiscard(this.#limits);
    }
    return this.#limits;
  }

  /** True from the moment `close()` began. */
  get closed(): boolean {
    return this.#context.closed;
  }

  /** The special methods still in use: how this device discards and zeroes now. */
  get methods(): {
    readonly discard: DiscardMethod | null; readonly zeroes: readonly ZeroMethod[];
  } {
    return { discard: this.#methods.discard, zeroes: [...this.#methods.zeroes] };
  }

  /**
   * What write-behind has done (`writeBehindBytes`), or null for a device opened without it (or
   * where it could not be set up: no /proc).
   */
  get writeBehind(): Readonly<WriteBehindStats> | null {
    return this.#writeBehind?.stats ?? null;
  }

  /** Starts one request; `done` runs exactly once, after this returns. */
  submit(request: DeviceRequest, done: DeviceDone): void {
    this.#inflightCount += 1;
    const complete = (error: IoError | null): void => {
      if (error === null && request.op === 'write' && request.countSectors > 0) {
        this.#writeBehind?.wrote(sectorsToBytes(request.countSectors));
      }
      this.#uncount();
      done(error);
    };
    try {
      this.#run(request, complete);
    } catch (error) {
      // A malformed request fails an assertion before any syscall; it is not in flight.
      this.#inflightCount -= 1;
      throw error;
    }
  }

  /**
   * Copy offload with `copy_file_range`: only between regular files opened without O_DIRECT,
   * this one writable and both open; anything else answers false and starts nothing. Both
   * devices count the copy in flight, so neither closes its descriptor under it.
   */
  copyFrom(
    source: BlockDevice, sourceSector: number, sector: number, countSectors: number,
    done: DeviceDone,
  ): boolean {
    if (!(source instanceof FileDevice) || !this.copyOffload || !source.copyOffload ||
        this.readOnly || !isRange(sourceSector, countSectors, source.sizeSectors) ||
        !isRange(sector, countSectors, this.sizeSectors)) {
      return false;
    }
    this.#inflightCount += 1;
    source.#inflightCount += 1;
    const finish = (): void => {
      source.#uncount();
      this.#uncount();
    };
    try {
      copyRangeAsync(this.#copySlots, {
        sourceFd: source.#fd, sourceSector, destFd: this.#fd, destName: this.name,
        destSector: sector, countSectors,
      }, this.#context.stats, (error) => {
        if (error === null) this.#writeBehind?.wrote(sectorsToBytes(countSectors));
        finish();
        done(error);
      });
    } catch {
      // Nothing started (no libc bindings on this system, say): the caller copies otherwise.
      finish();
      return false;
    }
    return true;
  }

  /**
   * How `[sector, sector + countSectors)` is allocated (see `BlockDevice.extents`). A regular
   * file answers from `lseek` SEEK_DATA/SEEK_HOLE on the threadpool, O_DIRECT or not; a block
   * device, or a system without the libc bindings, reports the range as one data extent. The
   * query counts in flight, so `close()` waits for it; on a closed device it fails with EBADF.
   */
  extents(sector: number, countSectors: number, done: ExtentsDone): void {
    const early = this.#extentsWithoutSeek(sector, countSectors);
    if (early !== null) {
      queueMicrotask(() => done(early.error, early.extents));
      return;
    }
    this.#inflightCount += 1;
    const fd = this.#fd;
    walkFileExtents((offsetBytes, whence, callback) => seekAsync(fd, offsetBytes, whence, callback),
      sector, countSectors, (error, extents) => {
        this.#uncount();
        const answer = this.#walkAnswer(sector, countSectors, error, extents);
        done(answer.error, answer.extents);
      });
  }

  /**
   * `extents`'s answer computed on the calling thread (see `BlockDevice.extentsSync`): the
   * same walk, with each `lseek` blocking until the filesystem answers.
   */
  extentsSync(sector: number, countSectors: number): ExtentsAnswer {
    const early = this.#extentsWithoutSeek(sector, countSectors);
    if (early !== null) return early;
    const fd = this.#fd;
    let answer: ExtentsAnswer | undefined;
    walkFileExtents((offsetBytes, whence, callback) => {
      const found = seekSync(fd, offsetBytes, whence);
      if (found instanceof SysError) callback(found, 0);
      else callback(null, found);
    }, sector, countSectors, (error, extents) => {
      answer = this.#walkAnswer(sector, countSectors, error, extents);
    });
    assert.ok(answer !== undefined, 'a walk of blocking seeks ends inside the call');
    return answer;
  }

  /**
   * The answer of an extent query that needs no `lseek`: EBADF once closed, all data for a
   * block device or where the libc bindings do not load; null when the file must be walked.
   */
  #extentsWithoutSeek(sector: number, countSectors: number): ExtentsAnswer | null {
    assert.ok(isRange(sector, countSectors, this.sizeSectors), 'an extent query inside the device');
    if (this.#context.closed) {
      return { error: extentsError(this, sector, countSectors, 'EBADF', 'lseek'), extents: [] };
    }
    if (this.kind === 'block' || !libcAvailable()) {
      return { error: null, extents: [{ sector, countSectors, ...DATA }] };
    }
    return null;
  }

  /** A walk's outcome as the device answers it: a failed seek becomes the device's IoError. */
  #walkAnswer(
    sector: number, countSectors: number, error: SysError | null,
    extents: readonly DeviceExtent[],
  ): ExtentsAnswer {
    if (error === null) return { error: null, extents };
    return { error: extentsError(this, sector, countSectors, error, error.syscall), extents: [] };
  }

  /**
   * True while `copyFrom` can copy into or out of this device: a regular file opened without
   * O_DIRECT, not closed.
   */
  get copyOffload(): boolean {
    return this.kind === 'file' && !this.direct && !this.#context.closed;
  }

  /** The one asynchronous path: the plain transfer as one step, else the step program. */
  #run(request: DeviceRequest, done: (error: IoError | null) => void): void {
    const engine = this.#engine;
    const target = this.#target;
    const { ioprio } = request;
    if (!isPlainTransfer(this.#context, request)) {
      runProgram(engine, target, ioprio, runFileRequest(this.#context, request), done);
      return;
    }
    engine.runStep(target, transferStep(request), ioprio, (result) => {
      if (this.#movedAll(request, result)) done(null);
      else {
        resumeProgram(engine, target, ioprio, runPlainTransfer(this.#context, request), result,
          done);
      }
    });
  }

  /** True, counting the call, when a plain transfer's one step moved all its bytes. */
  #movedAll(request: DeviceRequest, result: StepResult): boolean {
    if (result.error !== null || result.bytes !== sectorsToBytes(request.countSectors)) {
      return false;
    }
    if (request.op === 'read') this.#context.stats.reads += 1;
    else this.#context.stats.writes += 1;
    return true;
  }

  #uncount(): void {
    this.#inflightCount -= 1;
    if (this.#inflightCount === 0) this.#drained?.();
  }

  /** Runs one request to completion with blocking calls. */
  submitSync(request: DeviceRequest): IoError | null {
    const error = this.#runSync(request);
    if (error === null && request.op === 'write' && request.countSectors > 0) {
      this.#writeBehind?.wrote(sectorsToBytes(request.countSectors));
    }
    return error;
  }

  /** `submitSync`'s one path: the plain transfer as one step, else the step program. */
  #runSync(request: DeviceRequest): IoError | null {
    const fd = this.#fd;
    if (!isPlainTransfer(this.#context, request)) {
      return runProgramSync(fd, runFileRequest(this.#context, request));
    }
    const result = runStepSync(fd, transferStep(request));
    if (this.#movedAll(request, result)) return null;
    return runProgramSync(fd, runPlainTransfer(this.#context, request), result);
  }

  /** Waits for requests in flight, then closes the descriptor. Idempotent. */
  close(): Promise<void> {
    this.#context.closed = true;
    this.#closePromise ??= this.#closeWhenDrained();
    return this.#closePromise;
  }

  async #closeWhenDrained(): Promise<void> {
    if (this.#inflightCount > 0) {
      await new Promise<void>((resolve) => {
        this.#drained = resolve;
      });
    }
    await this.#writeBehind?.close();
    await new Promise<void>((resolve, reject) => {
      fs.close(this.#fd, (error) => {
        if (error === null) resolve();
        else reject(new IoError({ errno: errnoOf(error), syscall: 'close', device: this.name,
          sector: 0, countSectors: 0, cause: error }));
      });
    });
  }
}

/**
 * True when `request` is a plain read or write that the step program would run as exactly one
 * transfer step of its own segments: no flags, not empty, at most IOV_MAX segments covering the
 * request, inside the device, the device open, and a write only to a writable device. Such a
 * request goes to the engine as that step alone; if it comes back short or failed, the rest
 * runs in `runPlainTransfer`. A request whose segments do not cover it is not plain: the
 * program's assertion reports it.
 */
function isPlainTransfer(context: FileRequestContext, request: DeviceRequest): boolean {
  if (request.op !== 'read' && request.op !== 'write') return false;
  if (request.flags.preflush || request.flags.fua || context.closed) return false;
  const segmentCount = request.segments.length;
  if (request.countSectors === 0 || segmentCount === 0 || segmentCount > IOV_MAX) return false;
  if (request.op === 'write' && context.readOnly) return false;
  if (request.sector + request.countSectors > context.sizeSectors) return false;
  return segmentsBytes(request.segments) === sectorsToBytes(request.countSectors);
}

/** The one transfer step of a plain read or write. */
function transferStep(request: DeviceRequest): Step {
  return {
    kind: request.op as 'read' | 'write', buffers: request.segments,
    positionBytes: sectorsToBytes(request.sector),
  };
}

/** True when `[sector, sector + countSectors)` is a non-empty range inside `sizeSectors`. */
function isRange(sector: number, countSectors: number, sizeSectors: number): boolean {
  return Number.isSafeInteger(sector) && Number.isSafeInteger(countSectors) && sector >= 0 &&
    countSectors > 0 && sector + countSectors <= sizeSectors;
}

/**
 * Opens a regular file or a block device as a `BlockDevice`. Block devices are sized with
 * BLKGETSIZE64 and limited by their sysfs queue; regular files use the library's defaults.
 *
 * @throws InvalidArgTypeError, OutOfRangeError, InvalidRequestError for bad options.
 * @throws OpenError (`DMIO_ERR_OPEN_FAILED`) when the OS refuses, with its errno.
 * @example
 * const device = await openFileDevice('/tmp/disk.img', { create: { sizeBytes: 64 << 20 } });
 */
export async function openFileDevice(
  path: string, options: FileDeviceOptions = {},
): Promise<FileDevice> {
  validateFileDeviceOptions(path, options);
  const opened = await openLocalDevice(path, options);
  return new FileDevice(path, {
    ...opened,
    readOnly: options.readOnly === true,
    direct: options.direct === true,
    disableMethods: options.disableMethods,
    inlineCachedReads: options.direct !== true && options.inlineCachedReads !== false,
    engine: chooseFileEngine(options),
    copySlots: options.copySlots ?? defaultCopySlots(),
    writeBehindBytes: options.readOnly === true ? 0 : options.writeBehindBytes ?? 0,
  });
}

export type { FileDeviceOptions } from './file-open.js';
export {
  defaultFileEngine, type FileEngine, type FileEngineKind, type FileTarget, type StepCallback,
} from './file-engine.js';
export type { Step, StepResult } from './file-steps.js';
export { IoUringEngine, type IoUringEngineOptions } from './file-ring.js';
export { SQPOLL_IDLE_MS_MAX } from '../sys/io-uring.js';
export { ThreadpoolEngine } from './file-threadpool-engine.js';
export { CopySlots } from './copy-slots.js';
export { WRITE_BEHIND_BYTES_DEFAULT, type WriteBehindStats } from './file-write-behind.js';
export type {
  FileDeviceStats, SpecialMethod, ZeroMethod, DiscardMethod,
} from './file-special-ops.js';
