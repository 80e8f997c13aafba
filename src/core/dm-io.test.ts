// The one path's cheap case must be invisible: a request whose regions each come to one device
// request (one contiguous buffer) yields the same device requests (one per region, in region
// order, one segment, shared flags and ioprio), result, zero-fill and deferral as memory the
// region loop must walk piece by piece; every invalid argument in any region throws its typed
// error with nothing submitted; a device whose submit throws leaks nothing.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { BlockDevice, DeviceRequest } from '../devices/block-device.js';
import { createFaultDevice } from '../devices/fault-device.js';
import { MEMORY_DEVICE_LIMITS } from '../devices/memory-backed-device.js';
import { createRamDevice } from '../devices/ram-device.js';
import { allocAligned } from '../memory/aligned.js';
import { dmIoClientCreate, dmIoClientDestroy } from './client.js';
import { dmIo, dmIoBlocking } from './dm-io.js';
import type { DmIoRegion, DmIoRequest } from './request.js';

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

/** A device that records every request it is given, then passes it on. */
function recordingDevice(device: BlockDevice, seen: DeviceRequest[]): BlockDevice {
  return {
    name: device.name, kind: device.kind, sizeSectors: device.sizeSectors,
    readOnly: device.readOnly, closed: false, canBlock: false, limits: device.limits,
    submit: (request, done) => {
      seen.push(request);
      device.submit(request, done);
    },
    close: () => device.close(),
  };
}

