// Tests `deviceExtents`, the public one-query helper: arguments refused with typed errors before
// anything is queried, a closed device, a device without `extents` (all data), a device's error
// passed on, a broken answer caught by its contract check; then property tests with fast-check:
// random RAM histories and random sparse files (ext4 and tmpfs), random queries, each answer
// checked against every rule of the contract and against a reference model.

import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { RAM_CHUNK_BYTES } from '../constants.js';
import { IoError, isDmIoError } from '../errors.js';
import type { BlockDevice, DeviceExtent, DeviceOp, ExtentsDone } from './block-device.js';
import { deviceExtents } from './device-extents.js';
import { openFileDevice } from './file-device.js';
import { createRamDevice, type RamDevice } from './ram-device.js';
import { withTempDir } from '../../test/helpers/tmp.js';
import {
  assertContract, type DataRun, extentsOf, modelExtents, writeSparseFile,
} from '../../test/helpers/extents.js';

const NUM_RUNS = Number(process.env.DMIO_PROPERTY_RUNS ?? 60);
const KIB = 1024;

/** A 64-sector device whose `extents` is a given function, counting its calls. */
function spyDevice(answer: (sector: number, countSectors: number, done: ExtentsDone) => void): {
  device: BlockDevice; calls: () => number; close: () => void;
} {
  let callCount = 0;
  let closed = false;
  const ram = createRamDevice({ sizeBytes: 64 * 512 });
  const device: BlockDevice = {
    name: 'spy', kind: 'ram', sizeSectors: 64, readOnly: false, limits: ram.limits,
    get closed() {
      return closed;
    },
    canBlock: false,
    submit: (request, done) => ram.submit(request, done),
    extents: (sector, countSectors, done) => {
      callCount += 1;
      answer(sector, countSectors, done);
    },
    close: () => ram.close(),
  };
  return { device, calls: () => callCount, close: () => { closed = true; } };
}

const holeZero = (sector: number, countSectors: number): DeviceExtent =>
  ({ sector, countSectors, hole: true, zero: true });

describe('deviceExtents at the boundary', () => {
  test('bad arguments throw typed errors synchronously, and nothing is queried', () => {
    const { device, calls } = spyDevice((sector, countSectors, done) => {
      queueMicrotask(() => done(null, [holeZero(sector, countSectors)]));
    });
    const cases: ReadonlyArray<readonly [unknown, unknown, unknown, string]> = [
      [null, 0, 1, 'DMIO_ERR_INVALID_ARG_TYPE'],
      [{ name: 'not a device' }, 0, 1, 'DMIO_ERR_INVALID_ARG_TYPE'],
      [device, '0', 1, 'DMIO_ERR_INVALID_ARG_TYPE'],
      [device, 0, 1n, 'DMIO_ERR_INVALID_ARG_TYPE'],
      [device, -1, 1, 'DMIO_ERR_OUT_OF_RANGE'],
      [device, 0.5, 1, 'DMIO_ERR_OUT_OF_RANGE'],
      [device, 64, 1, 'DMIO_ERR_OUT_OF_RANGE'],
      [device, 0, 0, 'DMIO_ERR_OUT_OF_RANGE'],
      [device, 60, 5, 'DMIO_ERR_OUT_OF_RANGE'],
      [device, 0, Number.MAX_SAFE_INTEGER + 1, 'DMIO_ERR_OUT_OF_RANGE'],
    ];
    for (const [target, sector, countSectors, code] of cases) {
      assert.throws(() => deviceExtents(target as BlockDevice, sector as number,
        countSectors as number), (error: unknown) => isDmIoError(error, code as never),
      `${String(sector)}+${String(countSectors)}: ${code}`);
    }
    assert.equal(calls(), 0);
  });

  test('a closed device is refused with DMIO_ERR_DEVICE_CLOSED, nothing queried', async () => {
    const spy = spyDevice(() => assert.fail('not queried'));
    spy.close();
    assert.throws(() => deviceExtents(spy.device, 0, 8), { code: 'DMIO_ERR_DEVICE_CLOSED' });
    const ram = createRamDevice({ sizeBytes: 4096 });
    await ram.close();
    assert.throws(() => deviceExtents(ram, 0, 8), { code: 'DMIO_ERR_DEVICE_CLOSED' });
    assert.equal(spy.calls(), 0);
  });

  test('a device without extents is one data extent for the whole range', async () => {
    const ram = createRamDevice({ sizeBytes: 64 * 512 });
    const bare: BlockDevice = {
      name: 'bare', kind: 'stream', sizeSectors: 64, readOnly: false, limits: ram.limits,
      closed: false, canBlock: false, submit: (request, done) => ram.submit(request, done),
      close: () => ram.close(),
    };
    assert.deepEqual(await deviceExtents(bare, 3, 61),
      [{ sector: 3, countSectors: 61, hole: false, zero: false }]);
  });

  test('the device\'s error rejects the promise unchanged', async () => {
    const failure = new IoError({ errno: 'EIO', syscall: 'lseek', device: 'spy', sector: 0,
      countSectors: 8 });
    const { device } = spyDevice((_sector, _count, done) => {
      queueMicrotask(() => done(failure, []));
    });
    await assert.rejects(deviceExtents(device, 0, 8), (error) => error === failure);
  });

  test('an answer breaking the contract fails an assertion (a programmer error)', () => {
    const broken: DeviceExtent[][] = [
      [], [holeZero(1, 4)], [holeZero(0, 4), holeZero(5, 1)], [holeZero(0, 9)],
      [holeZero(0, 0)],
    ];
    for (const answer of broken) {
      let thrown: unknown = null;
      const { device } = spyDevice((_sector, _count, done) => {
        try {
          done(null, answer);
        } catch (error) {
          thrown = error;
        }
      });
      void deviceExtents(device, 0, 8);
      assert.equal((thrown as Error | null)?.name, 'AssertionError', JSON.stringify(answer));
    }
  });

  test('a copy of the answer is returned', async () => {
    const answer = [holeZero(0, 8)];
    const { device } = spyDevice((_sector, _count, done) => {
      queueMicrotask(() => done(null, answer));
    });
    const extents = await deviceExtents(device, 0, 8);
    assert.deepEqual(extents, answer);
    assert.notEqual(extents, answer);
  });
});

