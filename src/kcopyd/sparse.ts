// Owns sparse copies (issue 17): what a copy does with a hole. A chunk's source range is looked
// up in the source's extents (`BlockDevice.extents`, through a per-job cache of the last
// bounded answer) before it is read: a chunk that is all hole or zero is not read at all, a
// chunk that is all data is read (or offloaded) as before, and a mixed one is read through
// pages. A chunk that was read is scanned for zero blocks of `blockBytes`. Each destination
// then does with a hole what its `KcopydHoleAction` says: 'skip' (write nothing: a new or
// truncated file, a device the caller knows reads zeros), 'write-zeroes' (a write-zeroes
// request: ZERO_RANGE on files, BLKZEROOUT on block devices, NBD WRITE_ZEROES), or 'write' (the
// zeros as data, allocated). A chunk with holes is written in steps, each one dm-io plan over
// a run of sectors for the destinations that need it; a chunk without one is written as one
// plan, as without this option. Pure functions of the job: the client issues the plans.

import { IOPRIO_DEFAULT, PAGE_SIZE, SECTOR_SIZE } from '../constants.js';
import type { DmIoClient } from '../core/client.js';
import type { DmIoResult } from '../core/io-tracker.js';
import type { DmIoPlan, DmIoRegion } from '../core/request.js';
import type { BlockDevice, DeviceExtent } from '../devices/block-device.js';
import type { DmIoError } from '../errors.js';
import { InvalidArgTypeError, InvalidRequestError } from '../errors.js';
import type { PageListMemory, PageListNode } from '../memory/types.js';
import { isZeroRange } from '../memory/zeros.js';
import { validateOptionsObject } from '../validate.js';
import type { KcopydJob } from './job.js';

/** What a destination does with a hole of the source (see the file header). */
export type KcopydHoleAction = 'skip' | 'write-zeroes' | 'write';

/** The `sparse` option of `dmKcopydCopy`. */
export interface KcopydSparseOptions {
  /**
   * Zero detection: chunks that were read are scanned in blocks of this many bytes, and a block
   * of zeros is a hole (default 4096, like nbdcopy's and qemu-img's; 0: only the source's
   * extents find holes). A multiple of 512 that divides 4096 or is a multiple of it; raised to
   * the largest logical block of the job's devices.
   */
  blockBytes?: number;
  /**
   * What each destination does with a hole: one action for all, or one per destination
   * (default 'write-zeroes'). 'write-zeroes' falls back to 'write' on a destination without
   * write-zeroes (`limits.maxWriteZeroesSectors` 0).
   */
  holes?: KcopydHoleAction | readonly KcopydHoleAction[];
}

/** The `sparse` option after validation, for a job's destinations. */
export interface ValidSparse {
  readonly blockBytes: number;
  /**
   * The largest logical block of the job's devices, in sectors: the source's holes are
   * rounded in to it, so every run is whole blocks everywhere, even with `blockBytes` 0.
   */
  readonly blockSectors: number;
  /** One action per destination, fallbacks applied. */
  readonly actions: readonly KcopydHoleAction[];
}

/** A run of a chunk, in sectors from the chunk's start. */
export interface Run {
  readonly offsetSectors: number;
  readonly countSectors: number;
  readonly zero: boolean;
}

/** One write of a chunk with holes: one dm-io plan. */
export interface SparseStep {
  readonly op: 'write' | 'write-zeroes';
  /** Indexes into the job's destinations. */
  readonly destIndexes: readonly number[];
  readonly offsetSectors: number;
  readonly countSectors: number;
  /** Write from the client's zero page (a hole chunk that was never read). */
  readonly fromZeroPage: boolean;
}

/** The last extents answer of a master's source: `extents` cover `[startSector, endSector)`. */
export interface ExtentCache {
  readonly startSector: number;
  readonly endSector: number;
  readonly extents: readonly DeviceExtent[];
}

