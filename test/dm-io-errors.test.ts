// Operating errors and completion: per-region error bits and typed IoErrors, zero-fill of only
// the failed part of a read, regions running past the end of a device, exactly-once completion
// after the last request whatever the completion order, and the library's choice that
// callbacks are always deferred (never run inside dmIo, even when nothing is submitted).

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  dmIo, dmIoBlocking, IoError, type DmIoRegion, type DmIoResult,
} from '../src/index.js';
import { CountingDevice, faultyRam, pattern, peek, poke, smallClient, sleep } from './helpers/devices.js';
import { fillLogical, pageList, readLogical } from './helpers/memory.js';

const client = smallClient();

/** Runs a notify-form dmIo and resolves with every callback invocation seen within 20 ms. */
async function notifyCalls(
  request: Parameters<typeof dmIo>[0], regions: readonly DmIoRegion[],
): Promise<{ calls: Array<[bigint, unknown, DmIoResult]>; returnedFirst: boolean }> {
  const calls: Array<[bigint, unknown, DmIoResult]> = [];
  let returned = false;
  let returnedFirst = true;
  dmIo({ ...request, notify: { fn: (bits, context, result) => {
    if (!returned) returnedFirst = false;
    calls.push([bits, context, result]);
  }, context: 'ctx' } }, regions);
  returned = true;
  await sleep(20);
  return { calls, returnedFirst };
}

describe('error bits and typed errors', () => {
  test('one failing request of region 2 of 3 → 0b100; regions 0 and 1 written', async () => {
    const { dev: a } = faultyRam(64, {}, 'a');
    const { dev: b } = faultyRam(64, {}, 'b');
    const { dev: c } = faultyRam(64, { limits: { maxSectorsPerRequest: 4 },
      ranges: [{ sector: 13, countSectors: 1, ops: ['write'], errno: 'ENOSPC' }] }, 'c');
    const data = pattern(8 * 512, 2);
    const regions = [{ device: a, sector: 8, count: 8 }, { device: b, sector: 8, count: 8 },
      { device: c, sector: 8, count: 8 }];
    const result = await dmIo({ op: 'write', mem: { type: 'vm', data }, client }, regions);
    assert.equal(result.errorBits, 0b100n);
    assert.deepEqual(peek(a, 8, 8), data);
    assert.deepEqual(peek(b, 8, 8), data);
    assert.equal(result.errors[0], undefined);
    assert.equal(result.errors[1], undefined);
    const error = result.errors[2];
    assert.ok(error instanceof IoError);
    assert.equal(error.code, 'DMIO_ERR_IO');
    assert.equal(error.errno, 'ENOSPC');
    assert.equal(error.syscall, 'pwritev');
    assert.equal(error.device, 'c');
    assert.equal(error.sector, 12, 'the failed request started at 12');
    assert.equal(error.countSectors, 4);
    assert.equal(error.regionIndex, 2);
    assert.match(error.message, /ENOSPC/);
    // The other piece of region 2 was written; the failed one was not.
    assert.deepEqual(peek(c, 8, 4), data.subarray(0, 2048));
    assert.deepEqual(peek(c, 12, 4), new Uint8Array(2048));

    const blocking = dmIoBlocking({ op: 'write', mem: { type: 'vm', data }, client }, regions);
    assert.equal(blocking.errorBits, 0b100n);
    assert.equal((blocking.errors[2] as IoError).regionIndex, 2);

    const { calls } = await notifyCalls({ op: 'write', mem: { type: 'vm', data }, client },
      regions);
    assert.equal(calls.length, 1);
    assert.equal(calls[0]?.[0], 0b100n);
    assert.equal(calls[0]?.[1], 'ctx');
  });

  test('the same error object reused across regions carries each region index', async () => {
    const { dev } = faultyRam(64, { down: true });
    const result = await dmIo({ op: 'discard', client }, [{ device: dev, sector: 0, count: 1 },
      { device: dev, sector: 1, count: 1 }, { device: dev, sector: 2, count: 1 }]);
    assert.equal(result.errorBits, 0b111n);
    assert.deepEqual(result.errors.map((error) => (error as IoError).regionIndex), [0, 1, 2]);
    assert.deepEqual(result.errors.map((error) => (error as IoError).syscall),
      ['discard', 'discard', 'discard']);
  });

  test('I/O errors never reject the Promise', async () => {
    const { dev } = faultyRam(64, { down: true });
    const result = await dmIo({ op: 'read', mem: { type: 'vm', data: new Uint8Array(512) },
      client }, [{ device: dev, sector: 0, count: 1 }]);
    assert.equal(result.errorBits, 1n);
    assert.equal((result.errors[0] as IoError).syscall, 'preadv');
  });
});

