// The client's bounded resources: the in-flight limit (shared by every request on the client),
// the waiting-queue bound (a request refused whole, typed, nothing submitted), the bounce pool
// for devices that need aligned memory (O_DIRECT), FIFO admission, the leak check, and bounded
// memory under load; plus dmIoBlocking: parity with dmIo, its bounce path, and its refusal of
// devices that cannot block.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  allocAligned, createRamDevice, dmIo, dmIoBlocking, dmIoClientCreate, dmIoClientDestroy, type DmIoRegion,
  type BlockDevice, type DmIoRequest, StateError,
} from '../src/index.js';
import {
  CountingDevice, DirectDevice, faultyRam, NonBlockingDevice, pattern, peek, poke, sleep, thrown,
} from './helpers/devices.js';
import { bvecs, fillLogical, pageList, readLogical } from './helpers/memory.js';

describe('in-flight limit', () => {
  test('never more than inflightMax requests outstanding, and the limit is reached', async () => {
    const client = dmIoClientCreate({ inflightMax: 3, reservedPages: 1 });
    const { dev } = faultyRam(64, { delayMs: 3, limits: { maxSectorsPerRequest: 1 } });
    const counting = new CountingDevice(dev, 'counting');
    const pending = dmIo({ op: 'write', mem: { type: 'vm', data: pattern(16 * 512) }, client },
      [{ device: counting, sector: 0, count: 16 }]);
    assert.equal(client.inflight, 3);
    assert.equal(client.queued, 13);
    const result = await pending;
    assert.equal(result.errorBits, 0n);
    assert.equal(counting.peak, 3);
    assert.equal(counting.submitted, 16);
    assert.equal(client.inflight, 0);
    assert.equal(client.queued, 0);
    assert.deepEqual(peek(dev, 0, 16), pattern(16 * 512));
    await dmIoClientDestroy(client);
  });

  test('the limit is shared by concurrent requests and regions; FIFO order kept', async () => {
    const client = dmIoClientCreate({ inflightMax: 2, reservedPages: 1 });
    const { dev: a } = faultyRam(64, { delayMs: 2, limits: { maxSectorsPerRequest: 2 } });
    const { dev: b } = faultyRam(64, { delayMs: 1, limits: { maxSectorsPerRequest: 2 } });
    const ca = new CountingDevice(a, 'a');
    const cb = new CountingDevice(b, 'b');
    let peak = 0;
    const probe = setInterval(() => { peak = Math.max(peak, ca.inflight + cb.inflight); }, 0);
    const data = pattern(4096);
    await Promise.all([
      dmIo({ op: 'write', mem: { type: 'vm', data }, client },
        [{ device: ca, sector: 0, count: 8 }, { device: cb, sector: 0, count: 8 }]),
      dmIo({ op: 'write', mem: { type: 'vm', data }, client },
        [{ device: cb, sector: 8, count: 8 }]),
      dmIo({ op: 'discard', client }, [{ device: ca, sector: 32, count: 8 }]),
    ]);
    clearInterval(probe);
    assert.ok(peak <= 2, `peak ${peak}`);
    assert.ok(ca.peak + cb.peak <= 4);
    assert.equal(ca.submitted + cb.submitted, 4 + 4 + 4 + 1);
    assert.deepEqual(b.trace.map((entry) => entry.sector), [0, 2, 4, 6, 8, 10, 12, 14]);
    await dmIoClientDestroy(client);
  });

  test('destroy waits for in-flight work and later requests are refused', async () => {
    const client = dmIoClientCreate({ inflightMax: 1, reservedPages: 1 });
    const { dev } = faultyRam(64, { delayMs: 3, limits: { maxSectorsPerRequest: 1 } });
    let completed = false;
    void dmIo({ op: 'write', mem: { type: 'vm', data: pattern(2048) }, client },
      [{ device: dev, sector: 0, count: 4 }]).then(() => { completed = true; });
    await dmIoClientDestroy(client);
    assert.equal(completed, true, 'destroy resolved after the request completed');
    assert.equal(dev.trace.length, 4, 'queued pieces were still issued');
    assert.equal(thrown(() => dmIo({ op: 'discard', client },
      [{ device: dev, sector: 0, count: 1 }])).code, 'DMIO_ERR_CLIENT_DESTROYED');
  });
});

