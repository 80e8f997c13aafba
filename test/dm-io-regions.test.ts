// Multi-region semantics and splitting: every region gets the same bytes from the buffer's
// start, count-0 regions are skipped except for a flush, regions are cut by the device's limits
// and by 256 segments with flags and ioprio on every piece, the sync flag follows the form, and
// discard/write-zeroes are split into data-less requests or refused per region.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  BIO_MAX_VECS, createRamDevice, dmIo, dmIoBlocking, IOPRIO_DEFAULT, NotSupportedError,
  type DmIoRegion,
} from '../src/index.js';
import { createFaultDevice, type FaultDevice, type TraceEntry } from '../src/testing.js';
import { faultyRam, pattern, peek, poke, smallClient } from './helpers/devices.js';
import { bvecs, fillLogical, pageList } from './helpers/memory.js';

const client = smallClient();

/** Checks that `trace` covers `[sector, sector + count)` with contiguous pieces, in order. */
function assertContiguous(trace: readonly TraceEntry[], sector: number, count: number): void {
  let next = sector;
  for (const entry of trace) {
    assert.equal(entry.sector, next, 'pieces are contiguous and in order');
    assert.ok(entry.countSectors > 0);
    next += entry.countSectors;
  }
  assert.equal(next, sector + count, 'pieces cover the region exactly');
}

describe('multi-region writes', () => {
  test('every region receives the same bytes from the buffer start', async () => {
    const devices = [faultyRam(64).dev, faultyRam(64).dev, faultyRam(64).dev];
    const data = pattern(6 * 512, 11);
    const regions = devices.map((device, index) => ({ device, sector: index * 7, count: 6 }));
    const result = await dmIo({ op: 'write', mem: { type: 'vm', data }, client }, regions);
    assert.equal(result.errorBits, 0n);
    for (const [index, device] of devices.entries()) {
      assert.deepEqual(peek(device, index * 7, 6), data, `region ${index}`);
    }
  });

  test('regions of 8 and 4 sectors receive 4096- and 2048-byte prefixes', async () => {
    for (const make of [
      () => ({ type: 'vm' as const, data: new Uint8Array(4096) }),
      () => ({ type: 'page-list' as const, list: pageList(2), offset: 2048 }),
      () => ({ type: 'bvec' as const, bvecs: bvecs([1024, 1024, 2048]) }),
    ]) {
      const { dev: a } = faultyRam(64);
      const { dev: b } = faultyRam(64);
      const data = pattern(4096, 2);
      const mem = make();
      fillLogical(mem, data);
      const result = await dmIo({ op: 'write', mem, client },
        [{ device: a, sector: 8, count: 8 }, { device: b, sector: 8, count: 4 }]);
      assert.equal(result.errorBits, 0n);
      assert.deepEqual(peek(a, 8, 8), data);
      assert.deepEqual(peek(b, 8, 4), data.subarray(0, 2048), mem.type);
      assert.deepEqual(peek(b, 12, 4), new Uint8Array(2048), 'nothing after the prefix');
    }
  });

  test('two regions on one device write the same prefix twice', async () => {
    const { dev } = faultyRam(64);
    const data = pattern(2048, 9);
    await dmIo({ op: 'write', mem: { type: 'vm', data }, client },
      [{ device: dev, sector: 0, count: 4 }, { device: dev, sector: 32, count: 4 }]);
    assert.deepEqual(peek(dev, 0, 4), data);
    assert.deepEqual(peek(dev, 32, 4), data);
  });

  test('a count-0 region in the middle: no request, no bit; other bits by original index',
    async () => {
      const { dev: a } = faultyRam(64);
      const { dev: b } = faultyRam(64, { down: true });
      const { dev: c } = faultyRam(64, { ranges: [{ sector: 0, countSectors: 64 }] });
      const { dev: d } = faultyRam(64);
      const data = pattern(4096, 3);
      const regions: DmIoRegion[] = [{ device: a, sector: 0, count: 8 },
        { device: b, sector: 0, count: 0 }, { device: c, sector: 0, count: 8 },
        { device: d, sector: 8, count: 8 }];
      const result = await dmIo({ op: 'write', mem: { type: 'vm', data }, client }, regions);
      assert.equal(result.errorBits, 0b0100n);
      assert.equal(b.trace.length, 0, 'no request to the skipped region');
      assert.equal(result.errors[1], undefined);
      assert.equal((result.errors[2] as { regionIndex?: number }).regionIndex, 2);
      assert.deepEqual(peek(a, 0, 8), data);
      assert.deepEqual(peek(d, 8, 8), data);
    });

  test('a zero-count region with preflush gets exactly one empty flush request', async () => {
    const { dev: a } = faultyRam(64, { limits: { maxSectorsPerRequest: 4 } });
    const { dev: b } = faultyRam(64);
    const data = pattern(4096, 1);
    const result = await dmIo({ op: 'write', flags: { preflush: true }, mem: { type: 'vm', data },
      client }, [{ device: a, sector: 0, count: 8 }, { device: b, sector: 16, count: 0 }]);
    assert.equal(result.errorBits, 0n);
    assert.equal(b.trace.length, 1);
    const flush = b.trace[0];
    assert.ok(flush !== undefined);
    assert.equal(flush.countSectors, 0);
    assert.equal(flush.segmentCount, 0);
    assert.equal(flush.flags.preflush, true);
    assert.equal(flush.sector, 16);
    assert.deepEqual(a.trace.map((entry) => entry.flags.preflush), [true, true]);
    assert.deepEqual(peek(a, 0, 8), data);
  });

  test('only flushes: no memory needed, one request per region, for every form', async () => {
    const { dev } = faultyRam(64);
    await dmIo({ op: 'write', flags: { preflush: true }, client },
      [{ device: dev, sector: 0, count: 0 }, { device: dev, sector: 0, count: 0 }]);
    dmIoBlocking({ op: 'write', flags: { preflush: true }, client },
      [{ device: dev, sector: 0, count: 0 }]);
    assert.equal(dev.trace.length, 3);
    assert.ok(dev.trace.every((entry) => entry.countSectors === 0 && entry.flags.preflush));
  });

  test('a zero-count region without preflush submits nothing at all', async () => {
    const { dev } = faultyRam(64);
    const result = await dmIo({ op: 'write', client }, [{ device: dev, sector: 0, count: 0 },
      { device: dev, sector: 8, count: 0 }]);
    assert.equal(result.errorBits, 0n);
    assert.equal(dev.trace.length, 0);
  });

  test('a failing flush sets its region bit', async () => {
    const { dev: a } = faultyRam(64);
    const { dev: b } = faultyRam(64, { ranges: [{ sector: 0, countSectors: 64,
      ops: ['flush'] }] });
    const result = await dmIo({ op: 'write', flags: { preflush: true }, client },
      [{ device: a, sector: 0, count: 0 }, { device: b, sector: 0, count: 0 }]);
    assert.equal(result.errorBits, 0b10n);
  });
});