describe('one contiguous buffer, one request per region', () => {
  test('kmem and vm: one segment, the shared flags and the default or given ioprio', async () => {
    const { device, client } = setup();
    const seen: DeviceRequest[] = [];
    const recorder = recordingDevice(device, seen);
    const data = new Uint8Array(8192);
    await dmIo({ op: 'read', client, mem: { type: 'kmem', data, offset: 1024 } },
      [{ device: recorder, sector: 8, count: 8 }]);
    assert.equal(seen.length, 1);
    assert.equal(seen[0]?.segments.length, 1);
    assert.equal(seen[0]?.segments[0]?.byteOffset, 1024);
    assert.equal(seen[0]?.segments[0]?.length, 4096);
    assert.deepEqual(seen[0]?.flags, { sync: true, preflush: false, fua: false });
    assert.equal(seen[0]?.ioprio, (2 << 13) | 4);
    const exact = new Uint8Array(512);
    await new Promise<void>((resolve) => {
      dmIo({ op: 'write', client, mem: { type: 'vm', data: exact }, ioprio: 0x6007,
        flags: { fua: true }, notify: { fn: () => resolve() } },
      [{ device: recorder, sector: 3, count: 1 }]);
    });
    assert.equal(seen[1]?.segments[0], exact, 'an exact-size buffer is passed as it is');
    assert.deepEqual(seen[1]?.flags, { sync: false, preflush: false, fua: true });
    assert.equal(seen[1]?.ioprio, 0x6007);
    await dmIoClientDestroy(client);
  });

  test('every invalid argument, in any region, throws its code with nothing submitted', () => {
    const { device, client } = setup();
    const big = setup({ logicalBlockBytes: 4096 });
    const data = new Uint8Array(8192);
    const region = [{ device, sector: 0, count: 8 }];
    const readOnly = createRamDevice({ sizeBytes: 4096, readOnly: true });
    const cases: Array<[string, unknown, unknown, string]> = [
      ['a two-region read', { op: 'read', client, mem: { type: 'vm', data } },
        [...region, ...region], 'DMIO_ERR_MULTI_REGION_READ'],
      ['65 regions', { op: 'write', client, mem: { type: 'vm', data } },
        Array.from({ length: 65 }, () => region[0]), 'DMIO_ERR_TOO_MANY_REGIONS'],
      ['a second region the buffer is too short for', { op: 'write', client,
        mem: { type: 'vm', data } }, [...region, { device, sector: 0, count: 32 }],
      'DMIO_ERR_BUFFER_TOO_SHORT'],
      ['a second region misaligned on 4K', { op: 'write', client, mem: { type: 'vm', data } },
        [...region, { device: big.device, sector: 1, count: 8 }], 'DMIO_ERR_MISALIGNED'],
      ['a second region read-only', { op: 'write', client, mem: { type: 'vm', data } },
        [...region, { device: readOnly, sector: 0, count: 8 }], 'DMIO_ERR_READ_ONLY'],
      ['page list', { op: 'read', client, mem: { type: 'page-list', list: null, offset: 0 } },
        region, 'DMIO_ERR_BUFFER_TOO_SHORT'],
      ['bvec', { op: 'read', client, mem: { type: 'bvec', bvecs: [] } }, region,
        'DMIO_ERR_BUFFER_TOO_SHORT'],
      ['short buffer', { op: 'read', client, mem: { type: 'vm', data: new Uint8Array(512) } },
        region, 'DMIO_ERR_BUFFER_TOO_SHORT'],
      ['bad flag', { op: 'read', client, mem: { type: 'vm', data }, flags: { fua: 1 } }, region,
        'DMIO_ERR_INVALID_ARG_TYPE'],
      ['flags as an array', { op: 'read', client, mem: { type: 'vm', data }, flags: [] }, region,
        'DMIO_ERR_INVALID_ARG_TYPE'],
      ['memory as an array', { op: 'read', client,
        mem: Object.assign([], { type: 'kmem', data }) }, region, 'DMIO_ERR_INVALID_ARG_TYPE'],
      ['region as an array', { op: 'read', client, mem: { type: 'vm', data } },
        [Object.assign([], { device, sector: 0, count: 8 })], 'DMIO_ERR_INVALID_ARG_TYPE'],
      ['request as an array', Object.assign([], { op: 'read', client, mem: { type: 'vm', data } }),
        region, 'DMIO_ERR_INVALID_ARG_TYPE'],
      ['bad ioprio', { op: 'read', client, mem: { type: 'vm', data }, ioprio: -1 }, region,
        'DMIO_ERR_OUT_OF_RANGE'],
      ['fractional sector', { op: 'read', client, mem: { type: 'vm', data } },
        [{ device, sector: 0.5, count: 8 }], 'DMIO_ERR_OUT_OF_RANGE'],
      ['misaligned on 4K', { op: 'read', client: big.client, mem: { type: 'vm', data } },
        [{ device: big.device, sector: 1, count: 8 }], 'DMIO_ERR_MISALIGNED'],
      ['read-only write', { op: 'write', client, mem: { type: 'vm', data } },
        [{ device: readOnly, sector: 0, count: 8 }], 'DMIO_ERR_READ_ONLY'],
    ];
    for (const [name, request, regions, code] of cases) {
      for (const form of ['promise', 'blocking'] as const) {
        const run = () => form === 'promise' ?
          dmIo(request as DmIoRequest, regions as DmIoRegion[]) :
          dmIoBlocking(request as DmIoRequest, regions as DmIoRegion[]);
        assert.throws(run, { code }, `${name} (${form})`);
      }
    }
    assert.equal(device.trace.length + big.device.trace.length, 0, 'nothing submitted');
    assert.equal(client.inflight, 0);
  });

  test('what needs more than one request per region still runs, through the same loop',
    async () => {
      const { device, client } = setup({ maxSectorsPerRequest: 16 });
      const direct = setup({ memoryAlignmentBytes: 4096 });
      const data = new Uint8Array(24 * 512).fill(4);
      // More than the device takes at once (16 sectors): two requests.
      assert.equal((await dmIo({ op: 'write', client, mem: { type: 'vm', data } },
        [{ device, sector: 0, count: 24 }])).errorBits, 0n);
      assert.deepEqual(device.trace.map((entry) => entry.countSectors), [16, 8]);
      // No regions, or only a skipped one: completes with no error and no request.
      assert.deepEqual(await dmIo({ op: 'write', client, mem: { type: 'vm', data } }, []),
        { errorBits: 0n, errors: [] });
      assert.deepEqual(await dmIo({ op: 'read', client, mem: { type: 'vm', data } },
        [{ device, sector: 0, count: 0 }]), { errorBits: 0n, errors: [undefined] });
      assert.equal(device.trace.length, 2);
      // Unaligned memory on an O_DIRECT device is bounced; aligned memory goes as it is.
      const unaligned = data.subarray(512, 512 + 4096);
      assert.equal((await dmIo({ op: 'read', client, mem: { type: 'vm', data: unaligned } },
        [{ device: direct.device, sector: 0, count: 8 }])).errorBits, 0n);
      const aligned = allocAligned(4096);
      assert.equal((await dmIo({ op: 'read', client, mem: { type: 'vm', data: aligned } },
        [{ device: direct.device, sector: 0, count: 8 }])).errorBits, 0n);
      assert.equal(client.freePages, client.reservedPages);
      await dmIoClientDestroy(client);
    });
});

