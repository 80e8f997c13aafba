// The original (2.6-era) interface: dmIoGet/dmIoPut size one shared pool, and six positional
// calls (sync and async × page list, bvec, vm) run on it. The pool is process state, so every
// test pairs its gets and puts; node:test runs each file in its own process.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { READ, WRITE, type Bvec, type DmIoRegion } from '../src/index.js';
import {
  dmIoAsync, dmIoAsyncBvec, dmIoAsyncVm, dmIoGet, dmIoPut, dmIoSync, dmIoSyncBvec, dmIoSyncVm,
} from '../src/legacy.js';
import { CountingDevice, faultyRam, pattern, peek, sleep, thrown } from './helpers/devices.js';
import { bvecs, fillLogical, pageList, readLogical } from './helpers/memory.js';

/** Calls an async legacy function and resolves with its single callback, checking deferral. */
function asyncResult<C>(
  start: (fn: (bits: bigint, context: C) => void) => void,
): Promise<{ bits: bigint; context: C; calls: number }> {
  return new Promise((resolve, reject) => {
    let calls = 0;
    let returned = false;
    start((bits, context) => {
      calls += 1;
      if (!returned) reject(new Error('callback ran inside the call'));
      setTimeout(() => resolve({ bits, context, calls }), 5);
    });
    returned = true;
  });
}

describe('without dmIoGet', () => {
  test('all six calls throw DMIO_ERR_NO_LEGACY_POOL synchronously, submitting nothing',
    async () => {
      const { dev } = faultyRam(64);
      const where = [{ device: dev, sector: 0, count: 8 }];
      const list = pageList(2);
      const vectors = bvecs([4096]);
      const data = new Uint8Array(4096);
      let called = false;
      const fn = (): void => { called = true; };
      for (const call of [
        () => dmIoSync(1, where, WRITE, list, 0),
        () => dmIoAsync(1, where, WRITE, list, 0, fn, null),
        () => dmIoSyncBvec(1, where, WRITE, vectors),
        () => dmIoAsyncBvec(1, where, WRITE, vectors, fn, null),
        () => dmIoSyncVm(1, where, READ, data),
        () => dmIoAsyncVm(1, where, READ, data, fn, null),
      ]) {
        assert.equal(thrown(call).code, 'DMIO_ERR_NO_LEGACY_POOL');
      }
      await sleep(2);
      assert.equal(called, false);
      assert.equal(dev.trace.length, 0);
    });

  test('dmIoPut without a matching get is refused', () => {
    assert.equal(thrown(() => dmIoPut(1)).code, 'DMIO_ERR_OUT_OF_RANGE');
    for (const bad of [0, -1, 1.5, 65537]) {
      assert.equal(thrown(() => dmIoGet(bad)).code, 'DMIO_ERR_OUT_OF_RANGE');
    }
    assert.equal(thrown(() => dmIoGet('4' as unknown as number)).code,
      'DMIO_ERR_INVALID_ARG_TYPE');
  });
});

