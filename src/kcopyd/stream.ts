// Owns copying a stream of unknown length (a pipe, stdin, any async iterable of bytes) to up to
// 8 destinations with kcopyd as the one copy engine. The input is read in segments of
// KCOPYD_STREAM_SEGMENT_BYTES into one of two in-memory source devices: while kcopyd copies one
// segment (an ordinary job, chunks in offset order, 8 in flight), the next is read into the
// other, so memory stays at three segments however long the input is. A segment's length is
// known before its job starts, which is how a copy of unknown length ends exactly at EOF.
// Across segments the result is that of one job with dropFailedDestinations: a destination
// that failed gets no later segment, one whose region would run past its end fails with ENOSPC
// (keeping what it got), and the others go on. A last segment that ends inside a sector is
// refused (readErr, nothing of that segment written) or zero-padded to a whole sector, as the
// caller chose; bytes are never dropped in silence. With `flush`, every destination written to
// is flushed once at the end. With `sparse`, each segment's job keeps holes as any sparse
// copy does (sparse.ts: zero blocks found in what was read skip, or become write-zeroes on, each
// destination), so a stream of a mostly empty image makes a sparse image too.

import { MIB, SECTOR_SIZE } from '../constants.js';
import type { DmIoRegion } from '../core/request.js';
import type { BlockDevice } from '../devices/block-device.js';
import { createRamDevice, type RamDevice } from '../devices/ram-device.js';
import assert from '../assert.js';
import { bytesToSectorsExact, bytesToSectorsFloor } from '../units.js';
import {
  AbortedError, DmIoError, InvalidArgTypeError, IoError, OutOfRangeError,
} from '../errors.js';
import { KCOPYD_SUB_JOB_SECTORS_MAX } from './constants.js';
import type { KcopydChunkReadFn, KcopydResult } from './job.js';
import { KcopydClient } from './kcopyd-client.js';
import { validateSparse, type KcopydSparseOptions, type ValidSparse } from './sparse.js';
import { dmKcopydCopy } from './submit.js';

/**
 * Bytes read ahead per segment (8 MiB): two chunks' worth of every sub-job size up to 4 MiB,
 * so each segment keeps kcopyd's 8 chunks in flight at the default sizes; three segments
 * (the two source devices and the read buffer) are the copy's whole memory besides kcopyd's.
 */
export const KCOPYD_STREAM_SEGMENT_BYTES = 8 * MIB;

/** A destination of a stream copy: the input goes to `device` from `sector` on. */
export interface KcopydStreamDest {
  readonly device: BlockDevice;
  readonly sector: number;
}

/** Options of `dmKcopydCopyStream`. */
export interface KcopydStreamOptions {
  /** Copy at most this many bytes (the rest of the input is left unread); default: to EOF. */
  maxBytes?: number;
  /**
   * An input that ends inside a sector: `refuse` (default) fails the read (readErr; the last
   * segment is not written) and `zero-pad` writes the last sector padded with zeros
   * (`paddedBytes` says how many).
   */
  partialSector?: 'refuse' | 'zero-pad';
  /** Flush every destination written to once the input is copied (see `dmKcopydCopy`). */
  flush?: boolean;
  /** Cancels the copy, as for `dmKcopydCopy`. */
  signal?: AbortSignal;
  /** Called with the bytes copied so far (the total is not known until EOF). */
  onProgress?: (doneBytes: number) => void;
  /** Called with each chunk's data before it is written; sectors count from the input's start. */
  onChunkRead?: KcopydChunkReadFn;
  /**
   * Keep holes, as `dmKcopydCopy`'s `sparse` option (the input has no extents: zero detection
   * finds them); `holes` given per destination are in the order of `dests`.
   */
  sparse?: boolean | KcopydSparseOptions;
}

/** What a stream copy reports: a copy's result plus what the input held. */
export interface KcopydStreamResult extends KcopydResult {
  /** Bytes taken from the input (at most `maxBytes`). */
  readonly inputBytes: number;
  /** Zero bytes added to end the last sector (`partialSector: 'zero-pad'`), else 0. */
  readonly paddedBytes: number;
  /** True when the input held more than `maxBytes` (what is beyond was not read). */
  readonly truncated: boolean;
}

/**
 * Copies `input` to up to 8 destinations until it ends (or `maxBytes`), with kcopyd, in
 * bounded memory (three 8 MiB segments besides the client's pages). A destination is complete
 * when `writtenBytes[d]` equals `inputBytes + paddedBytes`. Failed destinations are dropped
 * and the others finished (`dropFailedDestinations`); a destination too small for the input
 * fails with ENOSPC when the input reaches its end. Resolves when done (never rejects for I/O
 * errors; an input that throws is a read error, `readError` carrying it).
 *
 * @throws InvalidArgTypeError, OutOfRangeError for bad arguments; AbortedError when `signal`
 * is already aborted; the errors of `dmKcopydCopy` for bad destinations.
 * @example
 * const kc = dmKcopydClientCreate({ subJobSectors: 2048 });
 * const result = await dmKcopydCopyStream(kc, process.stdin,
 *   [{ device: a, sector: 0 }, { device: b, sector: 0 }], { flush: true });
 */