const HOLE_ACTIONS: readonly KcopydHoleAction[] = ['skip', 'write-zeroes', 'write'];
const SPARSE_KEYS = new Set(['blockBytes', 'holes']);
const SPARSE_BLOCK_BYTES_DEFAULT = 4096;
/** The largest zero-detection block: a sub-job is at most 4 MiB, a block must fit one. */
const SPARSE_BLOCK_BYTES_MAX = 1024 * 1024;

/** Validates `options.sparse` for `dests` (and the source's logical block); null when absent. */
export function validateSparse(
  sparse: unknown, dests: readonly DmIoRegion[], source: BlockDevice,
): ValidSparse | null {
  if (sparse === undefined || sparse === false) return null;
  if (sparse === true) return resolveSparse(SPARSE_BLOCK_BYTES_DEFAULT, 'write-zeroes', dests, source);
  validateOptionsObject(sparse, 'options.sparse');
  for (const key of Object.keys(sparse as object)) {
    if (!SPARSE_KEYS.has(key)) {
      throw new InvalidRequestError('DMIO_ERR_INVALID_ARG_VALUE', `options.sparse.${key}`,
        `unknown option; expected ${[...SPARSE_KEYS].join(', ')}`);
    }
  }
  const given = sparse as KcopydSparseOptions;
  const blockBytes = given.blockBytes ?? SPARSE_BLOCK_BYTES_DEFAULT;
  if (!isSparseBlockBytes(blockBytes)) {
    throw new InvalidRequestError('DMIO_ERR_INVALID_ARG_VALUE', 'options.sparse.blockBytes',
      `${String(blockBytes)}: expected 0, or a multiple of ${SECTOR_SIZE} that divides ` +
      `${PAGE_SIZE} or is a multiple of it, at most ${SPARSE_BLOCK_BYTES_MAX}`);
  }
  return resolveSparse(blockBytes, given.holes ?? 'write-zeroes', dests, source);
}

/**
 * True when `value` is a zero-detection block size `sparse.blockBytes` takes: 0 (off), or a
 * multiple of 512 up to 1 MiB that divides 4096 or is a multiple of it.
 */
export function isSparseBlockBytes(value: unknown): value is number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) return false;
  if (value === 0) return true;
  if (value % SECTOR_SIZE !== 0 || value > SPARSE_BLOCK_BYTES_MAX) return false;
  return PAGE_SIZE % value === 0 || value % PAGE_SIZE === 0;
}

function resolveSparse(
  blockBytes: number, holes: unknown, dests: readonly DmIoRegion[], source: BlockDevice,
): ValidSparse {
  const given = Array.isArray(holes) ? holes as unknown[] : dests.map(() => holes);
  if (given.length !== dests.length) {
    throw new InvalidRequestError('DMIO_ERR_INVALID_ARG_VALUE', 'options.sparse.holes',
      `${given.length} actions for ${dests.length} destinations`);
  }
  const actions = given.map((action, index) => {
    if (!HOLE_ACTIONS.includes(action as KcopydHoleAction)) {
      throw new InvalidArgTypeError(`options.sparse.holes${Array.isArray(holes) ? `[${index}]` : ''}`,
        `one of ${HOLE_ACTIONS.join(', ')}`, action);
    }
    const device = dests[index]!.device;
    return action === 'write-zeroes' && device.limits.maxWriteZeroesSectors === 0 ? 'write' :
      action as KcopydHoleAction;
  });
  const logicalBytes = Math.max(source.limits.logicalBlockBytes,
    ...dests.map((dest) => dest.device.limits.logicalBlockBytes));
  return {
    blockBytes: blockBytes === 0 ? 0 : Math.max(blockBytes, logicalBytes),
    blockSectors: logicalBytes / SECTOR_SIZE, actions,
  };
}

/**
 * How the source extents in `cache` classify `[sector, sector + countSectors)`: 'hole' (all
 * reads as zeros), 'data' (no zero extent), 'mixed', or null when the cache does not cover it.
 */