describe('with the legacy pool', () => {
  test('sync and async × page list, bvec and vm round-trip', async () => {
    dmIoGet(8);
    try {
      const { dev } = faultyRam(256);
      const data = pattern(12 * 512, 4);

      const list = pageList(3);
      fillLogical({ type: 'page-list', list, offset: 1024 }, data);
      assert.equal(await dmIoSync(1, [{ device: dev, sector: 0, count: 12 }], WRITE, list, 1024),
        0n);
      assert.deepEqual(peek(dev, 0, 12), data);
      const listBack = pageList(3);
      const asyncList = await asyncResult<string>((fn) => dmIoAsync(1,
        [{ device: dev, sector: 0, count: 12 }], READ, listBack, 1024, fn, 'pl'));
      assert.deepEqual(asyncList, { bits: 0n, context: 'pl', calls: 1 });
      assert.deepEqual(readLogical({ type: 'page-list', list: listBack, offset: 1024 }, 6144),
        data);

      const vectors: Bvec[] = bvecs([1024, 3072, 4096]);
      fillLogical({ type: 'bvec', bvecs: vectors }, data);
      const asyncBvec = await asyncResult<number>((fn) => dmIoAsyncBvec(1,
        [{ device: dev, sector: 32, count: 12 }], WRITE, vectors, fn, 42));
      assert.deepEqual(asyncBvec, { bits: 0n, context: 42, calls: 1 });
      assert.deepEqual(peek(dev, 32, 12), data);
      const vectorsBack = bvecs([2048, 2048, 4096]);
      assert.equal(await dmIoSyncBvec(1, [{ device: dev, sector: 32, count: 12 }], READ,
        vectorsBack), 0n);
      assert.deepEqual(readLogical({ type: 'bvec', bvecs: vectorsBack }, 6144), data);

      assert.equal(await dmIoSyncVm(1, [{ device: dev, sector: 64, count: 12 }], WRITE, data),
        0n);
      assert.deepEqual(peek(dev, 64, 12), data);
      const back = new Uint8Array(6144);
      const asyncVm = await asyncResult<object>((fn) => dmIoAsyncVm(1,
        [{ device: dev, sector: 64, count: 12 }], READ, back, fn, dev));
      assert.equal(asyncVm.context, dev);
      assert.deepEqual(back, data);
    } finally {
      dmIoPut(8);
    }
  });

  test('multi-region writes and error bits; numRegions selects a prefix of where', async () => {
    dmIoGet(2);
    try {
      const { dev: a } = faultyRam(64);
      const { dev: b } = faultyRam(64, { down: true });
      const { dev: c } = faultyRam(64);
      const data = pattern(4096, 6);
      const where: DmIoRegion[] = [{ device: a, sector: 0, count: 8 },
        { device: b, sector: 0, count: 8 }, { device: c, sector: 0, count: 8 }];
      assert.equal(await dmIoSyncVm(3, where, WRITE, data), 0b010n);
      assert.deepEqual(peek(c, 0, 8), data);
      assert.equal(await dmIoSyncVm(1, where, WRITE, pattern(4096, 7)), 0n);
      assert.equal(b.trace.length, 1);
      assert.deepEqual(peek(c, 0, 8), data, 'region 2 not part of the second call');
      const async = await asyncResult<null>((fn) => dmIoAsyncVm(3, where, WRITE, data, fn, null));
      assert.equal(async.bits, 0b010n);
    } finally {
      dmIoPut(2);
    }
  });

  test('argument errors throw synchronously: rw, numRegions, multi-region read, fn', async () => {
    dmIoGet(1);
    try {
      const { dev } = faultyRam(64);
      const where = [{ device: dev, sector: 0, count: 8 }, { device: dev, sector: 8, count: 8 }];
      const data = new Uint8Array(4096);
      let called = false;
      const fn = (): void => { called = true; };
      const cases: Array<[() => unknown, string]> = [
        [() => dmIoSyncVm(1, where, 2, data), 'DMIO_ERR_OUT_OF_RANGE'],
        [() => dmIoSyncVm(1, where, 'w' as unknown as number, data), 'DMIO_ERR_INVALID_ARG_TYPE'],
        [() => dmIoSyncVm(3, where, WRITE, data), 'DMIO_ERR_OUT_OF_RANGE'],
        [() => dmIoSyncVm(-1, where, WRITE, data), 'DMIO_ERR_OUT_OF_RANGE'],
        [() => dmIoSyncVm(1, null as unknown as DmIoRegion[], WRITE, data),
          'DMIO_ERR_INVALID_ARG_TYPE'],
        [() => dmIoSyncVm(2, where, READ, data), 'DMIO_ERR_MULTI_REGION_READ'],
        [() => dmIoAsyncVm(2, where, READ, data, fn, null), 'DMIO_ERR_MULTI_REGION_READ'],
        [() => dmIoAsync(1, where, WRITE, pageList(1), 100, fn, null), 'DMIO_ERR_MISALIGNED'],
        [() => dmIoSyncVm(2, where, WRITE, new Uint8Array(100)), 'DMIO_ERR_BUFFER_TOO_SHORT'],
        [() => dmIoAsyncVm(1, where, WRITE, data, 'fn' as unknown as () => void, null),
          'DMIO_ERR_INVALID_ARG_TYPE'],
      ];
      for (const [call, code] of cases) assert.equal(thrown(call).code, code);
      await sleep(2);
      assert.equal(called, false, 'no callback for a refused call (modern behaviour)');
      assert.equal(dev.trace.length, 0);
    } finally {
      dmIoPut(1);
    }
  });

  test('the pool grants 4 in-flight requests per page got', async () => {
    dmIoGet(1);
    try {
      const { dev } = faultyRam(64, { delayMs: 2, limits: { maxSectorsPerRequest: 1 } });
      const counting = new CountingDevice(dev, 'counting');
      assert.equal(await dmIoSyncVm(1, [{ device: counting, sector: 0, count: 16 }], WRITE,
        pattern(8192)), 0n);
      assert.equal(counting.peak, 4);
      dmIoGet(1);
      counting.peak = 0;
      assert.equal(await dmIoSyncVm(1, [{ device: counting, sector: 0, count: 16 }], WRITE,
        pattern(8192)), 0n);
      assert.equal(counting.peak, 8);
      dmIoPut(1);
    } finally {
      dmIoPut(1);
    }
  });

  test('resizing while I/O is in flight lets that I/O finish', async () => {
    dmIoGet(1);
    const { dev } = faultyRam(64, { delayMs: 3, limits: { maxSectorsPerRequest: 1 } });
    const pending = dmIoSyncVm(1, [{ device: dev, sector: 0, count: 16 }], WRITE, pattern(8192));
    dmIoGet(3);
    dmIoPut(4);
    assert.equal(await pending, 0n);
    assert.deepEqual(peek(dev, 0, 16), pattern(8192));
    assert.equal(thrown(() => dmIoSyncVm(1, [{ device: dev, sector: 0, count: 1 }], READ,
      new Uint8Array(512))).code, 'DMIO_ERR_NO_LEGACY_POOL', 'back to no pool at 0');
  });
});
