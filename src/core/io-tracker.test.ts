// Unit tests of the completion tracker: the biased count, exactly-once completion, per-region
// bits as a bigint, the first error kept per region, and failedRegions.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { IoError } from '../errors.js';
import { failedRegions, IoTracker, type DmIoResult } from './io-tracker.js';

function ioError(sector: number): IoError {
  return new IoError({ errno: 'EIO', syscall: 'pwritev', device: 'd', sector, countSectors: 1 });
}

test('the bias holds completion back until dropBias', () => {
  const results: DmIoResult[] = [];
  const tracker = new IoTracker(2, (result) => results.push(result));
  tracker.take();
  tracker.take();
  tracker.drop(0, null);
  tracker.drop(1, null);
  assert.equal(results.length, 0, 'the dispatcher still holds its reference');
  tracker.dropBias();
  assert.equal(results.length, 1);
  assert.equal(results[0]?.errorBits, 0n);
});

test('the last drop completes, whatever the order', () => {
  const results: DmIoResult[] = [];
  const tracker = new IoTracker(3, (result) => results.push(result));
  tracker.take();
  tracker.dropBias();
  assert.equal(results.length, 0);
  tracker.drop(2, ioError(5));
  assert.equal(results.length, 1);
  assert.equal(results[0]?.errorBits, 0b100n);
});

test('bits by region index up to 63; the first error of a region is kept', () => {
  let result: DmIoResult | undefined;
  const tracker = new IoTracker(64, (done) => { result = done; });
  const first = ioError(1);
  for (const index of [63, 0, 63, 32]) tracker.take();
  tracker.drop(63, first);
  tracker.drop(0, ioError(2));
  tracker.drop(63, ioError(3));
  tracker.drop(32, null);
  tracker.dropBias();
  assert.ok(result !== undefined);
  assert.equal(result.errorBits, (1n << 63n) | 1n);
  assert.equal(result.errors[63], first);
  assert.equal(result.errors[32], undefined);
  assert.equal(result.errors.length, 64);
});

test('no take or drop after completion (assertion, never silent)', () => {
  const tracker = new IoTracker(1, () => {});
  tracker.dropBias();
  assert.throws(() => tracker.take(), { code: 'ERR_ASSERTION' });
  assert.throws(() => tracker.drop(0, null), { code: 'ERR_ASSERTION' });
});

test('failedRegions lists set bits in ascending order', () => {
  assert.deepEqual(failedRegions(0n), []);
  assert.deepEqual(failedRegions(0b1011n), [0, 1, 3]);
  assert.deepEqual(failedRegions((1n << 63n) | (1n << 31n) | (1n << 32n)), [31, 32, 63]);
});
