// The fast path must be invisible: every request it takes yields the same device requests (one
// per region, in region order), result, zero-fill and deferral as the general path, and
// everything it declines (including every invalid argument, in any region) is left to the
// general path's validation, with nothing submitted.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { BlockDevice } from '../devices/block-device.js';
import { createFaultDevice } from '../devices/fault-device.js';
import { MEMORY_DEVICE_LIMITS } from '../devices/memory-backed-device.js';
import { createRamDevice } from '../devices/ram-device.js';
import { allocAligned } from '../memory/aligned.js';
import { dmIoClientCreate, dmIoClientDestroy } from './client.js';
import { dmIo, dmIoBlocking } from './dm-io.js';
import { planFast } from './fast-path.js';

function setup(limits = {}) {
  const ram = createRamDevice({ sizeBytes: 1 << 20, limits });
  const device = createFaultDevice(ram);
  return { ram, device, client: dmIoClientCreate() };
}

/** A device that breaks its contract: `submit` throws (the tests check nothing leaks). */
function throwingDevice(): BlockDevice {
  return {
    name: 'thrower', kind: 'ram', sizeSectors: 64, readOnly: false, closed: false,
    canBlock: false, limits: MEMORY_DEVICE_LIMITS,
    submit: () => {
      throw new Error('device invariant broken');
    },
    close: () => Promise.resolve(),
  };
}

/** Wraps `device` so that each request it gets is logged as `index:sector+count@offset`. */
function loggingDevice(device: BlockDevice, index: number, log: string[]): BlockDevice {
  return {
    name: device.name, kind: device.kind, sizeSectors: device.sizeSectors,
    readOnly: device.readOnly, closed: false, canBlock: false, limits: device.limits,
    submit: (request, done) => {
      const offsetBytes = request.segments[0]?.byteOffset ?? -1;
      log.push(`${index}:${request.sector}+${request.countSectors}@${offsetBytes}`);
      device.submit(request, done);
    },
    close: () => device.close(),
  };
}