export function classifyChunk(
  cache: ExtentCache | null, sector: number, countSectors: number,
): 'hole' | 'data' | 'mixed' | null {
  const endSector = sector + countSectors;
  if (cache === null || sector < cache.startSector || endSector > cache.endSector) return null;
  let zero = false;
  let data = false;
  for (const extent of cache.extents) {
    const extentEnd = extent.sector + extent.countSectors;
    if (extentEnd <= sector || extent.sector >= endSector) continue;
    if (extent.zero) zero = true;
    else data = true;
  }
  return zero && data ? 'mixed' : zero ? 'hole' : 'data';
}

/**
 * The cache made from an extents answer for a query starting at `sector`: the answer's extents
 * that are contiguous from `sector` (a device breaking that contract is believed no further);
 * null when none is.
 */
export function cacheExtents(sector: number, extents: readonly DeviceExtent[]): ExtentCache | null {
  let endSector = sector;
  let valid = 0;
  for (const extent of extents) {
    if (extent.sector !== endSector || !Number.isSafeInteger(extent.countSectors) ||
        extent.countSectors < 1) {
      break;
    }
    endSector += extent.countSectors;
    valid += 1;
  }
  return valid === 0 ? null :
    { startSector: sector, endSector, extents: extents.slice(0, valid) };
}

/**
 * The runs of `[sector, sector + countSectors)` in the source extents of `cache` (which covers
 * it: `classifyChunk` said 'mixed'), in sectors from `sector`, merged. A zero extent keeps only
 * its whole blocks of `blockSectors` from the chunk's start; the rest is data, read and copied.
 */
export function extentRuns(
  cache: ExtentCache, sector: number, countSectors: number, blockSectors: number,
): Run[] {
  const runs = new RunBuilder();
  const endSector = sector + countSectors;
  let dataFrom = 0;
  for (const extent of cache.extents) {
    if (!extent.zero) continue;
    const start = alignUp(Math.max(extent.sector - sector, 0), blockSectors);
    const end = extent.sector + extent.countSectors >= endSector ? countSectors :
      Math.floor((extent.sector + extent.countSectors - sector) / blockSectors) * blockSectors;
    if (start >= end) continue;
    if (start > dataFrom) runs.add(dataFrom, start - dataFrom, false);
    runs.add(start, end - start, true);
    dataFrom = end;
  }
  if (dataFrom < countSectors) runs.add(dataFrom, countSectors - dataFrom, false);
  return runs.done();
}

function alignUp(value: number, block: number): number {
  return Math.ceil(value / block) * block;
}

/**
 * The runs of a chunk that was read: data and zero blocks of `blockBytes` (the last block may
 * be shorter), merged. `known` are runs the source's extents gave (zero runs there are not
 * read nor scanned; data runs are scanned); null: the whole chunk is scanned. Null when no block
 * is zero: the chunk is written as one plan.
 */
export function zeroRuns(
  pages: readonly Uint8Array[], countSectors: number, blockBytes: number,
  known: readonly Run[] | null = null,
): Run[] | null {
  const spans = known ?? [{ offsetSectors: 0, countSectors, zero: false }];
  const runs = new RunBuilder();
  for (const span of spans) {
    if (span.zero || blockBytes === 0) {
      runs.add(span.offsetSectors, span.countSectors, span.zero);
      continue;
    }
    const startBytes = span.offsetSectors * SECTOR_SIZE;
    const endBytes = startBytes + span.countSectors * SECTOR_SIZE;
    for (let offsetBytes = startBytes; offsetBytes < endBytes; offsetBytes += blockBytes) {
      const lengthBytes = Math.min(blockBytes, endBytes - offsetBytes);
      runs.add(offsetBytes / SECTOR_SIZE, lengthBytes / SECTOR_SIZE,
        isZero(pages, offsetBytes, lengthBytes));
    }
  }
  return runs.anyZero ? runs.done() : null;
}

/** Builds merged runs from consecutive pieces, allocating only when the kind changes. */
class RunBuilder {
  anyZero = false;
  readonly #runs: Run[] = [];
  #offsetSectors = 0;
  #countSectors = 0;
  #zero = false;

  add(offsetSectors: number, countSectors: number, zero: boolean): void {
    this.anyZero ||= zero;
    if (this.#countSectors > 0 && zero === this.#zero) {
      this.#countSectors += countSectors;
      return;
    }
    this.#flush();
    this.#offsetSectors = offsetSectors;
    this.#countSectors = countSectors;
    this.#zero = zero;
  }

