// Owns telling whether bytes are all zero, cheaply enough to run over every block a copy or a
// server reads: a range whose first or last byte is set (most data) is rejected without a
// comparison or a view; otherwise it is compared a page at a time with one shared page of
// zeros (one memcmp each).

import { PAGE_SIZE } from '../constants.js';

/** A page of zeros, compared against and never written. */
const ZEROS = Buffer.alloc(PAGE_SIZE);

/** True when `lengthBytes` (at least 1) of `bytes` from `offsetBytes` are all zero. */
export function isZeroRange(bytes: Uint8Array, offsetBytes: number, lengthBytes: number): boolean {
  if (bytes[offsetBytes] !== 0 || bytes[offsetBytes + lengthBytes - 1] !== 0) return false;
  const endBytes = offsetBytes + lengthBytes;
  for (let at = offsetBytes; at < endBytes; at += PAGE_SIZE) {
    const pieceBytes = Math.min(PAGE_SIZE, endBytes - at);
    const piece = pieceBytes === bytes.length ? bytes : bytes.subarray(at, at + pieceBytes);
    if (!(pieceBytes === PAGE_SIZE ? ZEROS : ZEROS.subarray(0, pieceBytes)).equals(piece)) {
      return false;
    }
  }
  return true;
}
