// Unit tests of the fault device: ranges by op (flush included), down, flakey periods on an
// injected clock, seeded fail rates, delays, the bounded trace, limit overrides, spec checks,
// and extent queries passed through (present only when the wrapped device has them).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { IoError } from '../errors.js';
import type { BlockDevice, DeviceOp, DeviceRequest } from './block-device.js';
import { createFaultDevice } from './fault-device.js';
import { createRamDevice } from './ram-device.js';
import { extentsOf } from '../../test/helpers/extents.js';

function request(op: DeviceOp, sector: number, countSectors: number,
  preflush = false): DeviceRequest {
  const segments = op === 'read' || op === 'write' ? [new Uint8Array(countSectors * 512)] : [];
  return { op, sector, countSectors, segments, flags: { sync: false, preflush, fua: false },
    ioprio: 0 };
}

function run(device: ReturnType<typeof createFaultDevice>, req: DeviceRequest):
Promise<IoError | null> {
  return new Promise((resolve) => {
    let returned = false;
    device.submit(req, (error) => {
      assert.ok(returned, 'done is never called inside submit');
      resolve(error);
    });
    returned = true;
  });
}

const ram = (): ReturnType<typeof createRamDevice> => createRamDevice({ sizeBytes: 64 * 512 });

test('a range fails overlapping requests of its ops only, with its errno', async () => {
  const inner = ram();
  const device = createFaultDevice(inner, { name: 'f', ranges: [
    { sector: 10, countSectors: 2, ops: ['write'], errno: 'ENOSPC' }] });
  const error = await run(device, request('write', 8, 3));
  assert.equal(error?.errno, 'ENOSPC');
  assert.equal(error?.device, 'f');
  assert.equal(error?.sector, 8);
  assert.equal(error?.countSectors, 3);
  assert.equal(await run(device, request('write', 8, 2)), null, 'just before the range');
  assert.equal(await run(device, request('write', 12, 2)), null, 'just after the range');
  assert.equal(await run(device, request('read', 10, 1)), null, 'reads are not in ops');
  assert.deepEqual(device.trace.map((entry) => entry.injected), ['ENOSPC', null, null, null]);
});

test('a failed write never reaches the wrapped device', async () => {
  const inner = ram();
  const device = createFaultDevice(inner, { ranges: [{ sector: 0, countSectors: 1 }] });
  const req = request('write', 0, 8);
  (req.segments[0] as Uint8Array).fill(7);
  assert.equal((await run(device, req))?.errno, 'EIO');
  assert.equal(inner.allocatedBytes, 0);
});

test('flush rules match pure flushes and preflush requests', async () => {
  const device = createFaultDevice(ram(), { ranges: [{ sector: 4, countSectors: 1,
    ops: ['flush'] }] });
  assert.equal((await run(device, request('write', 4, 0, true)))?.errno, 'EIO');
  assert.equal((await run(device, request('write', 0, 8, true)))?.errno, 'EIO');
  assert.equal(await run(device, request('write', 0, 8, false)), null);
  assert.equal(await run(device, request('write', 5, 0, true)), null, 'flush at another sector');
});

test('down fails everything until lifted; setFaults keeps other fields', async () => {
  const device = createFaultDevice(ram(), { errno: 'ENXIO', ranges: [{ sector: 0,
    countSectors: 1 }] });
  device.setFaults({ down: true });
  assert.equal((await run(device, request('read', 30, 1)))?.errno, 'ENXIO');
  device.setFaults({ down: false });
  assert.equal(await run(device, request('read', 30, 1)), null);
  assert.equal((await run(device, request('read', 0, 1)))?.errno, 'EIO', 'range kept');
});

test('flakey: up for upMs, then down for downMs, on the injected clock', async () => {
  let nowMs = 0;
  const device = createFaultDevice(ram(), { flakey: { upMs: 10, downMs: 5 },
    now: () => nowMs });
  const outcomes: Array<string | null> = [];
  for (const at of [0, 9, 10, 14, 15, 24, 25]) {
    nowMs = at;
    outcomes.push((await run(device, request('read', 0, 1)))?.errno ?? null);
  }
  assert.deepEqual(outcomes, [null, null, 'EIO', 'EIO', null, null, 'EIO']);
});

