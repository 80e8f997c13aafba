// The boundary of dmIo: every bad argument throws synchronously, in the Promise form, the
// notify form and the blocking form alike, with a stable code, no device request and no
// callback. Also the region-count limits (64 accepted with bit 63 as a bigint, 65 refused),
// multi-region reads, closed and read-only devices, destroyed clients, logical-block alignment.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  createRamDevice, createRandomDevice, createZeroDevice, DM_IO_MAX_REGIONS, dmIo, dmIoBlocking,
  dmIoClientCreate, dmIoClientDestroy, failedRegions, IoError, openDevice, type BlockDevice,
  type DmIoRegion, type DmIoRequest,
} from '../src/index.js';
import { createFaultDevice } from '../src/testing.js';
import { faultyRam, pattern, peek, smallClient, sleep, thrown } from './helpers/devices.js';

const client = smallClient();

/**
 * Runs one bad call in all three forms and checks the code, that each throw was synchronous,
 * that nothing reached `devices`, and that no callback ever ran.
 */
async function rejectsEverywhere(
  code: string, request: () => unknown, regions: () => unknown,
  devices: ReadonlyArray<{ trace: readonly unknown[] }>,
): Promise<void> {
  let callbacks = 0;
  const withNotify = (): unknown => {
    const base = request();
    if (typeof base !== 'object' || base === null) return base;
    return { ...base, notify: { fn: () => { callbacks += 1; } } };
  };
  const forms: Array<[string, () => unknown]> = [
    ['promise', () => dmIo(request() as DmIoRequest, regions() as DmIoRegion[])],
    ['notify', () => dmIo(withNotify() as DmIoRequest, regions() as DmIoRegion[])],
    ['blocking', () => dmIoBlocking(request() as DmIoRequest, regions() as DmIoRegion[])],
  ];
  for (const [form, run] of forms) {
    const error = thrown(run);
    assert.equal(error.code, code, `${form}: ${error.message}`);
    assert.ok(error.message.length > 0);
  }
  await sleep(2);
  assert.equal(callbacks, 0, 'no callback');
  for (const device of devices) assert.equal(device.trace.length, 0, 'nothing submitted');
}

describe('region count', () => {
  test(`${DM_IO_MAX_REGIONS} regions are accepted; bit 63 is a bigint`, async () => {
    const { dev } = faultyRam(1024);
    const { dev: bad } = faultyRam(16, { ranges: [{ sector: 0, countSectors: 16 }] });
    const regions: DmIoRegion[] = [];
    for (let index = 0; index < 63; index += 1) {
      regions.push({ device: dev, sector: index * 2, count: 2 });
    }
    regions.push({ device: bad, sector: 0, count: 2 });
    const data = pattern(1024, 3);
    const result = await dmIo({ op: 'write', mem: { type: 'vm', data }, client }, regions);
    assert.equal(typeof result.errorBits, 'bigint');
    assert.equal(result.errorBits, 1n << 63n);
    assert.deepEqual(failedRegions(result.errorBits), [63]);
    assert.equal(result.errors.length, 64);
    assert.ok(result.errors[63] instanceof IoError);
    assert.equal((result.errors[63] as IoError).regionIndex, 63);
    assert.deepEqual(peek(dev, 62 * 2, 2), data, 'region 62 written');
    assert.equal(dev.trace.length, 63);

    let notified: bigint | null = null;
    await new Promise<void>((resolve) => {
      dmIo({ op: 'write', mem: { type: 'vm', data }, client, notify: { fn: (bits) => {
        notified = bits;
        resolve();
      } } }, regions);
    });
    assert.equal(notified, 1n << 63n);
  });

  test('bits 31 and 32 are distinct (no 32-bit truncation)', async () => {
    const { dev } = faultyRam(1024, { ranges: [{ sector: 31, countSectors: 2 }] });
    const regions = Array.from({ length: 40 }, (_, index) => ({
      device: dev, sector: index, count: 1,
    }));
    const result = await dmIo({ op: 'write', mem: { type: 'vm', data: pattern(512) }, client },
      regions);
    assert.equal(result.errorBits, (1n << 31n) | (1n << 32n));
  });

  test('65 regions → DMIO_ERR_TOO_MANY_REGIONS', async () => {
    const { dev } = faultyRam(1024);
    const regions = Array.from({ length: 65 }, (_, index) => ({
      device: dev, sector: index, count: 1,
    }));
    await rejectsEverywhere('DMIO_ERR_TOO_MANY_REGIONS',
      () => ({ op: 'write', mem: { type: 'vm', data: pattern(512) }, client }),
      () => regions, [dev]);
  });

  test('a read of two regions → DMIO_ERR_MULTI_REGION_READ, no I/O, no callback', async () => {
    const { dev: a } = faultyRam(64);
    const { dev: b } = faultyRam(64);
    await rejectsEverywhere('DMIO_ERR_MULTI_REGION_READ',
      () => ({ op: 'read', mem: { type: 'vm', data: new Uint8Array(4096) }, client }),
      () => [{ device: a, sector: 0, count: 8 }, { device: b, sector: 0, count: 8 }], [a, b]);
  });

  test('a read of two regions is refused even when both counts are 0', async () => {
    const { dev: a } = faultyRam(64);
    await rejectsEverywhere('DMIO_ERR_MULTI_REGION_READ',
      () => ({ op: 'read', client }),
      () => [{ device: a, sector: 0, count: 0 }, { device: a, sector: 0, count: 0 }], [a]);
  });

  test('multi-region discard and write-zeroes are allowed', async () => {
    const { dev: a } = faultyRam(64);
    const { dev: b } = faultyRam(64);
    for (const op of ['discard', 'write-zeroes'] as const) {
      const result = await dmIo({ op, client }, [{ device: a, sector: 0, count: 8 },
        { device: b, sector: 8, count: 8 }]);
      assert.equal(result.errorBits, 0n);
    }
    assert.equal(a.trace.length, 2);
    assert.equal(b.trace.length, 2);
  });
});