describe('planFast eligibility', () => {
  test('takes one-page kmem and vm reads and writes, with shared flags and default ioprio', () => {
    const { device, client } = setup();
    const data = new Uint8Array(8192);
    const kmem = planFast({ op: 'read', client, mem: { type: 'kmem', data, offset: 1024 } },
      [{ device, sector: 8, count: 8 }], true);
    assert.ok(kmem !== null);
    assert.equal(kmem.requests[0]?.segments.length, 1);
    assert.equal(kmem.requests[0]?.segments[0]?.byteOffset, 1024);
    assert.equal(kmem.requests[0]?.segments[0]?.length, 4096);
    assert.deepEqual(kmem.requests[0]?.flags, { sync: true, preflush: false, fua: false });
    assert.equal(kmem.requests[0]?.ioprio, (2 << 13) | 4);
    const exact = new Uint8Array(512);
    const vm = planFast({ op: 'write', client, mem: { type: 'vm', data: exact }, ioprio: 0x6007,
      flags: { fua: true } }, [{ device, sector: 3, count: 1 }], false);
    assert.ok(vm !== null);
    assert.equal(vm.requests[0]?.segments[0], exact, 'an exact-size buffer is passed as it is');
    assert.deepEqual(vm.requests[0]?.flags, { sync: false, preflush: false, fua: true });
    assert.equal(vm.requests[0]?.ioprio, 0x6007);
  });

  test('declines what the general path must handle', () => {
    const { device, client } = setup();
    const big = setup({ logicalBlockBytes: 4096 });
    const direct = setup({ memoryAlignmentBytes: 4096 });
    const data = new Uint8Array(8192);
    const region = [{ device, sector: 0, count: 8 }];
    const cases: Array<[string, unknown, unknown]> = [
      ['a two-region read', { op: 'read', client, mem: { type: 'vm', data } },
        [...region, ...region]],
      ['65 regions', { op: 'write', client, mem: { type: 'vm', data } },
        Array.from({ length: 65 }, () => region[0])],
      ['no regions', { op: 'write', client, mem: { type: 'vm', data } }, []],
      ['a count-0 region among others', { op: 'write', client, mem: { type: 'vm', data } },
        [...region, { device, sector: 0, count: 0 }]],
      ['a second region the buffer is too short for', { op: 'write', client,
        mem: { type: 'vm', data } }, [...region, { device, sector: 0, count: 32 }]],
      ['a second region misaligned on 4K', { op: 'write', client, mem: { type: 'vm', data } },
        [...region, { device: big.device, sector: 1, count: 8 }]],
      ['a second region on O_DIRECT with unaligned memory', { op: 'write', client,
        mem: { type: 'vm', data } }, [...region, { device: direct.device, sector: 0, count: 8 }]],
      ['a second region read-only', { op: 'write', client, mem: { type: 'vm', data } },
        [...region, { device: createRamDevice({ sizeBytes: 4096, readOnly: true }), sector: 0,
          count: 8 }]],
      ['more than the device takes at once', { op: 'read', client,
        mem: { type: 'vm', data: new Uint8Array(8200 * 512) } }, [{ device, sector: 0, count: 8200 }]],
      ['count 0', { op: 'read', client, mem: { type: 'vm', data } }, [{ device, sector: 0, count: 0 }]],
      ['discard', { op: 'discard', client }, region],
      ['page list', { op: 'read', client, mem: { type: 'page-list', list: null, offset: 0 } }, region],
      ['bvec', { op: 'read', client, mem: { type: 'bvec', bvecs: [] } }, region],
      ['short buffer', { op: 'read', client, mem: { type: 'vm', data: new Uint8Array(512) } }, region],
      ['bad flag', { op: 'read', client, mem: { type: 'vm', data }, flags: { fua: 1 } }, region],
      ['flags as an array', { op: 'read', client, mem: { type: 'vm', data }, flags: [] }, region],
      ['memory as an array', { op: 'read', client,
        mem: Object.assign([], { type: 'kmem', data }) }, region],
      ['region as an array', { op: 'read', client, mem: { type: 'vm', data } },
        [Object.assign([], { device, sector: 0, count: 8 })]],
      ['request as an array', Object.assign([], { op: 'read', client, mem: { type: 'vm', data } }),
        region],
      ['bad ioprio', { op: 'read', client, mem: { type: 'vm', data }, ioprio: -1 }, region],
      ['fractional sector', { op: 'read', client, mem: { type: 'vm', data } },
        [{ device, sector: 0.5, count: 8 }]],
      ['misaligned on 4K', { op: 'read', client: big.client, mem: { type: 'vm', data } },
        [{ device: big.device, sector: 1, count: 8 }]],
      ['unaligned memory, O_DIRECT', { op: 'read', client, mem: { type: 'vm', data } },
        [{ device: direct.device, sector: 0, count: 8 }]],
      ['read-only write', { op: 'write', client, mem: { type: 'vm', data } },
        [{ device: createRamDevice({ sizeBytes: 4096, readOnly: true }), sector: 0, count: 8 }]],
    ];
    for (const [name, request, regions] of cases) {
      assert.equal(planFast(request, regions, true), null, name);
    }
    const aligned = allocAligned(4096);
    assert.ok(planFast({ op: 'read', client, mem: { type: 'vm', data: aligned } },
      [{ device: direct.device, sector: 0, count: 8 }], true) !== null, 'aligned O_DIRECT memory');
  });
});