describe('read errors zero-fill only their own part', () => {
  test('vm memory: the failed piece is zeroed, the others hold data', async () => {
    const { dev } = faultyRam(64, { limits: { maxSectorsPerRequest: 4 },
      ranges: [{ sector: 5, countSectors: 1, ops: ['read'] }] });
    const data = pattern(16 * 512, 3);
    poke(dev, 0, data);
    const buffer = new Uint8Array(16 * 512 + 512).fill(0xff);
    const result = await dmIo({ op: 'read', mem: { type: 'vm', data: buffer }, client },
      [{ device: dev, sector: 0, count: 16 }]);
    assert.equal(result.errorBits, 1n);
    assert.deepEqual(buffer.subarray(0, 2048), data.subarray(0, 2048));
    assert.deepEqual(buffer.subarray(2048, 4096), new Uint8Array(2048));
    assert.deepEqual(buffer.subarray(4096, 8192), data.subarray(4096));
    assert.ok(buffer.subarray(8192).every((byte) => byte === 0xff), 'past the region untouched');
  });

  test('page-list memory across pages: only the failed request\'s segments are zeroed',
    async () => {
      const { dev } = faultyRam(64, { limits: { maxSectorsPerRequest: 6 },
        ranges: [{ sector: 7, countSectors: 1, ops: ['read'] }] });
      const data = pattern(18 * 512, 8);
      poke(dev, 0, data);
      const mem = { type: 'page-list' as const, list: pageList(4, { fill: 0xff }), offset: 1024 };
      const result = await dmIo({ op: 'read', mem, client },
        [{ device: dev, sector: 0, count: 18 }]);
      assert.equal(result.errorBits, 1n);
      const seen = readLogical(mem, 18 * 512);
      const expected = data.slice();
      expected.fill(0, 6 * 512, 12 * 512);
      assert.deepEqual(seen, expected);
      assert.ok(mem.list.page.subarray(0, 1024).every((byte) => byte === 0xff));
    });

  test('a failed blocking read is zero-filled the same way', () => {
    const { dev } = faultyRam(64, { limits: { maxSectorsPerRequest: 2 },
      ranges: [{ sector: 2, countSectors: 1 }] });
    poke(dev, 0, pattern(2048, 1));
    const buffer = new Uint8Array(2048).fill(0xff);
    const result = dmIoBlocking({ op: 'read', mem: { type: 'vm', data: buffer }, client },
      [{ device: dev, sector: 0, count: 4 }]);
    assert.equal(result.errorBits, 1n);
    const expected = pattern(2048, 1);
    expected.fill(0, 1024, 2048);
    assert.deepEqual(buffer, expected);
  });
});