/** A RAM operation of a random history: sectors inside a 32-chunk device. */
interface RamStep {
  readonly op: DeviceOp;
  readonly sector: number;
  readonly countSectors: number;
}

const CHUNK_SECTORS = RAM_CHUNK_BYTES / 512;
const RAM_SECTORS = 32 * CHUNK_SECTORS;

const ramStep = fc.record({
  op: fc.constantFrom<DeviceOp>('write', 'write', 'discard', 'write-zeroes'),
  sector: fc.integer({ min: 0, max: RAM_SECTORS - 1 }),
  countSectors: fc.integer({ min: 1, max: 3 * CHUNK_SECTORS }),
}).map((step): RamStep => ({
  ...step, countSectors: Math.min(step.countSectors, RAM_SECTORS - step.sector),
}));

const query = (sizeSectors: number): fc.Arbitrary<{ sector: number; countSectors: number }> =>
  fc.tuple(fc.integer({ min: 0, max: sizeSectors - 1 }), fc.integer({ min: 1, max: sizeSectors }))
    .map(([sector, countSectors]) => ({
      sector, countSectors: Math.min(countSectors, sizeSectors - sector),
    }));

/** Runs `steps` on `device`; returns the chunks the model says are allocated. */
function applyRamSteps(device: RamDevice, steps: readonly RamStep[]): Set<number> {
  const allocated = new Set<number>();
  for (const { op, sector, countSectors } of steps) {
    const segments = op === 'write' ? [new Uint8Array(countSectors * 512).fill(3)] : [];
    assert.equal(device.submitSync({ op, sector, countSectors, segments, ioprio: 0,
      flags: { sync: false, preflush: false, fua: false } }), null);
    const firstChunk = Math.floor(sector / CHUNK_SECTORS);
    const lastChunk = Math.floor((sector + countSectors - 1) / CHUNK_SECTORS);
    for (let chunk = firstChunk; chunk <= lastChunk; chunk += 1) {
      const whole = sector <= chunk * CHUNK_SECTORS &&
        sector + countSectors >= (chunk + 1) * CHUNK_SECTORS;
      if (op === 'write') allocated.add(chunk);
      else if (whole) allocated.delete(chunk);
    }
  }
  return allocated;
}

describe('extents contract, property-based', () => {
  test('RAM: random histories, random queries, every rule and the model', async () => {
    await fc.assert(fc.asyncProperty(fc.array(ramStep, { maxLength: 12 }), query(RAM_SECTORS),
      async (steps, { sector, countSectors }) => {
        const device = createRamDevice({ sizeBytes: RAM_SECTORS * 512 });
        const allocated = applyRamSteps(device, steps);
        const runs = [...allocated].map((chunk) =>
          ({ offsetBytes: chunk * RAM_CHUNK_BYTES, lengthBytes: RAM_CHUNK_BYTES }));
        const direct = await extentsOf(device, sector, countSectors);
        assert.deepEqual(direct, modelExtents(runs, sector, countSectors));
        const viaHelper = await deviceExtents(device, sector, countSectors);
        assertContract(viaHelper, sector, countSectors);
        assert.deepEqual(viaHelper, direct);
      }), { numRuns: NUM_RUNS * 2 });
  });

  for (const [fsName, parent] of [['ext4', undefined], ['tmpfs', '/dev/shm']] as const) {
    test(`real sparse files on ${fsName}: random layouts, random queries`, async () => {
      const unitBytes = 64 * KIB;
      const layout = fc.tuple(fc.integer({ min: 1, max: 48 }),
        fc.array(fc.boolean(), { minLength: 48, maxLength: 48 }));
      await withTempDir(async (directory) => {
        let fileIndex = 0;
        await fc.assert(fc.asyncProperty(layout, fc.nat(), fc.nat(),
          async ([sizeUnits, written], sectorSeed, countSeed) => {
            const runs: DataRun[] = [];
            for (let unit = 0; unit < sizeUnits; unit += 1) {
              if (written[unit] === true) {
                runs.push({ offsetBytes: unit * unitBytes, lengthBytes: unitBytes });
              }
            }
            const path = join(directory, `layout-${fileIndex++}.img`);
            writeSparseFile(path, sizeUnits * unitBytes, runs);
            const device = await openFileDevice(path, { readOnly: true });
            try {
              const sector = sectorSeed % device.sizeSectors;
              const countSectors = 1 + (countSeed % (device.sizeSectors - sector));
              const direct = await extentsOf(device, sector, countSectors);
              assert.deepEqual(direct, modelExtents(runs, sector, countSectors));
              assert.deepEqual(await deviceExtents(device, sector, countSectors), direct);
            } finally {
              await device.close();
            }
          }), { numRuns: NUM_RUNS });
      }, parent === undefined ? {} : { parent });
    });
  }
});