describe('splitting', () => {
  test('by maxSectorsPerRequest: contiguous pieces, FUA and PREFLUSH and ioprio on each',
    async () => {
      const { dev } = faultyRam(64, { limits: { maxSectorsPerRequest: 3 } });
      const data = pattern(16 * 512, 5);
      const result = await dmIo({ op: 'write', flags: { fua: true, preflush: true },
        ioprio: 0x6007, mem: { type: 'vm', data }, client }, [{ device: dev, sector: 5,
        count: 16 }]);
      assert.equal(result.errorBits, 0n);
      assert.deepEqual(dev.trace.map((entry) => entry.countSectors), [3, 3, 3, 3, 3, 1]);
      assertContiguous(dev.trace, 5, 16);
      for (const entry of dev.trace) {
        assert.equal(entry.flags.fua, true);
        assert.equal(entry.flags.preflush, true);
        assert.equal(entry.ioprio, 0x6007);
        assert.equal(entry.op, 'write');
      }
      assert.deepEqual(peek(dev, 5, 16), data);
    });

  test('by maxSegmentsPerRequest', async () => {
    const { dev } = faultyRam(128, { limits: { maxSegmentsPerRequest: 2 } });
    const list = pageList(5);
    const data = pattern(5 * 4096, 6);
    const mem = { type: 'page-list' as const, list, offset: 0 };
    fillLogical(mem, data);
    await dmIo({ op: 'write', mem, client }, [{ device: dev, sector: 0, count: 40 }]);
    assert.deepEqual(dev.trace.map((entry) => entry.segmentCount), [2, 2, 1]);
    assert.deepEqual(dev.trace.map((entry) => entry.countSectors), [16, 16, 8]);
    assertContiguous(dev.trace, 0, 40);
    assert.deepEqual(peek(dev, 0, 40), data);

    const back = { type: 'page-list' as const, list: pageList(5), offset: 0 };
    dev.clearTrace();
    await dmIo({ op: 'read', mem: back, client }, [{ device: dev, sector: 0, count: 40 }]);
    assert.deepEqual(dev.trace.map((entry) => entry.segmentCount), [2, 2, 1]);
  });

  test(`at most ${BIO_MAX_VECS} segments per request even when the device allows more`,
    async () => {
      const { dev } = faultyRam(1024, { limits: { maxSegmentsPerRequest: 1000 } });
      const vectors = bvecs(new Array<number>(300).fill(512));
      const data = pattern(300 * 512, 8);
      const mem = { type: 'bvec' as const, bvecs: vectors };
      fillLogical(mem, data);
      await dmIo({ op: 'write', mem, client }, [{ device: dev, sector: 1, count: 300 }]);
      assert.deepEqual(dev.trace.map((entry) => entry.segmentCount), [256, 44]);
      assertContiguous(dev.trace, 1, 300);
      assert.deepEqual(peek(dev, 1, 300), data);
    });

  test('by segments on a 4096-byte-block device: every piece is whole blocks', async () => {
    const ram = createRamDevice({ sizeBytes: 65536, limits: { logicalBlockBytes: 4096 } });
    const dev = createFaultDevice(ram, { limits: { maxSegmentsPerRequest: 2 } });
    const mem = { type: 'page-list' as const, list: pageList(5), offset: 512 };
    const data = pattern(4 * 4096, 12);
    fillLogical(mem, data);
    const result = await dmIo({ op: 'write', mem, client }, [{ device: dev, sector: 8,
      count: 32 }]);
    assert.equal(result.errorBits, 0n);
    assertContiguous(dev.trace, 8, 32);
    for (const entry of dev.trace) assert.equal(entry.countSectors % 8, 0);
    assert.ok(dev.trace.every((entry) => entry.segmentCount <= 2));
    assert.deepEqual(peek(dev, 8, 32), data);

    const back = { type: 'page-list' as const, list: pageList(5), offset: 512 };
    await dmIo({ op: 'read', mem: back, client }, [{ device: dev, sector: 8, count: 32 }]);
    assert.deepEqual(Buffer.from(back.list.page.subarray(512)),
      Buffer.from(data.subarray(0, 3584)));
  });

  test('a block that cannot fit one request fails its region with EINVAL, submitting nothing',
    async () => {
      // 4096-byte blocks, one segment per request, memory whose first chunk is 3584 bytes: no
      // request can hold a whole block, so the region fails instead of sending a torn block.
      const ram = createRamDevice({ sizeBytes: 65536, limits: { logicalBlockBytes: 4096 } });
      const dev = createFaultDevice(ram, { limits: { maxSegmentsPerRequest: 1 } });
      const { dev: other } = faultyRam(64);
      const mem = { type: 'page-list' as const, list: pageList(3), offset: 512 };
      const result = await dmIo({ op: 'write', mem, client },
        [{ device: other, sector: 0, count: 8 }, { device: dev, sector: 8, count: 8 }]);
      assert.equal(result.errorBits, 0b10n);
      const error = result.errors[1] as { errno?: string; syscall?: string; regionIndex?: number };
      assert.equal(error.errno, 'EINVAL');
      assert.equal(error.syscall, 'dm-io split');
      assert.equal(error.regionIndex, 1);
      assert.equal(dev.trace.length, 0);
      assert.equal(other.trace.length, 1);
    });

  test('the sync flag: added in Promise and blocking forms, not in notify form', async () => {
    const { dev } = faultyRam(64, { limits: { maxSectorsPerRequest: 2 } });
    const region = [{ device: dev, sector: 0, count: 4 }];
    const mem = { type: 'vm' as const, data: new Uint8Array(2048) };
    await dmIo({ op: 'write', mem, client }, region);
    dmIoBlocking({ op: 'write', mem, client }, region);
    await new Promise<void>((resolve) => {
      dmIo({ op: 'write', mem, client, notify: { fn: () => resolve() } }, region);
    });
    await new Promise<void>((resolve) => {
      dmIo({ op: 'write', mem, client, flags: { sync: true }, notify: { fn: () => resolve() } },
        region);
    });
    await dmIo({ op: 'write', mem, client, flags: { sync: false } }, region);
    assert.deepEqual(dev.trace.map((entry) => entry.flags.sync),
      [true, true, true, true, false, false, true, true, true, true]);
  });

  test('ioprio defaults to IOPRIO_DEFAULT on every piece, of every op', async () => {
    const { dev } = faultyRam(64, { limits: { maxSectorsPerRequest: 2, maxDiscardSectors: 2,
      maxWriteZeroesSectors: 2 } });
    const mem = { type: 'vm' as const, data: new Uint8Array(2048) };
    for (const op of ['write', 'read', 'discard', 'write-zeroes'] as const) {
      await dmIo({ op, mem, client }, [{ device: dev, sector: 0, count: 4 }]);
    }
    await dmIo({ op: 'read', ioprio: 0, mem, client }, [{ device: dev, sector: 0, count: 4 }]);
    assert.deepEqual(dev.trace.map((entry) => entry.ioprio),
      [...new Array<number>(8).fill(IOPRIO_DEFAULT), 0, 0]);
  });
});