test('failRate is seeded and repeatable, and limited to failRateOps', async () => {
  const sample = async (seed: number): Promise<boolean[]> => {
    const device = createFaultDevice(ram(), { failRate: 0.5, seed, failRateOps: ['read'] });
    const failed: boolean[] = [];
    for (let index = 0; index < 40; index += 1) {
      failed.push((await run(device, request('read', 0, 1))) !== null);
    }
    assert.equal(await run(device, request('write', 0, 1)), null, 'writes never fail');
    return failed;
  };
  const a = await sample(3);
  assert.deepEqual(await sample(3), a);
  assert.notDeepEqual(await sample(4), a);
  const failures = a.filter(Boolean).length;
  assert.ok(failures > 5 && failures < 35, `${failures} of 40`);
});

test('delays hold completions back', async () => {
  const device = createFaultDevice(ram(), { delayMs: (req) => (req.sector === 0 ? 15 : 0) });
  const order: number[] = [];
  await Promise.all([0, 1].map((sector) => run(device, request('read', sector, 1))
    .then(() => order.push(sector))));
  assert.deepEqual(order, [1, 0]);
});

test('the trace is bounded and records flags, ioprio and segment counts', async () => {
  const device = createFaultDevice(ram(), { traceMax: 3 });
  for (let sector = 0; sector < 5; sector += 1) await run(device, request('write', sector, 1));
  assert.deepEqual(device.trace.map((entry) => entry.sector), [2, 3, 4]);
  assert.equal(device.trace[0]?.segmentCount, 1);
  device.clearTrace();
  assert.equal(device.trace.length, 0);
});

test('limit overrides; size, closed and read-only follow the wrapped device', async () => {
  const inner = ram();
  const device = createFaultDevice(inner, { limits: { maxSectorsPerRequest: 3 } });
  assert.equal(device.limits.maxSectorsPerRequest, 3);
  assert.equal(device.limits.maxSegmentsPerRequest, inner.limits.maxSegmentsPerRequest);
  assert.equal(device.sizeSectors, 64);
  assert.equal(device.canBlock, true);
  await device.close();
  assert.equal(inner.closed, true);
  assert.equal(device.closed, true);
});

test('bad fault specs are refused', () => {
  assert.throws(() => createFaultDevice(ram(), { failRate: 2 }),
    { code: 'DMIO_ERR_INVALID_ARG_VALUE' });
  assert.throws(() => createFaultDevice(ram(), { flakey: { upMs: 1, downMs: 0 } }),
    { code: 'DMIO_ERR_OUT_OF_RANGE' });
  assert.throws(() => createFaultDevice(ram(), { ranges: [{ sector: -1, countSectors: 1 }] }),
    { code: 'DMIO_ERR_OUT_OF_RANGE' });
  assert.throws(() => createFaultDevice(ram(), { ranges: [{ sector: 0, countSectors: 0 }] }),
    { code: 'DMIO_ERR_OUT_OF_RANGE' });
});

test('extents pass through to the wrapped device, and exist only when it has them', async () => {
  const inner = ram();
  inner.submitSync(request('write', 0, 8));
  const device = createFaultDevice(inner, { down: true });
  assert.deepEqual(await extentsOf(device, 0, 64),
    [{ sector: 0, countSectors: 64, hole: false, zero: false }], 'a 64 KiB chunk');
  assert.equal(device.trace.length, 0, 'queries are not traced');
  const bare: BlockDevice = {
    name: 'bare', kind: 'ram', sizeSectors: 64, readOnly: false, limits: inner.limits,
    closed: false, canBlock: false, submit: (req, done) => inner.submit(req, done),
    close: () => inner.close(),
  };
  assert.equal(createFaultDevice(bare).extents, undefined);
});
