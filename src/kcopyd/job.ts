// Owns the shape of one kcopyd job. A job is a copy or zero request as the caller made it (a
// "master"), one of a split master's 8 reusable sub-job slots, or a prepared callback. Its
// state is the client list it is on, and only the client (kcopyd-client.ts) moves it; the
// fields here are what the client and its helpers read and write. A job holds no reference to
// its client: the client reaches it through closures it made itself (`ioDone`, `fire`), so
// nothing here imports the client. Sub-job slots are allocated once per split master and
// reused for every chunk they take, with their destination regions and page-list nodes, so a
// long copy allocates nothing per chunk beyond what dm-io itself needs.

import type { DmIoRegion } from '../core/request.js';
import type { DmIoResult } from '../core/io-tracker.js';
import type { DmIoError } from '../errors.js';
import type { BlockDevice } from '../devices/block-device.js';
import type { PageListMemory, PageListNode } from '../memory/types.js';
import type { JobLinks, JobList } from './job-list.js';
import type { PageGrant } from './page-reserve.js';
import type { ExtentCache, Run, SparseStep, ValidSparse } from './sparse.js';

/**
 * The phase a job's next I/O is in. `offload` is a copy the destinations do themselves
 * (`BlockDevice.copyFrom`), with no pages; when it fails the job falls back to `read`. `map`
 * is a sparse copy's look at the source's extents before the chunk is read (sparse.ts).
 */
export type KcopydOp = 'read' | 'write' | 'write-zeroes' | 'offload' | 'map';

/** What a finished copy, zero or prepared callback reports. */
export interface KcopydResult {
  /** True when reading the source failed anywhere. */
  readonly readErr: boolean;
  /**
   * Bit *d* set ⇔ writing destination *d* failed somewhere (OR-ed across chunks); all 64 bits
   * set (`KCOPYD_WRITE_ERR_ALL`) when the write phase could not be issued at all.
   */
  readonly writeErr: bigint;
  /** The first source error, when there was one. */
  readonly readError: DmIoError | undefined;
  /**
   * `writeErrors[d]` is destination *d*'s first error, or `undefined`. A destination an
   * aborted job did not finish, and that had no error before, has an `AbortedError`
   * (`DMIO_ERR_ABORTED`).
   */
  readonly writeErrors: ReadonlyArray<DmIoError | undefined>;
  /**
   * `writtenBytes[d]`: bytes of the job whose write to destination *d* succeeded, summed over
   * chunks (a chunk counts once its whole write to *d* succeeded, by pages or offload). So
   * destination *d* is complete exactly when `writtenBytes[d] === count * SECTOR_SIZE`; this
   * holds in every mode, whereas a clear `writeErr` bit alone does not say it (a job stopped early by
   * another destination's or the source's error leaves the rest unwritten). With
   * `ignoreError`, a chunk whose read failed counts when written (with zeros where the read
   * failed; `readErr` tells). Empty for prepared callbacks.
   */
  readonly writtenBytes: readonly number[];
  /**
   * True when the job was cancelled before it completed: its `signal` fired, or its
   * `onProgress` or `onChunkRead` threw. Every destination it did not finish then has its
   * `writeErr` bit set, so a clear bit means complete.
   */
  readonly aborted: boolean;
}

/** A completion callback: `fn(readErr, writeErr, context, result)`. */
export type KcopydNotifyFn<C = unknown> =
  (readErr: boolean, writeErr: bigint, context: C, result: KcopydResult) => void;

/** Called from the worker with bytes done so far and in total, after each chunk. */
export type KcopydProgressFn = (doneBytes: number, totalBytes: number) => void;

/**
 * Called from the worker with a chunk's source data just before it is written: the source
 * sector, the chunk's sectors, and the pages holding it (valid only during the call).
 */
export type KcopydChunkReadFn =
  (sourceSector: number, countSectors: number, pages: readonly Uint8Array[]) => void;

/** What a job may be: a caller's request, a sub-job slot, or a prepared callback. */
export type KcopydJobKind = 'master' | 'sub' | 'callback';

/** One job. Fields are internal to kcopyd. */
export class KcopydJob implements JobLinks<KcopydJob> {
  list: JobList<KcopydJob> | null = null;
  listPrev: KcopydJob | null = null;
  listNext: KcopydJob | null = null;

