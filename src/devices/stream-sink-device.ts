// Owns the stream sink device: a write-only BlockDevice that hands what is written to it, in
// order, to a Node writable stream (stdout, a pipe, a socket, a file or compression stream), so
// a copy can end in a stream with kcopyd as the one copy engine (`writeSeq: true` issues its
// writes in offset order). Rules beyond those of block-device.ts:
// - Writes arrive at ascending, contiguous offsets from sector 0. A write anywhere else fails
//   with ESPIPE (as pwrite on a pipe) and nothing of it reaches the stream.
// - Each write is copied into one buffer and handed to `writable.write`; `done` is called from
//   that write's callback, once the stream has taken the bytes. The caller's memory (kcopyd's
//   pages) is thus held while the stream pushes back, and is free at `done` whatever the
//   stream keeps (a PassThrough keeps the very chunk): memory is the writes in flight, twice,
//   plus what the stream itself buffers. With `zeroCopy` the stream gets views of the
//   caller's memory instead (no allocation: a fresh buffer per chunk costs page faults and
//   GC, see docs/performance.md, "Stream sink"), which is right only for streams done with a
//   chunk once they called back.
// - The stream's first error (EPIPE when the reader went away, ENOSPC on a full disk) fails
//   that write and every later one with the same errno. An 'error' listener keeps the error
//   from crashing the process; it stays on a stream that failed.
// - Reads fail with EBADF (this is a write end); discard and write-zeroes are not supported
//   (limits 0: kcopyd zeroes with plain writes).
// - A flush (a pure PREFLUSH request, or a write with preflush or fua) completes once every
//   earlier write was taken, after the `flush` option ran (such as fdatasync of the file behind
//   stdout); without that option a stream has nothing to flush.
// - close() waits for the writes in flight and leaves the stream open: it is the caller's.

import assert from '../assert.js';
import { MIB, PAGE_SIZE, SECTOR_SIZE } from '../constants.js';
import { validateBoolean, validateIntegerInRange } from '../validate.js';
import { InvalidArgTypeError, type IoError } from '../errors.js';
import {
  requestPastEnd, segmentsBytes, type BlockDevice, type DeviceDone, type DeviceLimits,
  type DeviceRequest,
} from './block-device.js';
import { requireWholeSectors } from './ram-device.js';
import { pastEndError, requestError } from './request-error.js';
import { bytesToSectorsExact } from '../units.js';

/** Largest sink (1 PiB): nothing is stored, so only sector arithmetic bounds it. */
const STREAM_SINK_BYTES_MAX = 2 ** 50;

/**
 * The writable side a sink needs: Node's `Writable` (and `process.stdout`, `net.Socket`,
 * `fs.WriteStream`, zlib streams) has it.
 */
export interface SinkWritable {
  /** Takes `chunk`; calls `callback` once it is taken, with the error if it could not be. */
  write(chunk: Uint8Array, callback: (error?: Error | null) => void): boolean;
  on(event: 'error', listener: (error: Error) => void): unknown;
  off(event: 'error', listener: (error: Error) => void): unknown;
}

/** Options of `createStreamSinkDevice`. */
export interface StreamSinkDeviceOptions {
  /** Bytes the sink takes, a multiple of 512 up to 1 PiB: the length of the region copied. */
  sizeBytes: number;
  /** Name in messages and errors (default `stream`). */
  name?: string;
  /**
   * Makes what the stream took durable, for flush requests (kcopyd's `flush: true`), such as
   * `fdatasync` of the file behind stdout; a rejection fails the flush with its errno. Absent:
   * the stream has nothing to flush (`limits.flush` false) and a flush only waits for the
   * writes before it.
   */
  flush?: () => Promise<void>;
  /**
   * Hand the stream views of the writer's memory (kcopyd's pages) rather than a copy. Only for
   * a stream that is done with a chunk once its write called back, as `process.stdout`,
   * `net.Socket`, `fs.WriteStream` and zlib streams are; never for one that keeps or passes on
   * the chunk itself (a `PassThrough`), since the memory is reused for the next chunk.
   * Default false.
   */
  zeroCopy?: boolean;
}

/**
 * Most sectors one sink request carries (4 MiB, kcopyd's largest chunk), so a chunk reaches the
 * stream as one write.
 */
const SINK_REQUEST_SECTORS_MAX = bytesToSectorsExact(4 * MIB);