describe('multi-region writes', () => {
  test('one request per region, in region order, each from the start of the buffer', () => {
    const { device, client } = setup();
    const other = setup().device;
    const data = new Uint8Array(8192);
    const fast = planFast({ op: 'write', client, mem: { type: 'kmem', data, offset: 512 } },
      [{ device, sector: 16, count: 8 }, { device: other, sector: 0, count: 15 },
        { device, sector: 40, count: 1 }], false);
    assert.ok(fast !== null);
    assert.deepEqual(fast.devices, [device, other, device]);
    assert.deepEqual(fast.requests.map((request) => [request.sector, request.countSectors]),
      [[16, 8], [0, 15], [40, 1]]);
    for (const request of fast.requests) {
      assert.equal(request.segments.length, 1);
      assert.equal(request.segments[0]?.byteOffset, 512, 'every region starts at the offset');
      assert.equal(request.segments[0]?.length, request.countSectors * 512);
    }
  });

  test('submits the same device requests as the general path, and reports only the bad region',
    async () => {
      const devices = [setup(), setup(), setup()].map((entry) => entry.device);
      const { client } = setup();
      // One log over all devices, so the order across devices is compared too.
      const log: string[] = [];
      const logged = devices.map((device, index) => loggingDevice(device, index, log));
      const regions = logged.map((device, index) => ({ device, sector: 8 * index, count: 16 }));
      const data = new Uint8Array(8192).fill(5);
      // One bio vector takes the general path; the same bytes as kmem take the fast one.
      const bvecMem = { type: 'bvec', bvecs: [{ page: data, len: 8192, offset: 0 }] } as const;
      assert.equal(planFast({ op: 'write', client, mem: bvecMem }, regions, true), null);
      assert.ok(planFast({ op: 'write', client, mem: { type: 'kmem', data } }, regions, true) !==
        null);
      const general = await dmIo({ op: 'write', client, mem: bvecMem }, regions);
      const generalTraces = devices.map((device) => device.trace.splice(0));
      const generalLog = log.splice(0);
      const fast = await dmIo({ op: 'write', client, mem: { type: 'kmem', data } }, regions);
      assert.deepEqual(fast, general);
      assert.deepEqual(devices.map((device) => device.trace.splice(0)), generalTraces);
      assert.deepEqual(log.splice(0), generalLog);
      assert.deepEqual(generalLog, ['0:0+16@0', '1:8+16@0', '2:16+16@0']);
      (devices[1] as ReturnType<typeof createFaultDevice>).setFaults(
        { ranges: [{ sector: 8, countSectors: 1, ops: ['write'] }] });
      const failed = await dmIo({ op: 'write', client, mem: { type: 'kmem', data } }, regions);
      const failedGeneral = await dmIo({ op: 'write', client, mem: bvecMem }, regions);
      assert.deepEqual(failed, failedGeneral, 'the same result, errors included, both ways');
      assert.equal(failed.errorBits, 2n);
      assert.deepEqual(failed.errors.map((error) => error?.code), [undefined, 'DMIO_ERR_IO',
        undefined]);
      assert.equal((failed.errors[1] as { regionIndex?: number }).regionIndex, 1);
      assert.ok(data.every((byte) => byte === 5), 'a failed write leaves the buffer alone');
      const back = new Uint8Array(8192);
      for (const index of [0, 2]) {
        const read = await dmIo({ op: 'read', client, mem: { type: 'vm', data: back } },
          [{ device: devices[index] as BlockDevice, sector: 8 * index, count: 16 }]);
        assert.equal(read.errorBits, 0n);
        assert.ok(back.every((byte) => byte === 5), `region ${index} holds the data`);
      }
    });

  test('a bad later region throws its typed error with nothing submitted to the earlier ones',
    () => {
      const { device, client } = setup();
      const data = new Uint8Array(4096);
      const readOnly = createRamDevice({ sizeBytes: 4096, readOnly: true });
      assert.throws(() => dmIo({ op: 'write', client, mem: { type: 'vm', data } },
        [{ device, sector: 0, count: 8 }, { device: readOnly, sector: 0, count: 8 }]),
      { code: 'DMIO_ERR_READ_ONLY' });
      assert.throws(() => dmIo({ op: 'write', client, mem: { type: 'vm', data } },
        [{ device, sector: 0, count: 8 }, { device, sector: 0, count: 16 }]),
      { code: 'DMIO_ERR_BUFFER_TOO_SHORT' });
      assert.equal(device.trace.length, 0);
      assert.equal(client.inflight, 0);
    });

  test('a device whose submit throws midway: earlier regions complete, no callback, no leak',
    async () => {
      const { ram, client } = setup();
      const thrower = throwingDevice();
      const data = new Uint8Array(4096).fill(7);
      assert.throws(() => dmIo({ op: 'write', client, mem: { type: 'vm', data },
        notify: { fn: () => assert.fail('no completion') } },
      [{ device: ram, sector: 0, count: 8 }, { device: thrower, sector: 0, count: 8 }]),
      /invariant broken/);
      assert.equal(client.inflight, 1, 'region 0 went out before region 1 threw');
      await dmIoClientDestroy(client);
      assert.equal(client.inflight, 0);
      const back = new Uint8Array(4096);
      assert.equal((await dmIo({ op: 'read', client: dmIoClientCreate(),
        mem: { type: 'vm', data: back } }, [{ device: ram, sector: 0, count: 8 }])).errorBits, 0n);
      assert.deepEqual(back, data, 'region 0 was written');
    });

  test('the blocking form runs every region on the calling thread', async () => {
    const { client } = setup();
    const rams = [createRamDevice({ sizeBytes: 1 << 16 }), createRamDevice({ sizeBytes: 1 << 16 })];
    const data = new Uint8Array(4096).fill(3);
    const regions = rams.map((device) => ({ device, sector: 8, count: 8 }));
    assert.ok(planFast({ op: 'write', client, mem: { type: 'vm', data } }, regions, true) !== null);
    const result = dmIoBlocking({ op: 'write', client, mem: { type: 'vm', data } }, regions);
    assert.deepEqual(result, { errorBits: 0n, errors: [undefined, undefined] });
    for (const device of rams) {
      const back = new Uint8Array(4096);
      assert.equal(dmIoBlocking({ op: 'read', client, mem: { type: 'vm', data: back } },
        [{ device, sector: 8, count: 8 }]).errorBits, 0n);
      assert.deepEqual(back, data);
    }
    await dmIoClientDestroy(client);
  });
});