  readonly kind: KcopydJobKind;
  /** The job whose callback the caller sees: itself for masters and callbacks. */
  master: KcopydJob;
  ignoreError = false;
  writeSeq = false;
  /** Masters: a destination whose write failed gets no later chunk; the others go on. */
  dropFailed = false;
  readErr = false;
  writeErr = 0n;
  readError: DmIoError | undefined = undefined;
  writeErrors: Array<DmIoError | undefined> = [];
  /** Masters: bytes written successfully per destination (KcopydResult.writtenBytes). */
  writtenBytes: number[] = [];
  /** Masters: set once the job is cancelled (its signal fired or a callback threw). */
  aborted = false;
  /** Masters: why the job was cancelled, the `cause` of its DMIO_ERR_ABORTED errors. */
  abortReason: unknown = undefined;
  /** Masters: flush every written destination before completing (`options.flush`). */
  flush = false;
  /** Masters: 'idle' until the flush is issued, 'flushing' while it runs, then 'done'. */
  flushState: 'idle' | 'flushing' | 'done' = 'idle';
  /** Masters: the caller's signal and the listener to remove when the job ends. */
  signal: AbortSignal | null = null;
  abortListener: (() => void) | null = null;
  op: KcopydOp = 'read';
  /** `null` for a zero job: the data comes from the zero page list. */
  sourceDevice: BlockDevice | null = null;
  sourceSector = 0;
  /** Sectors this job moves (for a master, the whole request). */
  countSectors = 0;
  dests: DmIoRegion[] = [];
  /** True when the job writes from the client's zero page list and takes no pages. */
  zero = false;
  grant: PageGrant | null = null;
  /** Page-list nodes, reused for every grant this job receives. */
  nodes: PageListNode[] = [];
  /** The page list over the current grant, reused for every grant this job receives. */
  memory: PageListMemory | null = null;
  /** The dm-io completion of this job's I/Os, made once by the client and reused. */
  ioDone: ((result: DmIoResult) => void) | null = null;
  /** Prepared callbacks: queues the callback on its client (set by the client). */
  fire: ((readErr: boolean, writeErr: bigint) => void) | null = null;
  fn: KcopydNotifyFn | null = null;
  context: unknown = undefined;
  /** A WRITE_SEQ write taken out of order because its master failed: it fails unissued. */
  seqCancelled = false;
  /**
   * True once onChunkRead saw this chunk: a write the busy dm-io client refused is retried
   * without showing its chunk again. Cleared when the chunk completes.
   */
  chunkShown = false;
  /** Used once by a prepared callback: it may fire only once. */
  fired = false;

  // Sparse copies (sparse.ts).
  /** Masters: the validated `sparse` option, or null. */
  sparse: ValidSparse | null = null;
  /** Masters: the source's last extents answer. */
  extentCache: ExtentCache | null = null;
  /** Masters: the source's extents failed once; chunks are no longer looked up. */
  extentsOff = false;
  /** Masters: while one extents query is in flight, the chunks waiting for its answer. */
  extentWaiters: KcopydJob[] | null = null;
  /** A chunk being looked up: the op it takes when it is data (`read` or `offload`). */
  afterMap: KcopydOp = 'read';
  /** The chunk reads as zeros and was not read: it has no pages. */
  neverRead = false;
  /** A mixed chunk: its runs from the source's extents; only the data runs are read. */
  knownRuns: Run[] | null = null;
  /** The next data run of `knownRuns` to read. */
  readRunIndex = 0;
  /** A chunk with holes: its write steps, the next one, and their folded outcome. */
  steps: SparseStep[] | null = null;
  stepIndex = 0;
  stepErrorBits = 0n;
  stepErrors: Array<DmIoError | undefined> = [];

  // Split bookkeeping, on masters only.
  subJobsActive = 0;
  progressSectors = 0;
  /** Next sector offset a WRITE_SEQ write may have (masters), or this sub-job's offset. */
  writeOffsetSectors = 0;
  doneSectors = 0;
  slots: KcopydJob[] | null = null;
  /** Offloaded chunks of this master in flight (at most KCOPYD_OFFLOADS_IN_FLIGHT_MAX). */
  offloadsInFlight = 0;
  onProgress: KcopydProgressFn | null = null;
  onChunkRead: KcopydChunkReadFn | null = null;

  constructor(kind: KcopydJobKind, master: KcopydJob | null) {
    this.kind = kind;
    this.master = master ?? this;
  }

  /** The source region of this job (copy jobs only). */
  sourceRegion(): DmIoRegion {
    if (this.sourceDevice === null) throw new Error('a zero job has no source');
    return { device: this.sourceDevice, sector: this.sourceSector, count: this.countSectors };
  }

  /** The result this job reports to its callback. */
  result(): KcopydResult {
    return {
      readErr: this.readErr, writeErr: this.writeErr, readError: this.readError,
      writeErrors: this.writeErrors, writtenBytes: this.writtenBytes, aborted: this.aborted,
    };
  }
}