describe('the waiting queue bound (queuedMax)', () => {
  test('a request whose pieces would overflow the queue is refused whole, synchronously',
    async () => {
      const client = dmIoClientCreate({ inflightMax: 2, queuedMax: 3, reservedPages: 1 });
      const { dev } = faultyRam(64, { delayMs: 3, limits: { maxSectorsPerRequest: 1 } });
      const data = pattern(8 * 512);
      const first = dmIo({ op: 'write', mem: { type: 'vm', data }, client },
        [{ device: dev, sector: 0, count: 5 }]);
      assert.equal(client.inflight, 2);
      assert.equal(client.queued, 3, 'the bound is reached, not exceeded');
      const traced = dev.trace.length;
      let called = false;
      const forms = [
        () => dmIo({ op: 'write', mem: { type: 'vm', data }, client },
          [{ device: dev, sector: 8, count: 1 }]),
        () => dmIo({ op: 'write', mem: { type: 'vm', data }, client,
          notify: { fn: () => { called = true; } } }, [{ device: dev, sector: 8, count: 1 }]),
        () => dmIo({ op: 'discard', client }, [{ device: dev, sector: 16, count: 1 }]),
      ];
      for (const form of forms) {
        const error = thrown(form);
        assert.ok(error instanceof StateError, 'a StateError, thrown, not a rejection');
        assert.equal(error.code, 'DMIO_ERR_CLIENT_BUSY');
        assert.equal((error as StateError).target, 'client');
        assert.match(error.message, /queuedMax/);
      }
      assert.equal(dev.trace.length, traced, 'nothing of a refused request was submitted');
      assert.equal(client.queued, 3);
      assert.equal((await first).errorBits, 0n);
      await sleep(1);
      assert.equal(called, false, 'a refused request never completes');
      // Once the queue drained, the same request is taken.
      assert.equal((await dmIo({ op: 'write', mem: { type: 'vm', data }, client },
        [{ device: dev, sector: 8, count: 1 }])).errorBits, 0n);
      await dmIoClientDestroy(client);
    });

  test('more pieces than in flight plus the bound is refused even on an idle client; '
    + 'a multi-region write counts every region', async () => {
    const client = dmIoClientCreate({ inflightMax: 2, queuedMax: 3, reservedPages: 1 });
    const { dev } = faultyRam(64, { limits: { maxSectorsPerRequest: 1 } });
    const data = pattern(8 * 512);
    assert.equal(thrown(() => dmIo({ op: 'write', mem: { type: 'vm', data }, client },
      [{ device: dev, sector: 0, count: 6 }])).code, 'DMIO_ERR_CLIENT_BUSY');
    assert.equal(thrown(() => dmIo({ op: 'write', mem: { type: 'vm', data }, client },
      [{ device: dev, sector: 0, count: 3 }, { device: dev, sector: 8, count: 3 }])).code,
    'DMIO_ERR_CLIENT_BUSY');
    assert.equal(dev.trace.length, 0);
    assert.equal((await dmIo({ op: 'write', mem: { type: 'vm', data }, client },
      [{ device: dev, sector: 0, count: 5 }])).errorBits, 0n, 'exactly the bound fits');
    // The blocking form never queues, so the bound never refuses it.
    const client0 = dmIoClientCreate({ inflightMax: 1, queuedMax: 0 });
    assert.equal(dmIoBlocking({ op: 'write', mem: { type: 'vm', data }, client: client0 },
      [{ device: dev, sector: 0, count: 8 }]).errorBits, 0n);
    await dmIoClientDestroy(client);
    await dmIoClientDestroy(client0);
  });

  test('queuedMax is validated: 0 to 1048576', () => {
    assert.equal(dmIoClientCreate({ queuedMax: 0 }).queuedMax, 0);
    assert.equal(dmIoClientCreate().queuedMax, 65536);
    for (const queuedMax of [-1, 1.5, 1048577]) {
      assert.equal(thrown(() => dmIoClientCreate({ queuedMax })).code, 'DMIO_ERR_OUT_OF_RANGE');
    }
  });

  test('bounce-page admission is FIFO: a request that needs no pages waits behind one that does',
    async () => {
      const client = dmIoClientCreate({ inflightMax: 8, reservedPages: 2 });
      const { dev } = faultyRam(256, { delayMs: 3 });
      const direct = new DirectDevice(dev);
      const unaligned = (seed: number) => pattern(8192 + 512, seed).subarray(512);
      const order: number[] = [];
      const all = [
        // Takes both pool pages.
        dmIo({ op: 'write', mem: { type: 'vm', data: unaligned(1) }, client },
          [{ device: direct, sector: 0, count: 16 }]),
        // Waits for pages.
        dmIo({ op: 'write', mem: { type: 'vm', data: unaligned(2) }, client },
          [{ device: direct, sector: 16, count: 16 }]),
        // Aligned: needs no page, and a slot is free, but must not overtake.
        dmIo({ op: 'write', mem: { type: 'vm', data: allocAligned(8192) }, client },
          [{ device: direct, sector: 32, count: 16 }]),
      ];
      assert.equal(client.inflight, 1);
      assert.equal(client.queued, 2);
      all.forEach((pending, index) => void pending.then(() => order.push(index)));
      await Promise.all(all);
      assert.deepEqual(dev.trace.map((entry) => entry.sector), [0, 16, 32],
        'submitted in arrival order');
      assert.deepEqual(order, [0, 1, 2]);
      assert.equal(client.freePages, 2);
      assert.equal(direct.misaligned, 0);
      await dmIoClientDestroy(client);
    });
});

