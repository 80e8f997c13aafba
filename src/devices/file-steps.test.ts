// Tests the transfer loop's arithmetic: it must resume exactly where the kernel stopped, even
// in the middle of a segment, and never give a call more than its buffer limit. The kernel is
// modelled by a byte array and a short-transfer rule, because real files only cut vectored
// calls short at the IOV_MAX boundary; the real-file cases are in file-device.test.ts.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { transferSegments, type StepResult } from './file-steps.js';

/** Runs a write program against `disk`, moving at most `shortBytes` per call. */
function runAgainstArray(
  disk: Uint8Array, segments: Uint8Array[], positionBytes: number, shortBytes: number,
  buffersPerCallMax: number,
): { calls: number; outcome: unknown } {
  const program = transferSegments('write', segments, positionBytes, buffersPerCallMax);
  let next = program.next();
  let calls = 0;
  while (next.done !== true) {
    const step = next.value;
    assert.equal(step.kind, 'write');
    assert.ok(step.kind === 'write' && step.buffers.length <= buffersPerCallMax);
    let movedBytes = 0;
    let atBytes = step.kind === 'write' ? step.positionBytes : 0;
    for (const buffer of step.kind === 'write' ? step.buffers : []) {
      const takeBytes = Math.min(buffer.length, shortBytes - movedBytes);
      disk.set(buffer.subarray(0, takeBytes), atBytes);
      movedBytes += takeBytes;
      atBytes += takeBytes;
      if (movedBytes === shortBytes) break;
    }
    calls += 1;
    const result: StepResult = { bytes: movedBytes, error: null };
    next = program.next(result);
  }
  return { calls, outcome: next.value };
}

test('short transfers resume mid-segment and place every byte once', () => {
  const data = Uint8Array.from({ length: 10000 }, (_unused, index) => (index % 250) + 1);
  const lengths = [1, 999, 3000, 17, 5983];
  const segments: Uint8Array[] = [];
  let offsetBytes = 0;
  for (const lengthBytes of lengths) {
    segments.push(data.subarray(offsetBytes, offsetBytes + lengthBytes));
    offsetBytes += lengthBytes;
  }
  for (const shortBytes of [1, 7, 512, 1000, 4096, 10000]) {
    for (const buffersPerCallMax of [1, 2, 1024]) {
      const disk = new Uint8Array(20000);
      const { calls, outcome } = runAgainstArray(disk, segments, 100, shortBytes,
        buffersPerCallMax);
      assert.equal(outcome, null);
      assert.deepEqual(disk.subarray(100, 10100), data);
      assert.ok(disk.subarray(0, 100).every((byte) => byte === 0));
      assert.ok(disk.subarray(10100).every((byte) => byte === 0));
      assert.ok(calls >= Math.ceil(10000 / shortBytes));
    }
  }
});

test('a 0-byte transfer is EIO; an error ends the loop with that error', () => {
  const program = transferSegments('read', [new Uint8Array(512)], 0);
  assert.equal(program.next().done, false);
  assert.deepEqual(program.next({ bytes: 0, error: null }).value, { errno: 'EIO' });
  const failing = transferSegments('read', [new Uint8Array(512)], 0);
  failing.next();
  const error = Object.assign(new Error('boom'), { code: 'EIO' });
  assert.deepEqual(failing.next({ bytes: 0, error }).value, { error });
});

test('the request array itself is passed when it fits one call', () => {
  const segments = [new Uint8Array(512), new Uint8Array(512)];
  const program = transferSegments('read', segments, 0);
  const first = program.next();
  assert.ok(first.done !== true && first.value.kind === 'read');
  assert.equal(first.value.buffers, segments, 'no copy of the segment list');
});