  done(): Run[] {
    this.#flush();
    return this.#runs;
  }

  #flush(): void {
    if (this.#countSectors === 0) return;
    this.#runs.push({ offsetSectors: this.#offsetSectors, countSectors: this.#countSectors,
      zero: this.#zero });
    this.#countSectors = 0;
  }
}

/** Zeros the parts of the job's pages that `runs` says are zero (they are not read). */
export function zeroFillHoles(job: KcopydJob, runs: readonly Run[]): void {
  const pages = job.grant?.pages ?? [];
  for (const run of runs) {
    if (!run.zero) continue;
    everyPagePiece(pages, run.offsetSectors * SECTOR_SIZE, run.countSectors * SECTOR_SIZE,
      (page, inPage, pieceBytes) => {
        page.fill(0, inPage, inPage + pieceBytes);
        return true;
      });
  }
}

/**
 * Calls `visit` with each page's piece of `[offsetBytes, offsetBytes + lengthBytes)` of a chunk
 * held in `pages`, in order, while it answers true; true when every piece was visited.
 */
function everyPagePiece(
  pages: readonly Uint8Array[], offsetBytes: number, lengthBytes: number,
  visit: (page: Uint8Array, inPage: number, pieceBytes: number) => boolean,
): boolean {
  const endBytes = offsetBytes + lengthBytes;
  for (let at = offsetBytes; at < endBytes;) {
    const page = pages[Math.floor(at / PAGE_SIZE)];
    if (page === undefined) return false;
    const inPage = at % PAGE_SIZE;
    const pieceBytes = Math.min(PAGE_SIZE - inPage, endBytes - at);
    if (!visit(page, inPage, pieceBytes)) return false;
    at += pieceBytes;
  }
  return true;
}

/** The plan reading one data run of a mixed chunk into the job's pages at its offset. */
export function readRunPlan(job: KcopydJob, run: Run, io: DmIoClient): DmIoPlan {
  if (job.sourceDevice === null) throw new Error('kcopyd: only a copy job reads');
  return {
    op: 'read', flags: STEP_FLAGS, ioprio: IOPRIO_DEFAULT, client: io,
    memory: pagesAt(job, run.offsetSectors),
    regions: [{ device: job.sourceDevice, sector: job.sourceSector + run.offsetSectors,
      count: run.countSectors }],
  };
}

function isZero(pages: readonly Uint8Array[], offsetBytes: number, lengthBytes: number): boolean {
  return everyPagePiece(pages, offsetBytes, lengthBytes, isZeroRange);
}


/**
 * The steps of a chunk with holes: destinations that write holes as data get the whole chunk
 * in one plan (from the pages, or the zero page for a chunk never read); the others get each
 * data run, and 'write-zeroes' ones each zero run. Null when one plan does it all (no hole, or
 * every destination writes holes as data and the chunk was read).
 */
export function sparseSteps(
  sparse: ValidSparse, countSectors: number, runs: readonly Run[] | null, neverRead: boolean,
): SparseStep[] | null {
  const actions = sparse.actions;
  const chunkRuns = runs ?? (neverRead ? [{ offsetSectors: 0, countSectors, zero: true }] : null);
  if (chunkRuns === null) return null;
  const writers = indexesOf(actions, 'write');
  if (!neverRead && writers.length === actions.length) return null;
  const steps: SparseStep[] = [];
  if (writers.length > 0) {
    steps.push({ op: 'write', destIndexes: writers, offsetSectors: 0, countSectors,
      fromZeroPage: neverRead });
  }
  const others = actions.map((_, index) => index).filter((index) => actions[index] !== 'write');
  const zeroers = indexesOf(actions, 'write-zeroes');
  for (const run of chunkRuns) {
    const destIndexes = run.zero ? zeroers : others;
    if (destIndexes.length === 0) continue;
    steps.push({ op: run.zero ? 'write-zeroes' : 'write', destIndexes,
      offsetSectors: run.offsetSectors, countSectors: run.countSectors, fromZeroPage: false });
  }
  return steps;
}

