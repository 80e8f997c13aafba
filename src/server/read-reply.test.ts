// Tests the shape of READ replies: long runs of zeros become holes, short ones and dense data
// stay one data piece, DF keeps a reply whole, and the pieces always cover the request.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { READ_HOLE_BYTES_MIN, readPieces } from './read-reply.js';

const KiB = 1024;

function covers(pieces: ReturnType<typeof readPieces>, lengthBytes: number): void {
  let at = 0;
  for (const piece of pieces) {
    assert.equal(piece.offsetBytes, at);
    assert.ok(piece.lengthBytes > 0);
    at += piece.lengthBytes;
  }
  assert.equal(at, lengthBytes);
}

test('dense data, short reads, DF and short zero runs are one data piece', () => {
  const dense = new Uint8Array(256 * KiB).fill(1);
  assert.deepEqual(readPieces(dense, true), [{ offsetBytes: 0, lengthBytes: dense.length, hole: false }]);
  const zeros = new Uint8Array(256 * KiB);
  assert.deepEqual(readPieces(zeros, false), [{ offsetBytes: 0, lengthBytes: zeros.length, hole: false }]);
  assert.deepEqual(readPieces(new Uint8Array(32 * KiB), true),
    [{ offsetBytes: 0, lengthBytes: 32 * KiB, hole: false }]);
  const shortRun = new Uint8Array(256 * KiB).fill(1);
  shortRun.fill(0, 64 * KiB, 64 * KiB + READ_HOLE_BYTES_MIN - 4 * KiB);
  assert.equal(readPieces(shortRun, true).length, 1);
});

test('long zero runs are holes: leading, inside, trailing, all', () => {
  const data = new Uint8Array(512 * KiB).fill(7);
  data.fill(0, 0, 64 * KiB);
  data.fill(0, 128 * KiB, 320 * KiB);
  data.fill(0, 448 * KiB);
  assert.deepEqual(readPieces(data, true), [
    { offsetBytes: 0, lengthBytes: 64 * KiB, hole: true },
    { offsetBytes: 64 * KiB, lengthBytes: 64 * KiB, hole: false },
    { offsetBytes: 128 * KiB, lengthBytes: 192 * KiB, hole: true },
    { offsetBytes: 320 * KiB, lengthBytes: 128 * KiB, hole: false },
    { offsetBytes: 448 * KiB, lengthBytes: 64 * KiB, hole: true },
  ]);
  assert.deepEqual(readPieces(new Uint8Array(96 * KiB), true),
    [{ offsetBytes: 0, lengthBytes: 96 * KiB, hole: true }]);
});

test('property: pieces cover the read, holes are zeros and long, data pieces hold the rest', () => {
  fc.assert(fc.property(
    fc.array(fc.record({ zero: fc.boolean(), pages: fc.integer({ min: 1, max: 40 }) }),
      { minLength: 1, maxLength: 10 }),
    fc.integer({ min: 0, max: 4095 }),
    (layout, tailBytes) => {
      const lengthBytes = layout.reduce((sum, run) => sum + run.pages * 4 * KiB, 0) + tailBytes;
      const data = new Uint8Array(lengthBytes);
      let at = 0;
      for (const run of layout) {
        if (!run.zero) data.fill(0x5a, at, at + run.pages * 4 * KiB);
        at += run.pages * 4 * KiB;
      }
      data.fill(3, at);
      const pieces = readPieces(data, true);
      covers(pieces, lengthBytes);
      for (const piece of pieces) {
        if (!piece.hole) continue;
        assert.ok(piece.lengthBytes >= READ_HOLE_BYTES_MIN);
        assert.ok(data.subarray(piece.offsetBytes, piece.offsetBytes + piece.lengthBytes)
          .every((byte) => byte === 0));
      }
    }), { numRuns: 200 });
});