describe('devices that break the completion contract', () => {
  test('a device completing inside submit is not started twice (queue re-entry)', async () => {
    // The first request completes later, the rest inside submit: when the first completes, the
    // client pumps its queue and each later start completes while the pump is running.
    const ram = createRamDevice({ sizeBytes: 65536 });
    const seen: number[] = [];
    const eager: BlockDevice = {
      name: 'eager', kind: 'ram', sizeSectors: ram.sizeSectors, readOnly: false, closed: false,
      canBlock: false, limits: { ...ram.limits, maxSectorsPerRequest: 1 },
      submit: (request, done) => {
        seen.push(request.sector);
        const error = ram.submitSync(request);
        if (request.sector === 0) setTimeout(() => done(error), 1);
        else done(error);
      },
      close: () => Promise.resolve(),
    };
    const client = dmIoClientCreate({ inflightMax: 1, reservedPages: 1 });
    let returned = false;
    let returnedFirst = false;
    const bits = await new Promise<bigint>((resolve) => {
      dmIo({ op: 'write', mem: { type: 'vm', data: pattern(4096) }, client,
        notify: { fn: (errorBits) => { returnedFirst = returned; resolve(errorBits); } } },
      [{ device: eager, sector: 0, count: 8 }]);
      returned = true;
    });
    assert.equal(bits, 0n);
    assert.equal(returnedFirst, true);
    assert.deepEqual(seen, [0, 1, 2, 3, 4, 5, 6, 7], 'each piece submitted exactly once');
    assert.deepEqual(peek(ram, 0, 8), pattern(4096));
    assert.equal(client.inflight, 0);
    await dmIoClientDestroy(client);
  });
});