describe('regions past the end of a device', () => {
  test('write: pieces inside succeed, pieces beyond fail, the bit is set', async () => {
    const { dev } = faultyRam(32, { limits: { maxSectorsPerRequest: 4 } });
    const { dev: other } = faultyRam(64);
    const data = pattern(16 * 512, 6);
    const result = await dmIo({ op: 'write', mem: { type: 'vm', data }, client },
      [{ device: other, sector: 0, count: 16 }, { device: dev, sector: 24, count: 16 }]);
    assert.equal(result.errorBits, 0b10n);
    assert.deepEqual(peek(dev, 24, 8), data.subarray(0, 4096));
    assert.deepEqual(peek(other, 0, 16), data);
    const error = result.errors[1] as IoError;
    assert.equal(error.errno, 'EIO');
    assert.ok(error.sector >= 32);
    assert.deepEqual(dev.trace.map((entry) => entry.sector), [24, 28, 32, 36]);
  });

  test('a request that crosses the end fails whole: nothing is truncated', async () => {
    const { dev } = faultyRam(32);
    poke(dev, 24, pattern(4096, 1));
    const result = await dmIo({ op: 'write', mem: { type: 'vm', data: pattern(8192, 2) },
      client }, [{ device: dev, sector: 24, count: 16 }]);
    assert.equal(result.errorBits, 1n);
    assert.deepEqual(peek(dev, 24, 8), pattern(4096, 1), 'nothing written');
  });

  test('read: inside data, beyond zeros', async () => {
    const { dev } = faultyRam(32, { limits: { maxSectorsPerRequest: 4 } });
    poke(dev, 0, pattern(32 * 512, 3));
    const buffer = new Uint8Array(8192).fill(0xff);
    const result = await dmIo({ op: 'read', mem: { type: 'vm', data: buffer }, client },
      [{ device: dev, sector: 28, count: 16 }]);
    assert.equal(result.errorBits, 1n);
    assert.deepEqual(buffer.subarray(0, 2048), pattern(32 * 512, 3).subarray(28 * 512));
    assert.ok(buffer.subarray(2048).every((byte) => byte === 0));
  });

  test('discard: pieces inside clear, pieces beyond fail', async () => {
    const { dev } = faultyRam(32, { limits: { maxDiscardSectors: 4 } });
    poke(dev, 0, pattern(32 * 512, 3));
    const result = await dmIo({ op: 'discard', client },
      [{ device: dev, sector: 28, count: 8 }]);
    assert.equal(result.errorBits, 1n);
    assert.deepEqual(peek(dev, 28, 4), new Uint8Array(2048));
    assert.deepEqual(peek(dev, 0, 28), pattern(32 * 512, 3).subarray(0, 28 * 512));
  });
});