export async function dmKcopydCopyStream(
  kc: KcopydClient, input: AsyncIterable<Uint8Array>, dests: readonly KcopydStreamDest[],
  options: KcopydStreamOptions = {},
): Promise<KcopydStreamResult> {
  if (!(kc instanceof KcopydClient)) throw new InvalidArgTypeError('kc', 'a KcopydClient', kc);
  if (typeof (input as { [Symbol.asyncIterator]?: unknown })?.[Symbol.asyncIterator] !==
      'function') {
    throw new InvalidArgTypeError('input', 'an async iterable of Uint8Array', input);
  }
  const maxBytes = options.maxBytes ?? Number.MAX_SAFE_INTEGER;
  if (!Number.isSafeInteger(maxBytes) || maxBytes < 0) {
    throw new OutOfRangeError('options.maxBytes', 'a non-negative safe integer', maxBytes);
  }
  const copy = new StreamCopy(kc, new InputReader(input), dests, options, maxBytes);
  return copy.run();
}

/** Reads an async iterable into caller buffers, keeping what one piece had left over. */
class InputReader {
  readonly #iterator: AsyncIterator<Uint8Array>;
  #leftover: Uint8Array | null = null;
  #ended = false;

  constructor(input: AsyncIterable<Uint8Array>) {
    this.#iterator = input[Symbol.asyncIterator]();
  }

  /** Fills `buffer` from the start; resolves with the bytes filled (fewer only at the end). */
  async fill(buffer: Uint8Array): Promise<number> {
    let filledBytes = 0;
    while (filledBytes < buffer.length) {
      const piece = this.#leftover ?? await this.#next();
      this.#leftover = null;
      if (piece === null) break;
      const takenBytes = Math.min(piece.length, buffer.length - filledBytes);
      buffer.set(piece.subarray(0, takenBytes), filledBytes);
      filledBytes += takenBytes;
      if (takenBytes < piece.length) this.#leftover = piece.subarray(takenBytes);
    }
    return filledBytes;
  }

  /** True when one more byte is there to read (resolves after reading ahead if needed). */
  async hasMore(): Promise<boolean> {
    if (this.#leftover === null) this.#leftover = await this.#next();
    return this.#leftover !== null;
  }

  async #next(): Promise<Uint8Array | null> {
    while (!this.#ended) {
      const step = await this.#iterator.next();
      if (step.done === true) {
        this.#ended = true;
        break;
      }
      const value: unknown = step.value;
      const bytes = typeof value === 'string' ? Buffer.from(value) : value;
      if (!(bytes instanceof Uint8Array)) {
        throw new InvalidArgTypeError('input', 'an async iterable of Uint8Array', value);
      }
      if (bytes.length > 0) return bytes;
    }
    return null;
  }
}

/** What `untilAborted` rejects with when the signal fires first. */
const ABORTED = Symbol('aborted');

/**
 * `promise`, or a rejection with ABORTED as soon as `signal` fires (the promise is then left
 * running, its outcome ignored): a read of a stalled input must not hold a cancelled copy.
 */
function untilAborted<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  promise.catch(() => undefined);
  if (signal === undefined) return promise;
  if (signal.aborted) return Promise.reject(ABORTED);
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(ABORTED);
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}

/** One segment read ahead: its device and how many bytes of it hold input. */
interface Segment {
  readonly device: RamDevice;
  readonly bytes: number;
  /** Whether the input ended with this segment (or reached maxBytes). */
  readonly last: boolean;
  /** The input failed while this segment was read: its error. */
  readonly error: unknown;
}

/** The state of one stream copy, from the first segment to the result. */
class StreamCopy {
  readonly #kc: KcopydClient;
  readonly #reader: InputReader;
  readonly #dests: readonly KcopydStreamDest[];
  readonly #options: KcopydStreamOptions;
  readonly #maxBytes: number;
  readonly #staging = new Uint8Array(KCOPYD_STREAM_SEGMENT_BYTES);
  readonly #devices: [RamDevice, RamDevice];
  #readErr = false;
  #readError: DmIoError | undefined = undefined;
  #writeErr = 0n;
  readonly #writeErrors: Array<DmIoError | undefined>;
  readonly #writtenBytes: number[];
  #aborted = false;
  #inputBytes = 0;
  #paddedBytes = 0;
  #truncated = false;
  /**
   * The `sparse` option checked against every destination when the copy is made, before any
   * input is read (each segment's job checks it again for the destinations it writes), or null.
   */
  readonly #sparse: ValidSparse | null;