describe('bounded memory', () => {
  test('queued requests carry views of caller memory, not copies; the pool is untouched',
    async () => {
      const client = dmIoClientCreate({ inflightMax: 2, reservedPages: 4 });
      const { dev } = faultyRam(2048, { delayMs: 1, limits: { maxSectorsPerRequest: 1 } });
      const buffers = new Set<ArrayBufferLike>();
      const recorder = new CountingDevice(dev, 'recorder');
      const submit = recorder.submit.bind(recorder);
      recorder.submit = (request, done) => {
        for (const segment of request.segments) buffers.add(segment.buffer);
        submit(request, done);
      };
      const data = pattern(1000 * 512);
      const pending = dmIo({ op: 'write', mem: { type: 'vm', data }, client },
        [{ device: recorder, sector: 0, count: 1000 }]);
      assert.equal(client.queued, 998);
      assert.equal(client.freePages, 4, 'no pool page is used for a device without alignment');
      await pending;
      assert.deepEqual([...buffers], [data.buffer], 'every segment is a view of the caller buffer');
      await dmIoClientDestroy(client);
    });

  test('bounced requests wait for pool pages instead of allocating', async () => {
    const client = dmIoClientCreate({ inflightMax: 64, reservedPages: 4 });
    const { dev } = faultyRam(256, { delayMs: 2 });
    const direct = new DirectDevice(dev);
    const counting = new CountingDevice(direct, 'counting');
    const data = pattern(128 * 512, 4);
    let lowest = client.freePages;
    const probe = setInterval(() => { lowest = Math.min(lowest, client.freePages); }, 0);
    const result = await dmIo({ op: 'write', mem: { type: 'vm', data }, client },
      [{ device: counting, sector: 0, count: 128 }]);
    clearInterval(probe);
    assert.equal(result.errorBits, 0n);
    assert.equal(direct.misaligned, 0, 'every request reached the device aligned');
    assert.deepEqual(dev.trace.map((entry) => entry.countSectors), [32, 32, 32, 32],
      'requests are capped to the 4-page pool');
    assert.equal(counting.peak, 1, 'each request takes the whole pool, so they run one by one');
    assert.ok(lowest >= 0);
    assert.equal(client.freePages, 4, 'every page came back');
    assert.deepEqual(peek(dev, 0, 128), data);
    await dmIoClientDestroy(client);
  });
});