describe('fast requests behave as general ones', () => {
  test('a failed fast read zero-fills its bytes and reports region 0', async () => {
    const { ram, device, client } = setup();
    const data = new Uint8Array(4096).fill(9);
    assert.equal((await dmIo({ op: 'write', client, mem: { type: 'vm', data } },
      [{ device: ram, sector: 0, count: 8 }])).errorBits, 0n);
    device.setFaults({ ranges: [{ sector: 0, countSectors: 1, ops: ['read'] }] });
    const back = new Uint8Array(4096).fill(0xff);
    const failed = await dmIo({ op: 'read', client, mem: { type: 'kmem', data: back } },
      [{ device, sector: 0, count: 8 }]);
    assert.equal(failed.errorBits, 1n);
    assert.equal(failed.errors[0]?.code, 'DMIO_ERR_IO');
    assert.equal((failed.errors[0] as { regionIndex?: number }).regionIndex, 0);
    assert.ok(back.every((byte) => byte === 0), 'zero-filled, no stale bytes');
    const ok = await dmIo({ op: 'read', client, mem: { type: 'kmem', data: back } },
      [{ device, sector: 8, count: 8 }]);
    assert.deepEqual(ok, { errorBits: 0n, errors: [undefined] });
    assert.ok(!Object.isFrozen(ok) && !Object.isFrozen(ok.errors), 'a fresh result, as the general path gives');
    assert.equal(device.trace.length, 2);
    assert.deepEqual(device.trace.map((entry) => entry.flags.sync), [true, true]);
  });

  test('the notify callback never runs before dmIo returns, even on a synchronous device', () => {
    const { client } = setup();
    const calls: string[] = [];
    // A device that breaks the contract by completing inside submit.
    const eager: BlockDevice = {
      name: 'eager', kind: 'ram', sizeSectors: 8, readOnly: false, closed: false,
      canBlock: false, limits: MEMORY_DEVICE_LIMITS,
      submit: (_request, done) => done(null),
      close: () => Promise.resolve(),
    };
    dmIo({ op: 'read', client, mem: { type: 'vm', data: new Uint8Array(4096) },
      notify: { fn: () => calls.push('callback') } }, [{ device: eager, sector: 0, count: 8 }]);
    calls.push('returned');
    const twoRegions = [{ device: eager, sector: 0, count: 8 }, { device: eager, sector: 0,
      count: 8 }];
    dmIo({ op: 'write', client, mem: { type: 'vm', data: new Uint8Array(4096) },
      notify: { fn: () => calls.push('callback 2') } }, twoRegions);
    calls.push('returned 2');
    return new Promise<void>((resolve) => setImmediate(() => {
      assert.deepEqual(calls, ['returned', 'returned 2', 'callback', 'callback 2']);
      resolve();
    }));
  });
});

describe('client accounting when a device misbehaves', () => {
  test('a device whose submit throws leaves nothing in flight; destroy still settles', async () => {
    const client = dmIoClientCreate();
    const thrower = throwingDevice();
    // vm memory takes the fast path (one region or two); one bio vector the general one.
    const data = new Uint8Array(4096);
    const one = [{ device: thrower, sector: 0, count: 8 }];
    const two = [...one, { device: thrower, sector: 8, count: 8 }];
    const memories = [{ type: 'vm', data } as const,
      { type: 'bvec', bvecs: [{ page: data, len: 4096, offset: 0 }] } as const];
    for (const mem of memories) {
      for (const regions of [one, two]) {
        await assert.rejects(dmIo({ op: 'write', client, mem }, regions),
          /invariant broken/, 'the Promise form rejects');
        assert.equal(client.inflight, 0);
        assert.throws(() => dmIo({ op: 'write', client, mem,
          notify: { fn: () => assert.fail('no completion') } }, regions), /invariant broken/,
        'the notify form throws');
        assert.equal(client.inflight, 0);
      }
    }
    await dmIoClientDestroy(client);
  });
});
