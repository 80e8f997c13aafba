// Owns how a regular file's allocation becomes extents: `lseek` with SEEK_DATA and SEEK_HOLE,
// alternately, from the query's first byte, each call on the threadpool (a filesystem may walk
// its extent tree to answer). One query issues at most two calls per extent and stops at the
// range's end or after EXTENTS_PER_QUERY_MAX extents. Holes are `{hole, zero}`, data neither.
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

/** An asynchronous `lseek` on one descriptor; the callback never runs inside the call. */
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
 * runs once, after at least one `seek` has completed.
 */
export function walkFileExtents(
  seek: SeekFunction, sector: number, countSectors: number, done: FileExtentsDone,
): void {
  new FileExtentWalk(seek, new ExtentList(sector, countSectors), done).start();
}

/** One walk: SEEK_DATA from the first uncovered sector, then SEEK_HOLE from the data found. */
class FileExtentWalk {
  readonly #seek: SeekFunction;
  readonly #list: ExtentList;
  readonly #done: FileExtentsDone;

  constructor(seek: SeekFunction, list: ExtentList, done: FileExtentsDone) {
    this.#seek = seek;
    this.#list = list;
    this.#done = done;
  }

  start(): void {
    this.#seekData();
  }

  /** Looks for the next data from the first uncovered sector; what lies before it is a hole. */
  #seekData(): void {
    const list = this.#list;
    const fromBytes = sectorsToBytes(list.nextSector);
    this.#seek(fromBytes, 'SEEK_DATA', (error, dataBytes) => {
      if (error !== null) {
        this.#ended(error, error.code === 'ENXIO' ? HOLE_ZERO : DATA);
        return;
      }
      assert.ok(dataBytes >= fromBytes, `SEEK_DATA went back from ${fromBytes} to ${dataBytes}`);
      const holeEndSector = bytesToSectorsFloor(dataBytes);
      if (holeEndSector > list.nextSector) list.add(holeEndSector, HOLE_ZERO);
      if (list.finished) this.#finish();
      else this.#seekHole(dataBytes);
    });
  }

  /** Looks for the end of the data at `dataBytes`, which lies in the first uncovered sector. */
  #seekHole(dataBytes: number): void {
    const list = this.#list;
    assert.equal(bytesToSectorsFloor(dataBytes), list.nextSector, 'data starts in this sector');
    this.#seek(dataBytes, 'SEEK_HOLE', (error, holeBytes) => {
      if (error !== null) {
        // ENXIO here: the file shrank below `dataBytes` since SEEK_DATA; data is the safe answer.
        this.#ended(error, DATA);
        return;
      }
      assert.ok(holeBytes > dataBytes, `SEEK_HOLE from data at ${dataBytes} gave ${holeBytes}`);
      list.add(bytesToSectorsCeil(holeBytes), DATA);
      if (list.finished) this.#finish();
      else this.#seekData();
    });
  }

  /**
   * A seek failed: ENXIO and an unsupported seek end the walk with the rest of the range as
   * `rest`; any other error fails the query.
   */
  #ended(error: SysError, rest: ExtentKind): void {
    if (error.code !== 'ENXIO' && !SEEK_UNSUPPORTED.has(error.code)) {
      this.#done(error, []);
      return;
    }
    this.#list.add(this.#list.endSector, rest);
    this.#finish();
  }

  #finish(): void {
    assert.ok(this.#list.extents.length > 0, 'a walk covers at least one sector');
    this.#done(null, this.#list.extents);
  }
}