  constructor(kc: KcopydClient, reader: InputReader, dests: readonly KcopydStreamDest[],
    options: KcopydStreamOptions, maxBytes: number) {
    this.#kc = kc;
    this.#reader = reader;
    this.#dests = [...dests];
    this.#options = options;
    this.#maxBytes = maxBytes;
    this.#writeErrors = this.#dests.map(() => undefined);
    this.#writtenBytes = this.#dests.map(() => 0);
    const segmentBytes = KCOPYD_STREAM_SEGMENT_BYTES;
    this.#devices = [createRamDevice({ sizeBytes: segmentBytes, name: 'stream' }),
      createRamDevice({ sizeBytes: segmentBytes, name: 'stream' })];
    this.#sparse = validateSparse(options.sparse,
      this.#dests.map((_, index) => this.#region(index, 0, 1)), this.#devices[0]);
  }

  async run(): Promise<KcopydStreamResult> {
    let offsetSectors = 0;
    let segment = await this.#readSegment(0);
    for (let index = 1; ; index += 1) {
      const sectors = this.#segmentSectors(segment);
      // The next segment is read while this one is copied.
      const next = segment.last || sectors === null ? null : this.#readSegment(index % 2);
      next?.catch(() => undefined);
      if (this.#options.signal?.aborted === true) this.#aborted = true;
      else if (sectors !== null && sectors > 0) {
        await this.#copySegment(segment, offsetSectors, sectors);
      }
      offsetSectors += sectors ?? 0;
      // Stopping early leaves a read of the input pending: it may never end (a terminal).
      if (next === null || this.#stopped()) break;
      segment = await next;
    }
    if (this.#aborted) this.#markUnfinished();
    if (this.#options.flush === true) await this.#flush();
    return {
      readErr: this.#readErr, writeErr: this.#writeErr, readError: this.#readError,
      writeErrors: this.#writeErrors, writtenBytes: this.#writtenBytes, aborted: this.#aborted,
      inputBytes: this.#inputBytes, paddedBytes: this.#paddedBytes, truncated: this.#truncated,
    };
  }

  /** A cancelled copy: every destination without an error did not get the whole input. */
  #markUnfinished(): void {
    this.#dests.forEach((dest, index) => {
      if (((this.#writeErr >> BigInt(index)) & 1n) === 1n) return;
      this.#writeErr |= 1n << BigInt(index);
      this.#writeErrors[index] = new AbortedError(dest.device.name,
        `the stream copy was cancelled after ${this.#writtenBytes[index] ?? 0} bytes`,
        { cause: this.#options.signal?.reason });
    });
  }

  /** Reads the next segment of input into source device `which` (0 or 1). */
  async #readSegment(which: number): Promise<Segment> {
    const device = this.#devices[which === 0 ? 0 : 1];
    const room = Math.min(this.#staging.length, this.#maxBytes - this.#inputBytes);
    let bytes = 0;
    let error: unknown = null;
    const { signal } = this.#options;
    try {
      bytes = await untilAborted(this.#reader.fill(this.#staging.subarray(0, room)), signal);
    } catch (thrown) {
      // Cancelled while waiting on the input: stop here, leaving what was not read.
      if (thrown === ABORTED) {
        this.#aborted = true;
        return { device, bytes: 0, last: true, error: null };
      }
      error = thrown;
    }
    this.#inputBytes += bytes;
    const capped = error === null && this.#inputBytes >= this.#maxBytes;
    const last = error !== null || bytes < room || capped;
    if (capped) {
      this.#truncated = await untilAborted(this.#reader.hasMore(), signal).catch(() => false);
    }
    const paddedLength = Math.ceil(bytes / SECTOR_SIZE) * SECTOR_SIZE;
    const view = this.#staging.subarray(0, paddedLength);
    view.fill(0, bytes);
    if (paddedLength > 0) {
      const failed = device.submitSync({
        op: 'write', sector: 0, countSectors: bytesToSectorsExact(paddedLength),
        segments: [view], ioprio: 0, flags: { sync: false, preflush: false, fua: false } });
      assert.equal(failed, null, 'a RAM segment takes its write');
    }
    return { device, bytes, last, error };
  }

  /** The sectors of `segment` to copy, or null when the copy must stop before it. */
  #segmentSectors(segment: Segment): number | null {
    if (segment.error !== null) {
      this.#failRead(segment.error);
      return null;
    }
    const tailBytes = segment.bytes % SECTOR_SIZE;
    if (tailBytes !== 0) {
      if (this.#options.partialSector !== 'zero-pad') {
        this.#failRead(new Error(`the input ended ${tailBytes} bytes into a sector, after ` +
          `${this.#inputBytes} bytes`));
        return null;
      }
      this.#paddedBytes = SECTOR_SIZE - tailBytes;
    }
    return Math.ceil(segment.bytes / SECTOR_SIZE);
  }

  #failRead(cause: unknown): void {
    this.#readErr = true;
    this.#readError ??= cause instanceof DmIoError ? cause : new IoError({
      errno: 'EIO', syscall: 'read', device: 'input', sector: bytesToSectorsFloor(this.#inputBytes),
      countSectors: 0, regionIndex: 0, cause,
    });
  }

  #stopped(): boolean {
    const all = (1n << BigInt(this.#dests.length)) - 1n;
    return this.#readErr || this.#aborted || (this.#writeErr & all) === all;
  }

  /** Copies one segment to every destination still healthy that can hold it. */
  async #copySegment(segment: Segment, offsetSectors: number, sectors: number): Promise<void> {
    const live = this.#liveDests(offsetSectors, sectors);
    if (live.length === 0) return;
    const doneBefore = offsetSectors * SECTOR_SIZE;
    const { onProgress, onChunkRead, signal } = this.#options;
    const sparse = this.#segmentSparse(live);
    const result = await dmKcopydCopy(this.#kc, { device: segment.device, sector: 0,
      count: sectors }, live.map((index) => this.#region(index, offsetSectors, sectors)), {
      dropFailedDestinations: true,
      ...(sparse === null ? {} : { sparse }),
      ...(signal === undefined ? {} : { signal }),
      ...(onProgress === undefined ? {} :
        { onProgress: (doneBytes: number) => onProgress(doneBefore + doneBytes) }),
      ...(onChunkRead === undefined ? {} : { onChunkRead: (sourceSector: number,
        countSectors: number, pages: readonly Uint8Array[]) =>
        onChunkRead(offsetSectors + sourceSector, countSectors, pages) }),
    });
    if (result.aborted) this.#aborted = true;
    live.forEach((destIndex, jobIndex) => {
      this.#writtenBytes[destIndex]! += result.writtenBytes[jobIndex] ?? 0;
      if (((result.writeErr >> BigInt(jobIndex)) & 1n) === 0n) return;
      this.#writeErr |= 1n << BigInt(destIndex);
      this.#writeErrors[destIndex] ??= result.writeErrors[jobIndex];
    });
  }

  /** Destinations to write this segment to; one too small for it fails here with ENOSPC. */
  #liveDests(offsetSectors: number, sectors: number): number[] {
    return this.#dests.flatMap((dest, index) => {
      if (((this.#writeErr >> BigInt(index)) & 1n) === 1n) return [];
      const endSectors = dest.sector + offsetSectors + sectors;
      if (endSectors <= dest.device.sizeSectors) return [index];
      this.#writeErr |= 1n << BigInt(index);
      this.#writeErrors[index] ??= new IoError({
        errno: 'ENOSPC', syscall: 'kcopyd stream', device: dest.device.name,
        sector: dest.sector + offsetSectors, countSectors: sectors, regionIndex: index,
      });
      return [];
    });
  }

  /** The `sparse` option of one segment's job: the actions of the destinations it writes. */
  #segmentSparse(live: readonly number[]): KcopydSparseOptions | null {
    const sparse = this.#sparse;
    if (sparse === null) return null;
    return { blockBytes: sparse.blockBytes, holes: live.map((index) => sparse.actions[index]!) };
  }

  #region(index: number, offsetSectors: number, sectors: number): DmIoRegion {
    const dest = this.#dests[index]!;
    return { device: dest.device, sector: dest.sector + offsetSectors, count: sectors };
  }

  /** One flush of every destination written to (flush.ts); a failure counts as for a job. */
  async #flush(): Promise<void> {
    const flushed = this.#dests.flatMap((_, index) =>
      ((this.#writtenBytes[index] ?? 0) > 0 ? [index] : []));
    if (flushed.length === 0) return;
    const { errorBits, errors } = await this.#kc.flushDevices(
      flushed.map((index) => this.#dests[index]!.device));
    flushed.forEach((destIndex, regionIndex) => {
      if (((errorBits >> BigInt(regionIndex)) & 1n) === 0n) return;
      this.#writeErr |= 1n << BigInt(destIndex);
      this.#writeErrors[destIndex] ??= errors[regionIndex];
      this.#writtenBytes[destIndex] = 0;
    });
  }
}

// A segment holds whole chunks of the largest sub-job, so chunk boundaries (and --verify's
// chunk hashes) fall at the same offsets in every segment.
assert.equal(KCOPYD_STREAM_SEGMENT_BYTES % (KCOPYD_SUB_JOB_SECTORS_MAX * SECTOR_SIZE), 0);
