// Unit tests of the in-process devices: sparse RAM storage, discard freeing chunks, the
// past-end rule (fail whole, never truncate), closed and read-only refusals, pure flushes, and
// their extents (RAM chunks, zero:/null: holes, random: data, the per-query chunk bound),
// answered alike by `extents` and `extentsSync`.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { RAM_CHUNK_BYTES, RAM_EXTENT_CHUNKS_MAX } from '../constants.js';
import type { DeviceOp, DeviceRequest } from './block-device.js';
import { createRandomDevice, createZeroDevice } from './pattern-devices.js';
import { createRamDevice } from './ram-device.js';
import { extentsOf, queryExtents } from '../../test/helpers/extents.js';

function request(op: DeviceOp, sector: number, segments: Uint8Array[] | number,
  preflush = false): DeviceRequest {
  const list = typeof segments === 'number' ? [] : segments;
  const countSectors = typeof segments === 'number' ? segments :
    segments.reduce((sum, segment) => sum + segment.length, 0) / 512;
  return { op, sector, countSectors, segments: list, flags: { sync: false, preflush,
    fua: false }, ioprio: 0 };
}

test('memory is allocated on first write and freed by a whole-chunk discard', () => {
  const device = createRamDevice({ sizeBytes: 16 * 1024 * 1024 * 1024 });
  assert.equal(device.allocatedBytes, 0);
  const data = new Uint8Array(1024).fill(9);
  assert.equal(device.submitSync(request('write', 127, [data])), null, 'crosses a chunk edge');
  assert.equal(device.allocatedBytes, 2 * RAM_CHUNK_BYTES);
  const back = new Uint8Array(1024);
  assert.equal(device.submitSync(request('read', 127, [back.subarray(0, 512),
    back.subarray(512)])), null);
  assert.deepEqual(back, data);
  assert.equal(device.submitSync(request('discard', 0, RAM_CHUNK_BYTES / 512)), null);
  assert.equal(device.allocatedBytes, RAM_CHUNK_BYTES);
  assert.equal(device.submitSync(request('write-zeroes', 128, 1)), null);
  device.submitSync(request('read', 127, [back]));
  assert.ok(back.every((byte) => byte === 0));
});

test('a request crossing the end fails whole with EIO; one ending at the end succeeds', () => {
  const device = createRamDevice({ sizeBytes: 8 * 512 });
  const error = device.submitSync(request('write', 6, [new Uint8Array(1536).fill(1)]));
  assert.equal(error?.errno, 'EIO');
  assert.equal(error?.sector, 6);
  assert.equal(error?.countSectors, 3);
  assert.equal(device.allocatedBytes, 0, 'nothing written');
  assert.equal(device.submitSync(request('write', 6, [new Uint8Array(1024)])), null);
  assert.equal(device.submitSync(request('read', 9, 0, true))?.errno, 'EIO',
    'a flush past the end');
  assert.equal(device.submitSync(request('write', 8, 0, true)), null, 'a flush at the end');
});

test('submit completes on a later turn, never inside submit', async () => {
  const device = createRamDevice({ sizeBytes: 4096 });
  let returned = false;
  await new Promise<void>((resolve) => {
    device.submit(request('read', 0, [new Uint8Array(512)]), (error) => {
      assert.equal(error, null);
      assert.ok(returned);
      resolve();
    });
    returned = true;
  });
});

test('closed devices fail with EBADF; read-only devices with EROFS', async () => {
  const device = createRamDevice({ sizeBytes: 4096 });
  await device.close();
  await device.close();
  assert.equal(device.submitSync(request('read', 0, [new Uint8Array(512)]))?.errno, 'EBADF');
  const readOnly = createRamDevice({ sizeBytes: 4096, readOnly: true });
  assert.equal(readOnly.submitSync(request('write', 0, [new Uint8Array(512)]))?.errno, 'EROFS');
  assert.equal(readOnly.submitSync(request('discard', 0, 1))?.errno, 'EROFS');
});

test('pure flushes succeed on every in-process device, read-only ones included', () => {
  for (const device of [createRamDevice({ sizeBytes: 4096 }),
    createZeroDevice('zero', { sizeBytes: 4096 }), createZeroDevice('null', { sizeBytes: 4096 }),
    createRandomDevice({ sizeBytes: 4096 })]) {
    assert.equal(device.submitSync(request('write', 0, 0, true)), null, device.name);
  }
});

test('random: bytes depend only on seed and position', () => {
  const a = createRandomDevice({ sizeBytes: 65536, seed: 5 });
  const whole = new Uint8Array(8192);
  a.submitSync(request('read', 0, [whole]));
  const piece = new Uint8Array(1024);
  createRandomDevice({ sizeBytes: 65536, seed: 5 }).submitSync(request('read', 7, [piece]));
  assert.deepEqual(piece, whole.subarray(3584, 4608));
  const other = new Uint8Array(8192);
  createRandomDevice({ sizeBytes: 65536, seed: 6 }).submitSync(request('read', 0, [other]));
  assert.notDeepEqual(other, whole);
});

test('sizes and limits are validated', () => {
  assert.throws(() => createRamDevice({ sizeBytes: 1000 }), { code: 'DMIO_ERR_MISALIGNED' });
  assert.throws(() => createRamDevice({ sizeBytes: 0 }), { code: 'DMIO_ERR_OUT_OF_RANGE' });
  assert.throws(() => createRamDevice({ sizeBytes: 4096, limits: { logicalBlockBytes: 1024 *
    8 } }), { code: 'DMIO_ERR_INVALID_ARG_VALUE' });
  assert.throws(() => createRamDevice({ sizeBytes: 4096, limits: { logicalBlockBytes: 4096,
    maxSectorsPerRequest: 4 } }), { code: 'DMIO_ERR_INVALID_ARG_VALUE' });
});