function indexesOf(actions: readonly KcopydHoleAction[], action: KcopydHoleAction): number[] {
  const indexes: number[] = [];
  actions.forEach((given, index) => {
    if (given === action) indexes.push(index);
  });
  return indexes;
}

/** Chunk I/O carries no flush or FUA (as chunk-io.ts). */
const STEP_FLAGS = Object.freeze({ sync: false, preflush: false, fua: false });

/**
 * The dm-io plan of `step` of `job`: its destinations' regions over the step's run (a
 * destination dropped for an earlier failure keeps its empty region), from the job's pages at
 * the run's offset, from `zeroMemory`, or without memory for write-zeroes.
 */
export function stepPlan(
  job: KcopydJob, step: SparseStep, io: DmIoClient, zeroMemory: PageListMemory,
): DmIoPlan {
  const regions = step.destIndexes.map((index) => {
    const dest = job.dests[index]!;
    return { device: dest.device, sector: dest.sector + step.offsetSectors,
      count: dest.count === 0 ? 0 : step.countSectors };
  });
  return {
    op: step.op, flags: STEP_FLAGS, ioprio: IOPRIO_DEFAULT, client: io, regions,
    memory: step.op === 'write-zeroes' ? null : step.fromZeroPage ? zeroMemory :
      pagesAt(job, step.offsetSectors),
  };
}

/** A page list over the job's pages starting `offsetSectors` into the chunk. */
function pagesAt(job: KcopydJob, offsetSectors: number): PageListMemory {
  const offsetBytes = offsetSectors * SECTOR_SIZE;
  const node = job.nodes[Math.floor(offsetBytes / PAGE_SIZE)] as PageListNode | undefined;
  if (node === undefined || job.grant === null) {
    throw new Error('kcopyd: a sparse step reached its write without pages');
  }
  return { type: 'page-list', list: node, offset: offsetBytes % PAGE_SIZE };
}

/**
 * Folds a step's result into the chunk's: error bits and first errors by destination index,
 * so that the chunk's result reads as one write to all its destinations.
 */
export function foldStepResult(job: KcopydJob, step: SparseStep, result: DmIoResult): void {
  if (result.errorBits === 0n) return;
  step.destIndexes.forEach((destIndex, regionIndex) => {
    if (((result.errorBits >> BigInt(regionIndex)) & 1n) === 0n) return;
    job.stepErrorBits |= 1n << BigInt(destIndex);
    job.stepErrors[destIndex] ??= result.errors[regionIndex] as DmIoError | undefined;
  });
}

/** The chunk's result once its last step completed. */
export function stepsResult(job: KcopydJob): DmIoResult {
  return { errorBits: job.stepErrorBits, errors: job.stepErrors };
}

/** True when `job` is a sparse copy's chunk to look up in its source's extents first. */
export function looksUpExtents(job: KcopydJob): boolean {
  const master = job.master;
  return master.sparse !== null && !master.extentsOff && !job.zero &&
    job.sourceDevice?.extents !== undefined && (job.op === 'read' || job.op === 'offload');
}

/** True when a sparse chunk's holes are read from its pages: written as data, or shown. */
export function holesReadFromPages(job: KcopydJob): boolean {
  const master = job.master;
  return master.onChunkRead !== null || master.sparse?.actions.includes('write') === true;
}

/** Moves a mixed chunk's read to its next data run; false when none is left. */
export function nextDataRun(job: KcopydJob): boolean {
  const runs = job.knownRuns ?? [];
  do job.readRunIndex += 1; while (runs[job.readRunIndex]?.zero === true);
  return job.readRunIndex < runs.length;
}

/** Clears a chunk's sparse state when it completes (a slot's next chunk starts afresh). */
export function endSparseChunk(job: KcopydJob): void {
  job.neverRead = false;
  job.knownRuns = null;
  job.readRunIndex = 0;
  job.steps = null;
  job.stepIndex = 0;
  job.stepErrorBits = 0n;
  job.stepErrors = [];
}