describe('O_DIRECT devices and the bounce pool', () => {
  const memories: Array<[string, (lengthBytes: number) => Parameters<typeof fillLogical>[0]]> = [
    ['vm', (n) => ({ type: 'vm', data: new Uint8Array(n) })],
    ['kmem offset 100', (n) => ({ type: 'kmem', data: new Uint8Array(n + 100), offset: 100 })],
    ['page-list offset 512', (n) => ({ type: 'page-list', list: pageList(n / 4096 + 1),
      offset: 512 })],
    ['bvec 1024/3072/…', (n) => ({ type: 'bvec', bvecs: bvecs([1024, 3072,
      ...new Array<number>(n / 4096).fill(4096)], [100, 0, 7]) })],
  ];
  for (const [label, make] of memories) {
    test(`unaligned ${label} memory round-trips through pool pages`, async () => {
      const client = dmIoClientCreate({ inflightMax: 8, reservedPages: 3 });
      const { dev } = faultyRam(256, { limits: { maxSectorsPerRequest: 64 } });
      const direct = new DirectDevice(dev);
      const lengthBytes = 40 * 512;
      const data = pattern(lengthBytes, 7);
      const source = make(lengthBytes);
      fillLogical(source, data);
      const region: DmIoRegion[] = [{ device: direct, sector: 3, count: 40 }];
      assert.equal((await dmIo({ op: 'write', mem: source, client }, region)).errorBits, 0n);
      assert.deepEqual(peek(dev, 3, 40), data);
      const target = make(lengthBytes);
      assert.equal((await dmIo({ op: 'read', mem: target, client }, region)).errorBits, 0n);
      assert.deepEqual(readLogical(target, lengthBytes), data);
      const blockingTarget = make(lengthBytes);
      assert.equal(dmIoBlocking({ op: 'read', mem: blockingTarget, client }, region).errorBits,
        0n);
      assert.deepEqual(readLogical(blockingTarget, lengthBytes), data);
      assert.equal(direct.misaligned, 0);
      assert.ok(dev.trace.every((entry) => entry.countSectors <= 24), 'capped to 3 pool pages');
      assert.equal(client.freePages, 3);
      await dmIoClientDestroy(client);
    });
  }

  test('a failed bounced read still zero-fills only its own part', async () => {
    const client = dmIoClientCreate({ reservedPages: 1 });
    const { dev } = faultyRam(64, { ranges: [{ sector: 9, countSectors: 1, ops: ['read'] }] });
    const direct = new DirectDevice(dev);
    poke(dev, 0, pattern(24 * 512, 2));
    for (const form of ['async', 'blocking'] as const) {
      const buffer = new Uint8Array(24 * 512).fill(0xff);
      const request: DmIoRequest = { op: 'read', mem: { type: 'vm', data: buffer }, client };
      const region = [{ device: direct, sector: 0, count: 24 }];
      const result = form === 'async' ? await dmIo(request, region) :
        dmIoBlocking(request, region);
      assert.equal(result.errorBits, 1n, form);
      const expected = pattern(24 * 512, 2);
      expected.fill(0, 4096, 8192);
      assert.deepEqual(buffer, expected, form);
    }
    assert.equal(client.freePages, 1);
    await dmIoClientDestroy(client);
  });

  test('aligned caller memory goes to the device without a bounce', async () => {
    const client = dmIoClientCreate({ reservedPages: 2 });
    const { dev } = faultyRam(256, { delayMs: 2 });
    const direct = new DirectDevice(dev);
    const data = allocAligned(64 * 512);
    data.set(pattern(64 * 512, 9));
    const pending = dmIo({ op: 'write', mem: { type: 'vm', data }, client },
      [{ device: direct, sector: 0, count: 64 }]);
    assert.equal(client.freePages, 2, 'no pool page taken');
    await pending;
    assert.equal(direct.misaligned, 0);
    assert.deepEqual(peek(dev, 0, 64), data);
    await dmIoClientDestroy(client);
  });

  test('pool pages are zeroed before reuse: no bytes of one request leak into another',
    async () => {
      const client = dmIoClientCreate({ reservedPages: 1, inflightMax: 1 });
      const { dev } = faultyRam(64);
      const direct = new DirectDevice(dev);
      await dmIo({ op: 'write', mem: { type: 'vm', data: pattern(4096, 3) }, client },
        [{ device: direct, sector: 0, count: 8 }]);
      const readBack = new Uint8Array(4096).fill(0xee);
      const { dev: failing } = faultyRam(64, { down: true });
      await dmIo({ op: 'read', mem: { type: 'vm', data: readBack }, client },
        [{ device: new DirectDevice(failing), sector: 0, count: 8 }]);
      assert.ok(readBack.every((byte) => byte === 0));
      await dmIoClientDestroy(client);
    });
});