describe('wrong types and values', () => {
  const badIntegers: Array<[unknown, string]> = [
    [-1, 'DMIO_ERR_OUT_OF_RANGE'], [1.5, 'DMIO_ERR_OUT_OF_RANGE'],
    [2 ** 53, 'DMIO_ERR_OUT_OF_RANGE'], [Number.NaN, 'DMIO_ERR_OUT_OF_RANGE'],
    [Number.POSITIVE_INFINITY, 'DMIO_ERR_OUT_OF_RANGE'], ['1', 'DMIO_ERR_INVALID_ARG_TYPE'],
    [1n, 'DMIO_ERR_INVALID_ARG_TYPE'], [null, 'DMIO_ERR_INVALID_ARG_TYPE'],
    [undefined, 'DMIO_ERR_INVALID_ARG_TYPE'],
  ];
  for (const field of ['sector', 'count'] as const) {
    for (const [value, code] of badIntegers) {
      test(`region.${field} = ${String(value)} → ${code}`, async () => {
        const { dev } = faultyRam(64);
        const { dev: other } = faultyRam(64);
        await rejectsEverywhere(code,
          () => ({ op: 'write', mem: { type: 'vm', data: new Uint8Array(4096) }, client }),
          () => [{ device: other, sector: 0, count: 1 },
            { device: dev, sector: 0, count: 1, [field]: value }], [dev, other]);
      });
    }
  }

  test('a region whose end is past a safe byte offset → DMIO_ERR_OUT_OF_RANGE', async () => {
    const { dev } = faultyRam(64);
    await rejectsEverywhere('DMIO_ERR_OUT_OF_RANGE', () => ({ op: 'discard', client }),
      () => [{ device: dev, sector: 2 ** 44, count: 2 ** 44 }], [dev]);
  });

  const requests: Array<[string, (dev: BlockDevice) => unknown, string]> = [
    ['request null', () => null, 'DMIO_ERR_INVALID_ARG_TYPE'],
    ['request a string', () => 'write', 'DMIO_ERR_INVALID_ARG_TYPE'],
    ['op unknown', () => ({ op: 'trim', client }), 'DMIO_ERR_OUT_OF_RANGE'],
    ['op a number', () => ({ op: 1, client }), 'DMIO_ERR_INVALID_ARG_TYPE'],
    ['client missing', () => ({ op: 'discard' }), 'DMIO_ERR_INVALID_ARG_TYPE'],
    ['client a plain object', () => ({ op: 'discard', client: { inflightMax: 1 } }),
      'DMIO_ERR_INVALID_ARG_TYPE'],
    ['flags not an object', () => ({ op: 'discard', client, flags: 1 }),
      'DMIO_ERR_INVALID_ARG_TYPE'],
    ['flags.fua a string', () => ({ op: 'discard', client, flags: { fua: 'yes' } }),
      'DMIO_ERR_INVALID_ARG_TYPE'],
    ['flags.preflush 1', () => ({ op: 'discard', client, flags: { preflush: 1 } }),
      'DMIO_ERR_INVALID_ARG_TYPE'],
    ['ioprio 65536', () => ({ op: 'discard', client, ioprio: 65536 }), 'DMIO_ERR_OUT_OF_RANGE'],
    ['ioprio -1', () => ({ op: 'discard', client, ioprio: -1 }), 'DMIO_ERR_OUT_OF_RANGE'],
    ['ioprio 1.5', () => ({ op: 'discard', client, ioprio: 1.5 }), 'DMIO_ERR_OUT_OF_RANGE'],
    ['ioprio class 4', () => ({ op: 'discard', client, ioprio: 4 << 13 }), 'DMIO_ERR_OUT_OF_RANGE'],
    ['ioprio BE level 8', () => ({ op: 'discard', client, ioprio: (2 << 13) | 8 }),
      'DMIO_ERR_OUT_OF_RANGE'],
    ['ioprio NONE with a level', () => ({ op: 'discard', client, ioprio: 5 }),
      'DMIO_ERR_OUT_OF_RANGE'],
  ];
  for (const [label, make, code] of requests) {
    test(`${label} → ${code}`, async () => {
      const { dev } = faultyRam(64);
      await rejectsEverywhere(code, () => make(dev), () => [{ device: dev, sector: 0, count: 8 }],
        [dev]);
    });
  }

  const regionLists: Array<[string, (dev: BlockDevice) => unknown, string]> = [
    ['regions not an array', (dev) => ({ device: dev, sector: 0, count: 1 }),
      'DMIO_ERR_INVALID_ARG_TYPE'],
    ['a region null', () => [null], 'DMIO_ERR_INVALID_ARG_TYPE'],
    ['a region without device', () => [{ sector: 0, count: 1 }], 'DMIO_ERR_INVALID_ARG_TYPE'],
    ['a device without submit', () => [{ device: { limits: {} }, sector: 0, count: 1 }],
      'DMIO_ERR_INVALID_ARG_TYPE'],
  ];
  for (const [label, make, code] of regionLists) {
    test(`${label} → ${code}`, async () => {
      const { dev } = faultyRam(64);
      await rejectsEverywhere(code, () => ({ op: 'discard', client }), () => make(dev), [dev]);
    });
  }

  test('notify.fn not a function → DMIO_ERR_INVALID_ARG_TYPE, nothing submitted', () => {
    const { dev } = faultyRam(64);
    for (const notify of [{ fn: 1 }, { context: 1 }, 'fn']) {
      assert.equal(thrown(() => dmIo({ op: 'discard', client, notify } as unknown as DmIoRequest,
        [{ device: dev, sector: 0, count: 8 }])).code, 'DMIO_ERR_INVALID_ARG_TYPE');
    }
    assert.equal(dev.trace.length, 0);
  });

  test('a bad later region stops the whole request: the earlier ones are not submitted',
    async () => {
      const { dev: a } = faultyRam(64);
      const { dev: b } = faultyRam(64);
      await rejectsEverywhere('DMIO_ERR_OUT_OF_RANGE', () => ({ op: 'discard', client }),
        () => [{ device: a, sector: 0, count: 8 }, { device: b, sector: -8, count: 8 }], [a, b]);
    });
});

