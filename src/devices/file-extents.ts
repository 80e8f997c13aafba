// Owns how a regular file's allocation becomes extents: `lseek` with SEEK_DATA and SEEK_HOLE,
// alternately, from the query's first byte. Each call runs on the threadpool for `extents` (a
// filesystem may walk its extent tree to answer) or blocks the calling thread for
// `extentsSync`; one walk serves both. One query issues at most two calls per extent and stops
// at the range's end or after EXTENTS_PER_QUERY_MAX extents. Holes are `{hole, zero}`, data
// neither.
//
// Rounding is conservative: a sector holding any byte of data is data. A data run
// [dataBytes, holeBytes) covers sectors floor(dataBytes / 512) to ceil(holeBytes / 512), so a
// hole keeps only the sectors wholly inside it. Example: data at bytes 1000-1999 makes
// sectors 1-3 data (bytes 512-2047); a hole over bytes 2000-4095 keeps sectors 4-7.
//
// SEEK_DATA failing with ENXIO means no data from there to the end of the file: the rest of
// the range is a hole. A filesystem that cannot answer (EINVAL, EOPNOTSUPP) has the rest of
// the range reported as data, which is always safe to copy.

import assert from '../assert.js';
import type { SysError } from '../sys/libc.js';
import { bytesToSectorsCeil, bytesToSectorsFloor, sectorsToBytes } from '../units.js';
import type { DeviceExtent } from './block-device.js';
import { DATA, ExtentList, type ExtentKind, HOLE_ZERO } from './extent-list.js';

/** Which run `lseek` looks for. */
export type SeekWhence = 'SEEK_DATA' | 'SEEK_HOLE';

/**
 * An `lseek` on one descriptor. The callback runs once, either inside the call (a blocking
 * lseek: `extentsSync`) or after it returned (the threadpool: `extents`); the walk takes both.
 */
export type SeekFunction = (
  offsetBytes: number, whence: SeekWhence,
  callback: (error: SysError | null, foundBytes: number) => void,
) => void;

/** Completion of a walk: the system error, or the extents. */
export type FileExtentsDone = (error: SysError | null, extents: readonly DeviceExtent[]) => void;

/** Errno names of a filesystem (or kernel) that cannot say where data lies. */
const SEEK_UNSUPPORTED: ReadonlySet<string> = new Set(['EINVAL', 'EOPNOTSUPP', 'ENOTSUP']);

/**
 * Finds the extents of `[sector, sector + countSectors)` of the file behind `seek`; `done`
 * runs once, after at least one `seek` has answered: inside this call when every seek answers
 * inside its own call, else from the last seek's callback.
 */
export function walkFileExtents(
  seek: SeekFunction, sector: number, countSectors: number, done: FileExtentsDone,
): void {
  new FileExtentWalk(seek, new ExtentList(sector, countSectors), done).run();
}

/**
 * One walk: SEEK_DATA from the first uncovered sector, then SEEK_HOLE from the data found,
 * alternately, until the list is finished or a seek fails. `run` loops while seeks answer
 * inside their calls and returns at the first that has not; that one's answer runs the loop
 * again. So a walk of blocking seeks is a plain loop, and the stack never grows with the
 * number of seeks, whichever way they answer.
 */
class FileExtentWalk {
  readonly #seek: SeekFunction;
  readonly #list: ExtentList;
  readonly #done: FileExtentsDone;
  /** Where the next SEEK_HOLE starts (data the last SEEK_DATA found); null: SEEK_DATA next. */
  #dataBytes: number | null = null;
  /** True once `done` has run. */
  #ended = false;
  /** True while `run` is inside a seek call. */
  #insideSeek = false;
  /** Set by an answer that came while `run` was inside the seek call. */
  #answeredInside = false;

  constructor(seek: SeekFunction, list: ExtentList, done: FileExtentsDone) {
    this.#seek = seek;
    this.#list = list;
    this.#done = done;
  }

  /** Issues seeks until the walk ends or one is still pending. */
  run(): void {
    while (!this.#ended) {
      this.#insideSeek = true;
      this.#answeredInside = false;
      this.#issue();
      this.#insideSeek = false;
      if (!this.#answeredInside) return; // The pending seek's answer runs the loop again.
    }
  }

  /** Issues the next seek; its answer updates the list, then continues the walk. */
  #issue(): void {
    const whence: SeekWhence = this.#dataBytes === null ? 'SEEK_DATA' : 'SEEK_HOLE';
    const fromBytes = this.#dataBytes ?? sectorsToBytes(this.#list.nextSector);
    let answered = false;
    this.#seek(fromBytes, whence, (error, foundBytes) => {
      assert.ok(!answered, `${whence} answered twice`);
      answered = true;
      if (whence === 'SEEK_DATA') this.#dataFound(fromBytes, error, foundBytes);
      else this.#holeFound(fromBytes, error, foundBytes);
      if (this.#insideSeek) this.#answeredInside = true;
      else this.run();
    });
  }

  /** SEEK_DATA from `fromBytes` answered: what lies before the data found is a hole. */
  #dataFound(fromBytes: number, error: SysError | null, dataBytes: number): void {
    const list = this.#list;
    if (error !== null) {
      this.#seekFailed(error, error.code === 'ENXIO' ? HOLE_ZERO : DATA);
      return;
    }
    assert.ok(dataBytes >= fromBytes, `SEEK_DATA went back from ${fromBytes} to ${dataBytes}`);
    const holeEndSector = bytesToSectorsFloor(dataBytes);
    if (holeEndSector > list.nextSector) list.add(holeEndSector, HOLE_ZERO);
    if (list.finished) this.#finish();
    else this.#dataBytes = dataBytes;
  }

  /** SEEK_HOLE from `dataBytes`, which lies in the first uncovered sector, answered. */
  #holeFound(dataBytes: number, error: SysError | null, holeBytes: number): void {
    const list = this.#list;
    assert.equal(bytesToSectorsFloor(dataBytes), list.nextSector, 'data starts in this sector');
    this.#dataBytes = null;
    if (error !== null) {
      // ENXIO here: the file shrank below `dataBytes` since SEEK_DATA; data is the safe answer.
      this.#seekFailed(error, DATA);
      return;
    }
    assert.ok(holeBytes > dataBytes, `SEEK_HOLE from data at ${dataBytes} gave ${holeBytes}`);
    list.add(bytesToSectorsCeil(holeBytes), DATA);
    if (list.finished) this.#finish();
  }

  /**
   * A seek failed: ENXIO and an unsupported seek end the walk with the rest of the range as
   * `rest`; any other error fails the query.
   */
  #seekFailed(error: SysError, rest: ExtentKind): void {
    if (error.code !== 'ENXIO' && !SEEK_UNSUPPORTED.has(error.code)) {
      this.#end(error, []);
      return;
    }
    this.#list.add(this.#list.endSector, rest);
    this.#finish();
  }

  #finish(): void {
    assert.ok(this.#list.extents.length > 0, 'a walk covers at least one sector');
    this.#end(null, this.#list.extents);
  }

  #end(error: SysError | null, extents: readonly DeviceExtent[]): void {
    assert.ok(!this.#ended, 'a walk ends once');
    this.#ended = true;
    this.#done(error, extents);
  }
}