describe('multi-region writes', () => {
  test('one request per region, in region order, each from the start of the buffer',
    async () => {
      const { device, client } = setup();
      const other = setup().device;
      const seen: DeviceRequest[] = [];
      const first = recordingDevice(device, seen);
      const second = recordingDevice(other, seen);
      const data = new Uint8Array(8192);
      assert.equal((await dmIo({ op: 'write', client, mem: { type: 'kmem', data, offset: 512 } },
        [{ device: first, sector: 16, count: 8 }, { device: second, sector: 0, count: 15 },
          { device: first, sector: 40, count: 1 }])).errorBits, 0n);
      assert.deepEqual(seen.map((request) => [request.sector, request.countSectors]),
        [[16, 8], [0, 15], [40, 1]]);
      for (const request of seen) {
        assert.equal(request.segments.length, 1);
        assert.equal(request.segments[0]?.byteOffset, 512, 'every region starts at the offset');
        assert.equal(request.segments[0]?.length, request.countSectors * 512);
      }
      await dmIoClientDestroy(client);
    });

  test('the same device requests as memory walked view by view; only the bad region fails',
    async () => {
      const devices = [setup(), setup(), setup()].map((entry) => entry.device);
      const { client } = setup();
      // One log over all devices, so the order across devices is compared too.
      const log: string[] = [];
      const logged = devices.map((device, index) => loggingDevice(device, index, log));
      const regions = logged.map((device, index) => ({ device, sector: 8 * index, count: 16 }));
      const data = new Uint8Array(8192).fill(5);
      // Two bio vectors make the loop merge two views; the same bytes as kmem are one view.
      const bvecMem = { type: 'bvec', bvecs: [{ page: data, len: 4096, offset: 0 },
        { page: data, len: 4096, offset: 4096 }] } as const;
      const walked = await dmIo({ op: 'write', client, mem: bvecMem }, regions);
      const walkedTraces = devices.map((device) => device.trace.splice(0));
      const walkedLog = log.splice(0);
      const contiguous = await dmIo({ op: 'write', client, mem: { type: 'kmem', data } }, regions);
      assert.deepEqual(contiguous, walked);
      assert.deepEqual(devices.map((device) => device.trace.splice(0)), walkedTraces);
      assert.deepEqual(log.splice(0), walkedLog);
      assert.deepEqual(walkedLog, ['0:0+16@0', '1:8+16@0', '2:16+16@0']);
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

describe('one-request requests behave as any other', () => {
  test('a failed one-request read zero-fills its bytes and reports region 0', async () => {
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
    assert.ok(!Object.isFrozen(ok) && !Object.isFrozen(ok.errors), 'a fresh result each time');
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
    // Contiguous memory (one view per region) and a bio vector (walked by the loop).
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