describe('device and client state', () => {
  test('a closed device → DMIO_ERR_DEVICE_CLOSED', async () => {
    const { dev, ram } = faultyRam(64);
    await ram.close();
    await rejectsEverywhere('DMIO_ERR_DEVICE_CLOSED',
      () => ({ op: 'read', mem: { type: 'vm', data: new Uint8Array(512) }, client }),
      () => [{ device: dev, sector: 0, count: 1 }], [dev]);
  });

  test('zero: and random: refuse writes, discards and write-zeroes; reads work', async () => {
    const zero = createZeroDevice('zero', { sizeBytes: 65536 });
    const random = createRandomDevice({ sizeBytes: 65536, seed: 7 });
    for (const device of [zero, random, await openDevice('zero:64K'),
      await openDevice('random:64K,seed=7'), createRamDevice({ sizeBytes: 65536,
        readOnly: true }), await openDevice('mem:64K', { readOnly: true })]) {
      assert.equal(device.readOnly, true);
      for (const op of ['write', 'discard', 'write-zeroes'] as const) {
        assert.equal(thrown(() => dmIo({ op, mem: { type: 'vm', data: new Uint8Array(512) },
          client }, [{ device, sector: 0, count: 1 }])).code, 'DMIO_ERR_READ_ONLY', op);
      }
      const data = new Uint8Array(4096).fill(0x5a);
      const result = await dmIo({ op: 'read', mem: { type: 'vm', data }, client },
        [{ device, sector: 8, count: 8 }]);
      assert.equal(result.errorBits, 0n);
      if (device.kind === 'random') {
        const again = new Uint8Array(4096);
        dmIoBlocking({ op: 'read', mem: { type: 'vm', data: again }, client },
          [{ device, sector: 8, count: 8 }]);
        assert.deepEqual(again, data, 'random: is deterministic');
        assert.ok(data.some((byte) => byte !== 0));
      } else {
        assert.ok(data.every((byte) => byte === 0));
      }
    }
  });

  test('a read-only device still takes a pure flush (zero-count preflush)', async () => {
    const zero = createZeroDevice('zero', { sizeBytes: 65536 });
    const result = await dmIo({ op: 'write', flags: { preflush: true }, client },
      [{ device: zero, sector: 0, count: 0 }]);
    assert.equal(result.errorBits, 0n);
  });

  test('null: accepts writes and still reads zeros', async () => {
    const device = createZeroDevice('null', { sizeBytes: 65536 });
    const result = await dmIo({ op: 'write', mem: { type: 'vm', data: pattern(4096) }, client },
      [{ device, sector: 0, count: 8 }]);
    assert.equal(result.errorBits, 0n);
    const data = new Uint8Array(4096).fill(1);
    await dmIo({ op: 'read', mem: { type: 'vm', data }, client }, [{ device, sector: 0, count: 8 }]);
    assert.ok(data.every((byte) => byte === 0));
  });

  test('a destroyed client → DMIO_ERR_CLIENT_DESTROYED', async () => {
    const doomed = dmIoClientCreate({ reservedPages: 1, inflightMax: 1 });
    await dmIoClientDestroy(doomed);
    assert.equal(doomed.destroyed, true);
    const { dev } = faultyRam(64);
    await rejectsEverywhere('DMIO_ERR_CLIENT_DESTROYED',
      () => ({ op: 'write', mem: { type: 'vm', data: new Uint8Array(512) }, client: doomed }),
      () => [{ device: dev, sector: 0, count: 1 }], [dev]);
    await dmIoClientDestroy(doomed); // Idempotent.
  });

  test('client options are validated', () => {
    for (const options of [{ reservedPages: 0 }, { inflightMax: 0 }, { inflightMax: 4097 },
      { reservedPages: 65537 }, { reservedPages: 1.5 }]) {
      assert.equal(thrown(() => dmIoClientCreate(options)).code, 'DMIO_ERR_OUT_OF_RANGE');
    }
    assert.equal(thrown(() => dmIoClientDestroy({} as never)).code, 'DMIO_ERR_INVALID_ARG_TYPE');
  });
});

describe('4096-byte logical blocks', () => {
  const make = (): { ram: ReturnType<typeof createRamDevice> } => ({
    ram: createRamDevice({ sizeBytes: 65536, limits: { logicalBlockBytes: 4096 } }),
  });

  for (const [sector, count] of [[0, 1], [1, 8], [8, 9], [4, 4]] as const) {
    test(`sector ${sector}, count ${count} → DMIO_ERR_MISALIGNED`, async () => {
      const { ram } = make();
      const dev = createFaultDevice(ram);
      await rejectsEverywhere('DMIO_ERR_MISALIGNED',
        () => ({ op: 'write', mem: { type: 'vm', data: new Uint8Array(8192) }, client }),
        () => [{ device: dev, sector, count }], [dev]);
      assert.equal(ram.allocatedBytes, 0, 'nothing written');
    });
  }

  test('whole blocks round-trip', async () => {
    const { ram } = make();
    const data = pattern(8192, 4);
    assert.equal((await dmIo({ op: 'write', mem: { type: 'vm', data }, client },
      [{ device: ram, sector: 8, count: 16 }])).errorBits, 0n);
    assert.deepEqual(peek(ram, 8, 16), data);
  });
});