describe('dmIoBlocking', () => {
  test('same bytes, bits and errors as dmIo', async () => {
    const client = dmIoClientCreate();
    const build = () => {
      const { dev: a } = faultyRam(64, { limits: { maxSectorsPerRequest: 3 } }, 'a');
      const { dev: b } = faultyRam(64, { ranges: [{ sector: 4, countSectors: 2 }] }, 'b');
      return [a, b] as const;
    };
    const [a1, b1] = build();
    const [a2, b2] = build();
    const data = pattern(16 * 512, 1);
    const asyncResult = await dmIo({ op: 'write', mem: { type: 'vm', data }, client },
      [{ device: a1, sector: 0, count: 16 }, { device: b1, sector: 0, count: 16 }]);
    const blockingResult = dmIoBlocking({ op: 'write', mem: { type: 'vm', data }, client },
      [{ device: a2, sector: 0, count: 16 }, { device: b2, sector: 0, count: 16 }]);
    assert.equal(blockingResult.errorBits, asyncResult.errorBits);
    assert.equal(blockingResult.errorBits, 0b10n);
    assert.deepEqual(peek(a2, 0, 64), peek(a1, 0, 64));
    assert.deepEqual(peek(b2, 0, 64), peek(b1, 0, 64));
    assert.deepEqual(a2.trace, a1.trace);
    assert.deepEqual(b2.trace, b1.trace);
    assert.equal(JSON.stringify(blockingResult.errors), JSON.stringify(asyncResult.errors));
    await dmIoClientDestroy(client);
  });

  test('completes before it returns', () => {
    const client = dmIoClientCreate();
    const { dev } = faultyRam(64);
    const data = pattern(4096, 3);
    dmIoBlocking({ op: 'write', mem: { type: 'vm', data }, client },
      [{ device: dev, sector: 0, count: 8 }]);
    assert.deepEqual(peek(dev, 0, 8), data);
  });

  test('a device that cannot block → DMIO_ERR_CANNOT_BLOCK, nothing submitted', async () => {
    const client = dmIoClientCreate();
    const { dev: fine } = faultyRam(64);
    const { dev } = faultyRam(64);
    const nbdLike = new NonBlockingDevice(dev, 'nbd-like');
    const regions = [{ device: fine, sector: 0, count: 8 }, { device: nbdLike, sector: 0,
      count: 8 }];
    const error = thrown(() => dmIoBlocking({ op: 'write', mem: { type: 'vm',
      data: new Uint8Array(4096) }, client }, regions));
    assert.equal(error.code, 'DMIO_ERR_CANNOT_BLOCK');
    assert.match(error.message, /nbd-like/);
    assert.equal(fine.trace.length + dev.trace.length, 0);
    // The asynchronous form works on the same device.
    assert.equal((await dmIo({ op: 'write', mem: { type: 'vm', data: new Uint8Array(4096) },
      client }, regions)).errorBits, 0n);
  });

  test('a notify callback is refused with DMIO_ERR_CANNOT_BLOCK', () => {
    const client = dmIoClientCreate();
    const { dev } = faultyRam(64);
    assert.equal(thrown(() => dmIoBlocking({ op: 'discard', client, notify: { fn: () => {} } },
      [{ device: dev, sector: 0, count: 8 }])).code, 'DMIO_ERR_CANNOT_BLOCK');
    assert.equal(dev.trace.length, 0);
  });

  test('notify: null means no callback in the blocking form, as in dmIo', () => {
    const client = dmIoClientCreate();
    const { dev } = faultyRam(64);
    const request = { op: 'discard' as const, client, notify: null } as unknown as
      Parameters<typeof dmIoBlocking>[0];
    assert.equal(dmIoBlocking(request, [{ device: dev, sector: 0, count: 8 }]).errorBits, 0n);
    assert.equal(dev.trace.length, 1);
  });

  test('blocking bounces take pool pages when free and return them', async () => {
    const client = dmIoClientCreate({ reservedPages: 2, inflightMax: 4 });
    const { dev } = faultyRam(64, { delayMs: 5 });
    const direct = new DirectDevice(dev);
    // An asynchronous request holds both pool pages while the blocking one runs.
    const pending = dmIo({ op: 'write', mem: { type: 'vm', data: pattern(8192, 1) }, client },
      [{ device: direct, sector: 0, count: 16 }]);
    assert.equal(client.freePages, 0);
    const data = pattern(8192, 2);
    const result = dmIoBlocking({ op: 'write', mem: { type: 'vm', data }, client },
      [{ device: direct, sector: 32, count: 16 }]);
    assert.equal(result.errorBits, 0n);
    assert.deepEqual(peek(dev, 32, 16), data);
    await pending;
    await sleep(1);
    assert.equal(client.freePages, 2);
    assert.equal(direct.misaligned, 0);
    await dmIoClientDestroy(client);
  });
});
