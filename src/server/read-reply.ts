// Owns the shape of a READ's structured reply: where the data read back holds zeros, the
// reply says so with `OFFSET_HOLE` chunks instead of sending the zeros (issue 18: structured
// replies with OFFSET_DATA and OFFSET_HOLE where the client asked for them). Zeros count as a
// hole only in runs of at least READ_HOLE_BYTES_MIN, found 4 KiB at a time, so dense data costs
// one or two byte checks per 4 KiB and short runs of zeros do not split a reply into pieces.
// A request with the DF flag, a short one, or one without such a run is one OFFSET_DATA chunk.

import { PAGE_SIZE } from '../constants.js';
import { isZeroRange } from '../memory/zeros.js';

/** The smallest run of zeros sent as a hole. */
export const READ_HOLE_BYTES_MIN = 64 * 1024;

/** One piece of a READ reply, in request order: data from `data`, or a hole. */
export interface ReadPiece {
  readonly offsetBytes: number;
  readonly lengthBytes: number;
  readonly hole: boolean;
}

/** The pieces of a READ reply for `data`; one data piece when there is no long run of zeros. */
export function readPieces(data: Uint8Array, mayFragment: boolean): ReadPiece[] {
  const whole: ReadPiece[] = [{ offsetBytes: 0, lengthBytes: data.length, hole: false }];
  if (!mayFragment || data.length < READ_HOLE_BYTES_MIN) return whole;
  const pieces: ReadPiece[] = [];
  let runStart = 0;
  let zeroStart = -1;
  for (let at = 0; at < data.length; at += PAGE_SIZE) {
    const blockBytes = Math.min(PAGE_SIZE, data.length - at);
    if (isZeroRange(data, at, blockBytes)) {
      if (zeroStart < 0) zeroStart = at;
      continue;
    }
    if (zeroStart >= 0 && at - zeroStart >= READ_HOLE_BYTES_MIN) {
      pushPieces(pieces, runStart, zeroStart, at);
      runStart = at;
    }
    zeroStart = -1;
  }
  if (zeroStart >= 0 && data.length - zeroStart >= READ_HOLE_BYTES_MIN) {
    pushPieces(pieces, runStart, zeroStart, data.length);
  } else if (runStart < data.length) {
    pieces.push({ offsetBytes: runStart, lengthBytes: data.length - runStart, hole: false });
  }
  return pieces.length === 0 ? whole : pieces;
}

/** The data before a hole (if any), then the hole `[zeroStart, end)`. */
function pushPieces(pieces: ReadPiece[], runStart: number, zeroStart: number, end: number): void {
  if (zeroStart > runStart) {
    pieces.push({ offsetBytes: runStart, lengthBytes: zeroStart - runStart, hole: false });
  }
  pieces.push({ offsetBytes: zeroStart, lengthBytes: end - zeroStart, hole: true });
}