const CHUNK_SECTORS = RAM_CHUNK_BYTES / 512;
const holeZero = (sector: number, countSectors: number): object =>
  ({ sector, countSectors, hole: true, zero: true });
const data = (sector: number, countSectors: number): object =>
  ({ sector, countSectors, hole: false, zero: false });

test('RAM extents: written chunks are data, others holes; discards free whole chunks', async () => {
  const device = createRamDevice({ sizeBytes: 16 * RAM_CHUNK_BYTES });
  assert.deepEqual(await extentsOf(device, 0, device.sizeSectors),
    [holeZero(0, 16 * CHUNK_SECTORS)], 'never written');
  // One sector at 127 and one at 128 allocate chunks 0 and 1; sector 700 chunk 5.
  device.submitSync(request('write', 127, [new Uint8Array(1024).fill(1)]));
  device.submitSync(request('write', 700, [new Uint8Array(512).fill(1)]));
  assert.deepEqual(await extentsOf(device, 0, device.sizeSectors), [data(0, 256),
    holeZero(256, 384), data(640, 128), holeZero(768, 1280)]);
  assert.deepEqual(await extentsOf(device, 200, 500), [data(200, 56), holeZero(256, 384),
    data(640, 60)], 'clipped to the query');
  // A partial discard zeroes but keeps the chunk (data); a whole-chunk one frees it.
  device.submitSync(request('discard', 0, 64));
  device.submitSync(request('discard', 128, 128));
  device.submitSync(request('write-zeroes', 640, 128));
  assert.deepEqual(await extentsOf(device, 0, device.sizeSectors), [data(0, 128),
    holeZero(128, 1920)]);
});

test('RAM extents look at a bounded number of chunks per query', async () => {
  const device = createRamDevice({ sizeBytes: 64 * 1024 * 1024 * 1024 });
  const boundSectors = RAM_EXTENT_CHUNKS_MAX * CHUNK_SECTORS;
  assert.ok(boundSectors < device.sizeSectors);
  assert.deepEqual(await extentsOf(device, 0, device.sizeSectors), [holeZero(0, boundSectors)]);
  assert.deepEqual(await extentsOf(device, 10, device.sizeSectors - 10),
    [holeZero(10, boundSectors - 10)], 'the bound counts chunks from the first one touched');
});

test('zero: and null: are one hole reading zeros, written or not; random: is data', async () => {
  const nullDevice = createZeroDevice('null', { sizeBytes: 1 << 20 });
  nullDevice.submitSync(request('write', 8, [new Uint8Array(4096).fill(7)]));
  for (const device of [createZeroDevice('zero', { sizeBytes: 2 ** 50 }), nullDevice]) {
    assert.deepEqual(await extentsOf(device, 0, device.sizeSectors),
      [holeZero(0, device.sizeSectors)], device.name);
    assert.deepEqual(await extentsOf(device, 5, 3), [holeZero(5, 3)], device.name);
  }
  const random = createRandomDevice({ sizeBytes: 1 << 20 });
  assert.deepEqual(await extentsOf(random, 1, 2047), [data(1, 2047)]);
});

test('closed in-process devices answer extents with EBADF, on a later turn', async () => {
  for (const device of [createRamDevice({ sizeBytes: 4096 }),
    createZeroDevice('zero', { sizeBytes: 4096 }), createRandomDevice({ sizeBytes: 4096 })]) {
    await device.close();
    const { error, extents } = await queryExtents(device, 0, 8);
    assert.equal(error?.errno, 'EBADF', device.name);
    assert.equal(error?.syscall, 'extents');
    assert.deepEqual(extents, []);
  }
});

test('extentsSync returns what extents answers, for RAM and pattern devices', async () => {
  const ram = createRamDevice({ sizeBytes: 16 * RAM_CHUNK_BYTES });
  ram.submitSync(request('write', 127, [new Uint8Array(1024).fill(1)]));
  ram.submitSync(request('write', 700, [new Uint8Array(512).fill(1)]));
  const devices = [ram, createZeroDevice('null', { sizeBytes: 1 << 20 }),
    createRandomDevice({ sizeBytes: 1 << 20 })];
  for (const device of devices) {
    for (const [sector, countSectors] of [[0, device.sizeSectors], [200, 500], [5, 3],
      [device.sizeSectors - 1, 1]] as const) {
      const answer = device.extentsSync(sector, countSectors);
      assert.equal(answer.error, null);
      assert.deepEqual(answer.extents, await extentsOf(device, sector, countSectors),
        `${device.name} at ${sector}+${countSectors}`);
    }
  }
  assert.deepEqual(ram.extentsSync(200, 500).extents, [data(200, 56), holeZero(256, 384),
    data(640, 60)]);
});

test('a closed RAM device gives EBADF from extentsSync', async () => {
  const device = createRamDevice({ sizeBytes: 4096 });
  await device.close();
  const { error, extents } = device.extentsSync(0, 8);
  assert.equal(error?.errno, 'EBADF');
  assert.equal(error?.device, device.name);
  assert.deepEqual(extents, []);
});