describe('discard and write-zeroes', () => {
  for (const op of ['discard', 'write-zeroes'] as const) {
    const limit = op === 'discard' ? 'maxDiscardSectors' : 'maxWriteZeroesSectors';

    test(`${op} larger than ${limit} is split into data-less requests`, async () => {
      const { dev } = faultyRam(64, { limits: { [limit]: 5 } });
      poke(dev, 0, pattern(64 * 512, 4));
      const result = await dmIo({ op, flags: { fua: true }, client },
        [{ device: dev, sector: 10, count: 23 }]);
      assert.equal(result.errorBits, 0n);
      assert.deepEqual(dev.trace.map((entry) => entry.countSectors), [5, 5, 5, 5, 3]);
      assertContiguous(dev.trace, 10, 23);
      for (const entry of dev.trace) {
        assert.equal(entry.op, op);
        assert.equal(entry.segmentCount, 0);
        assert.equal(entry.flags.fua, true);
      }
      assert.deepEqual(peek(dev, 10, 23), new Uint8Array(23 * 512));
      assert.deepEqual(peek(dev, 0, 10), pattern(64 * 512, 4).subarray(0, 5120));
      assert.deepEqual(peek(dev, 33, 31), pattern(64 * 512, 4).subarray(33 * 512));
    });

    test(`${op} on a device with ${limit} 0: that region's bit, nothing submitted to it`,
      async () => {
        const { dev: a } = faultyRam(64);
        const { dev: b } = faultyRam(64, { limits: { [limit]: 0 } });
        const { dev: c } = faultyRam(64);
        for (const device of [a, b, c]) poke(device, 0, pattern(4096, 1));
        const result = await dmIo({ op, client }, [{ device: a, sector: 0, count: 8 },
          { device: b, sector: 0, count: 8 }, { device: c, sector: 0, count: 8 }]);
        assert.equal(result.errorBits, 0b010n);
        assert.equal(b.trace.length, 0);
        const error = result.errors[1];
        assert.ok(error instanceof NotSupportedError);
        assert.equal(error.code, 'DMIO_ERR_NOT_SUPPORTED');
        assert.equal(error.errno, 'EOPNOTSUPP');
        assert.equal(error.regionIndex, 1);
        assert.equal(error.device, b.name);
        assert.deepEqual(peek(b, 0, 8), pattern(4096, 1), 'b untouched');
        assert.deepEqual(peek(a, 0, 8), new Uint8Array(4096), 'a still cleared');
        assert.deepEqual(peek(c, 0, 8), new Uint8Array(4096), 'c still cleared');
      });

    test(`${op} ignores memory and needs none`, async () => {
      const { dev } = faultyRam(64);
      const result = await dmIo({ op, client, mem: { type: 'vm', data: new Uint8Array(1) } },
        [{ device: dev, sector: 0, count: 64 }]);
      assert.equal(result.errorBits, 0n);
    });
  }

  test('on 4096-byte blocks the pieces are whole blocks', async () => {
    const ram = createRamDevice({ sizeBytes: 65536, limits: { logicalBlockBytes: 4096 } });
    const dev: FaultDevice = createFaultDevice(ram, { limits: { maxDiscardSectors: 12 } });
    await dmIo({ op: 'discard', client }, [{ device: dev, sector: 0, count: 32 }]);
    assert.deepEqual(dev.trace.map((entry) => entry.countSectors), [8, 8, 8, 8]);
  });
});