/** Sink limits: a whole chunk of pages in one request, no special operations. */
function sinkLimits(flushes: boolean): DeviceLimits {
  return {
    logicalBlockBytes: SECTOR_SIZE,
    physicalBlockBytes: SECTOR_SIZE,
    maxSectorsPerRequest: SINK_REQUEST_SECTORS_MAX,
    maxSegmentsPerRequest: (SINK_REQUEST_SECTORS_MAX * SECTOR_SIZE) / PAGE_SIZE,
    maxDiscardSectors: 0,
    maxWriteZeroesSectors: 0,
    memoryAlignmentBytes: 0,
    flush: flushes,
    fua: flushes,
  };
}

/** A write-only device whose writes, in offset order, go to a writable stream. */
export class StreamSinkDevice implements BlockDevice {
  readonly name: string;
  readonly kind = 'stream' as const;
  readonly sizeSectors: number;
  readonly readOnly = false;
  readonly limits: DeviceLimits;
  readonly canBlock = false;
  readonly #writable: SinkWritable;
  readonly #flush: (() => Promise<void>) | null;
  readonly #zeroCopy: boolean;
  /** The only sector a write may start at: where the bytes taken so far end. */
  #nextSector = 0;
  /** Bytes the stream has taken (write callbacks without error). */
  #takenBytes = 0;
  #inFlight = 0;
  #idleWaiters: Array<() => void> = [];
  #streamError: Error | null = null;
  #closed = false;
  readonly #onError = (error: Error): void => {
    this.#streamError ??= error;
  };

  constructor(writable: SinkWritable, name: string, sizeSectors: number,
    flush: (() => Promise<void>) | null, zeroCopy: boolean) {
    this.#writable = writable;
    this.name = name;
    this.sizeSectors = sizeSectors;
    this.#flush = flush;
    this.#zeroCopy = zeroCopy;
    this.limits = sinkLimits(flush !== null);
    writable.on('error', this.#onError);
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Bytes the stream has taken so far. */
  get takenBytes(): number {
    return this.#takenBytes;
  }

  /** The stream's first error, or null. */
  get streamError(): Error | null {
    return this.#streamError;
  }

  submit(request: DeviceRequest, done: DeviceDone): void {
    const refused = this.#refusal(request);
    if (refused !== null) {
      queueMicrotask(() => done(refused));
      return;
    }
    if (request.countSectors === 0) {
      this.#whenIdle(() => this.#flushThen(request, done));
      return;
    }
    this.#nextSector += request.countSectors;
    this.#inFlight += 1;
    const chunks = this.#zeroCopy ? request.segments : [copyOf(request.segments)];
    let pendingChunks = chunks.length;
    let firstError: Error | null = null;
    let submitting = true;
    const onWritten = (error?: Error | null): void => {
      firstError ??= error ?? null;
      pendingChunks -= 1;
      if (pendingChunks > 0) return;
      const finish = (): void => this.#written(request, firstError, done);
      // A writable that calls back at once must not make `done` synchronous.
      if (submitting) queueMicrotask(finish);
      else finish();
    };
    for (const chunk of chunks) this.#writable.write(chunk, onWritten);
    submitting = false;
  }

  /** Waits for the writes in flight; the stream stays open (the caller ends it). */
  async close(): Promise<void> {
    this.#closed = true;
    if (this.#inFlight > 0) await new Promise<void>((resolve) => this.#idleWaiters.push(resolve));
    // A stream that failed may still emit its 'error': the listener stays for it.
    if (this.#streamError === null) this.#writable.off('error', this.#onError);
  }

  /** Why `request` fails without reaching the stream, or null. */
  #refusal(request: DeviceRequest): IoError | null {
    if (this.#closed) return requestError(this, request, 'EBADF');
    if (request.op === 'read') return requestError(this, request, 'EBADF');
    if (request.op !== 'write') return requestError(this, request, 'EOPNOTSUPP');
    if (requestPastEnd(this, request)) return pastEndError(this, request);
    if (this.#streamError !== null) return this.#failure(request, this.#streamError);
    if (request.countSectors > 0 && request.sector !== this.#nextSector) {
      return requestError(this, request, 'ESPIPE');
    }
    return null;
  }

  #written(request: DeviceRequest, error: Error | null, done: DeviceDone): void {
    if (error !== null) this.#streamError ??= error;
    else this.#takenBytes += request.countSectors * SECTOR_SIZE;
    const failure = error === null ? null : this.#failure(request, error);
    const settle: DeviceDone = (result) => {
      done(result);
      this.#inFlight -= 1;
      assert.ok(this.#inFlight >= 0, 'a write completes once');
      if (this.#inFlight === 0) this.#wakeIdle();
    };
    // Flushing after the write covers the writes before it too, as PREFLUSH asks.
    const wantsFlush = request.flags.preflush || request.flags.fua;
    if (failure === null && wantsFlush) this.#flushThen(request, settle);
    else settle(failure);
  }

  /** Runs the flush option (if any), then `done`; a failure is the request's error. */
  #flushThen(request: DeviceRequest, done: DeviceDone): void {
    if (this.#flush === null) {
      done(null);
      return;
    }
    const flush = this.#flush;
    // A flush function that throws instead of rejecting fails the flush all the same.
    Promise.resolve().then(flush).then(() => done(null),
      (error: unknown) => done(requestError(this, request, error, 'flush')));
  }

  /** Runs `fn` once no write is in flight (on a later microtask at the earliest). */
  #whenIdle(fn: () => void): void {
    if (this.#inFlight === 0) queueMicrotask(fn);
    else this.#idleWaiters.push(fn);
  }

  #wakeIdle(): void {
    const waiters = this.#idleWaiters;
    this.#idleWaiters = [];
    for (const waiter of waiters) waiter();
  }

  /** The IoError for a stream failure: its errno, with a destroyed or ended stream as EPIPE. */
  #failure(request: DeviceRequest, error: Error): IoError {
    const code = (error as NodeJS.ErrnoException).code;
    const gone = code === 'ERR_STREAM_DESTROYED' || code === 'ERR_STREAM_WRITE_AFTER_END';
    return requestError(this, request, gone ? 'EPIPE' : error, 'write');
  }
}

/** The request's bytes in one buffer of their own. */
function copyOf(segments: readonly Uint8Array[]): Buffer {
  const lengthBytes = segmentsBytes(segments);
  const buffer = Buffer.allocUnsafe(lengthBytes);
  let offsetBytes = 0;
  for (const segment of segments) {
    buffer.set(segment, offsetBytes);
    offsetBytes += segment.length;
  }
  assert.equal(offsetBytes, buffer.length);
  return buffer;
}

/**
 * Creates a device that writes what it is given, in offset order, to `writable`: the end of a
 * copy into a stream. Copy into it with kcopyd's `writeSeq: true` (writes issued in offset
 * order) to one region from sector 0; a write that is not the next in order fails with ESPIPE,
 * reads with EBADF. Each write completes once the stream took its bytes, so the stream's
 * backpressure holds the copy back and memory stays bounded; a stream error (EPIPE, ENOSPC)
 * is that write's error and every later one's, with its errno. Closing the device does not
 * end the stream.
 *
 * @throws InvalidArgTypeError when `writable` has no `write`; OutOfRangeError for a size
 * outside 0 to 1 PiB; InvalidRequestError (`DMIO_ERR_MISALIGNED`) for a size that is not whole
 * sectors.
 * @example
 * const sink = createStreamSinkDevice(process.stdout, { sizeBytes: 64 * 1024 * 1024 });
 * const kc = dmKcopydClientCreate();
 * const result = await dmKcopydCopy(kc, { device: disk, sector: 0, count: 131072 },
 *   [{ device: sink, sector: 0, count: 131072 }], { writeSeq: true });
 */
export function createStreamSinkDevice(
  writable: SinkWritable, options: StreamSinkDeviceOptions,
): StreamSinkDevice {
  if (typeof (writable as { write?: unknown } | null)?.write !== 'function') {
    throw new InvalidArgTypeError('writable', 'a writable stream', writable);
  }
  const sizeBytes = validateIntegerInRange(options.sizeBytes, 'options.sizeBytes', 0,
    STREAM_SINK_BYTES_MAX);
  requireWholeSectors(sizeBytes);
  if (options.flush !== undefined && typeof options.flush !== 'function') {
    throw new InvalidArgTypeError('options.flush', 'a function', options.flush);
  }
  const zeroCopy = validateBoolean(options.zeroCopy, 'options.zeroCopy', false);
  return new StreamSinkDevice(writable, options.name ?? 'stream', sizeBytes / SECTOR_SIZE,
    options.flush ?? null, zeroCopy);
}