describe('completion', () => {
  const orders: Array<[string, (sector: number) => number]> = [
    ['first piece slowest', (sector) => (sector === 0 ? 15 : 0)],
    ['last piece slowest', (sector) => (sector === 12 ? 15 : 0)],
    ['reverse order', (sector) => 16 - sector],
    ['all at once', () => 0],
  ];
  for (const [label, delayOf] of orders) {
    test(`the callback runs once, after the last request (${label})`, async () => {
      const { dev: faulty } = faultyRam(64, {
        limits: { maxSectorsPerRequest: 4 },
        delayMs: (request) => delayOf(request.sector),
        ranges: [{ sector: 4, countSectors: 1 }],
      });
      const counting = new CountingDevice(faulty, 'counting');
      const { dev: other } = faultyRam(64, { delayMs: 5 });
      const seen: number[] = [];
      const result = await new Promise<bigint>((resolve) => {
        dmIo({ op: 'write', mem: { type: 'vm', data: pattern(8192) }, client,
          notify: { fn: (bits) => {
            seen.push(counting.inflight);
            resolve(bits);
          } } }, [{ device: counting, sector: 0, count: 16 },
          { device: other, sector: 0, count: 16 }]);
      });
      await sleep(25);
      assert.equal(result, 0b01n);
      assert.deepEqual(seen, [0], 'exactly once, with nothing in flight');
      assert.equal(counting.submitted, 4);
      assert.equal(client.inflight, 0);
    });
  }

  test('the Promise settles only after every request completed', async () => {
    const { dev } = faultyRam(64, { delayMs: (request) => (request.sector === 0 ? 20 : 1),
      limits: { maxSectorsPerRequest: 2 } });
    const counting = new CountingDevice(dev, 'counting');
    await dmIo({ op: 'write', mem: { type: 'vm', data: pattern(4096) }, client },
      [{ device: counting, sector: 0, count: 8 }]);
    assert.equal(counting.inflight, 0);
    assert.equal(counting.submitted, 4);
  });

  const immediate: Array<[string, () => [Parameters<typeof dmIo>[0], DmIoRegion[], bigint]]> = [
    ['0 regions', () => [{ op: 'write', client }, [], 0n]],
    ['0 regions, read', () => [{ op: 'read', client }, [], 0n]],
    ['only count-0 regions', () => [{ op: 'write', client },
      [{ device: faultyRam(8).dev, sector: 0, count: 0 },
        { device: faultyRam(8).dev, sector: 0, count: 0 }], 0n]],
    ['only unsupported discards', () => [{ op: 'discard', client },
      [{ device: faultyRam(8, { limits: { maxDiscardSectors: 0 } }).dev, sector: 0, count: 8 }],
      1n]],
  ];
  for (const [label, make] of immediate) {
    test(`${label}: immediate result, but the callback never runs inside dmIo`, async () => {
      const [request, regions, bits] = make();
      const { calls, returnedFirst } = await notifyCalls(request, regions);
      assert.equal(calls.length, 1, 'called exactly once');
      assert.equal(returnedFirst, true, 'dmIo returned before the callback ran');
      assert.equal(calls[0]?.[0], bits);
      assert.equal(calls[0]?.[1], 'ctx');
      const result = await dmIo(request, regions);
      assert.equal(result.errorBits, bits);
      assert.equal(dmIoBlocking(request, regions).errorBits, bits);
    });
  }

  test('the callback receives the full result as its third argument', async () => {
    const { dev } = faultyRam(8, { down: true });
    const { calls } = await notifyCalls({ op: 'write-zeroes', client },
      [{ device: dev, sector: 0, count: 8 }]);
    const result = calls[0]?.[2];
    assert.ok(result !== undefined);
    assert.equal(result.errorBits, 1n);
    assert.ok(result.errors[0] instanceof IoError);
  });

  test('the caller may reuse its region array as soon as dmIo returns', async () => {
    const { dev: a } = faultyRam(64, { delayMs: 2 });
    const { dev: b } = faultyRam(64);
    const data = pattern(4096, 5);
    const regions: DmIoRegion[] = [{ device: a, sector: 0, count: 8 }];
    const pending = dmIo({ op: 'write', mem: { type: 'vm', data }, client }, regions);
    regions[0] = { device: b, sector: 8, count: 8 };
    regions.push({ device: b, sector: 0, count: 8 });
    assert.equal((await pending).errorBits, 0n);
    assert.deepEqual(peek(a, 0, 8), data);
    assert.equal(b.trace.length, 0);
  });

  test('the buffer of a write must only stay valid until completion: bytes are captured at ' +
    'submission for in-memory devices, but a queued request reads the buffer later', async () => {
    // One in-flight slot: the second piece waits in the client queue. Changing the buffer
    // before completion changes what the queued piece writes, as in the kernel (the buffer
    // belongs to the I/O until the callback).
    const tight = smallClient(1, 1);
    const { dev } = faultyRam(64, { limits: { maxSectorsPerRequest: 4 }, delayMs: 2 });
    const data = new Uint8Array(4096).fill(1);
    const pending = dmIo({ op: 'write', mem: { type: 'vm', data }, client: tight },
      [{ device: dev, sector: 0, count: 8 }]);
    data.fill(2);
    await pending;
    assert.ok(peek(dev, 0, 4).every((byte) => byte === 1));
    assert.ok(peek(dev, 4, 4).every((byte) => byte === 2));
    fillLogical({ type: 'vm', data }, new Uint8Array(4096));
  });
});
