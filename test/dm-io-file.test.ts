// The key dm-io behaviours on real regular files, buffered and O_DIRECT: round trips per memory
// type landing at the right file offsets, multi-region writes, count-0 regions and pure
// flushes (real fdatasyncs), regions past the end of the file, read errors zero-filling only
// their part, discard and write-zeroes; and O_DIRECT with any caller memory, bounced through the
// client's pool pages (which all come back), including a failed read that still zero-fills.

import assert from 'node:assert/strict';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test, type TestContext } from 'node:test';
import {
  allocAligned, dmIo, dmIoBlocking, dmIoClientCreate, dmIoClientDestroy, openDevice,
  openFileDevice, type DmIoMemory, type DmIoRegion, type FileDevice,
} from '../src/index.js';
import { createFaultDevice } from '../src/testing.js';
import { pattern } from './helpers/devices.js';
import { bvecs, fillLogical, pageList, readLogical } from './helpers/memory.js';
import { tempDir } from './helpers/tmp.js';

async function openTemp(
  t: TestContext, sizeSectors: number, direct: boolean, name = 'disk.img',
): Promise<{ device: FileDevice; path: string }> {
  const directory = await tempDir(t);
  const path = join(directory, name);
  const device = await openFileDevice(path, { create: { sizeBytes: sizeSectors * 512 }, direct });
  t.after(() => device.close());
  return { device, path };
}

function fileBytes(path: string, sector: number, countSectors: number): Uint8Array {
  return Uint8Array.from(readFileSync(path).subarray(sector * 512,
    (sector + countSectors) * 512));
}

const MEMORIES: Array<[string, (lengthBytes: number) => DmIoMemory]> = [
  ['page-list offset 512', (n) => ({ type: 'page-list', list: pageList(Math.ceil(n / 4096) + 1),
    offset: 512 })],
  ['bvec 1024/3072/4096…', (n) => ({ type: 'bvec', bvecs: bvecs([1024, 3072,
    ...new Array<number>(Math.ceil(n / 4096)).fill(4096)], [0, 100, 0]) })],
  ['vm', (n) => ({ type: 'vm', data: new Uint8Array(n) })],
  ['kmem offset 100', (n) => ({ type: 'kmem', data: new Uint8Array(n + 100), offset: 100 })],
];

for (const direct of [false, true]) {
  const mode = direct ? 'O_DIRECT file' : 'buffered file';
  describe(`dm-io on a ${mode}`, () => {
    for (const [label, make] of MEMORIES) {
      test(`${label} round-trips at the right file offset (async and blocking)`, async (t) => {
        const client = dmIoClientCreate({ reservedPages: 4 });
        const { device, path } = await openTemp(t, 256, direct);
        assert.equal(device.limits.memoryAlignmentBytes > 0, direct);
        const lengthBytes = 44 * 512;
        const data = pattern(lengthBytes, 3);
        const source = make(lengthBytes);
        fillLogical(source, data);
        const region: DmIoRegion[] = [{ device, sector: 9, count: 44 }];
        assert.equal((await dmIo({ op: 'write', mem: source, client }, region)).errorBits, 0n);
        assert.deepEqual(fileBytes(path, 9, 44), data);
        assert.deepEqual(fileBytes(path, 0, 9), new Uint8Array(9 * 512));
        const target = make(lengthBytes);
        assert.equal((await dmIo({ op: 'read', mem: target, client }, region)).errorBits, 0n);
        assert.deepEqual(readLogical(target, lengthBytes), data);
        const blockingTarget = make(lengthBytes);
        assert.equal(dmIoBlocking({ op: 'read', mem: blockingTarget, client }, region).errorBits,
          0n);
        assert.deepEqual(readLogical(blockingTarget, lengthBytes), data);
        assert.equal(client.freePages, 4, 'every bounce page came back');
        await dmIoClientDestroy(client);
      });
    }

    test('page-list offset 512, count 8: 3584 bytes of page 1, then 512 of page 2', async (t) => {
      const client = dmIoClientCreate();
      const { device, path } = await openTemp(t, 64, direct);
      const list = pageList(2);
      list.page.fill(0xa1);
      assert.ok(list.next !== null);
      list.next.page.fill(0xb2);
      await dmIo({ op: 'write', mem: { type: 'page-list', list, offset: 512 }, client },
        [{ device, sector: 8, count: 8 }]);
      const bytes = fileBytes(path, 8, 8);
      assert.ok(bytes.subarray(0, 3584).every((byte) => byte === 0xa1));
      assert.ok(bytes.subarray(3584).every((byte) => byte === 0xb2));
    });

    test('multi-region: same bytes, 8 and 4 sector prefixes, a count-0 region skipped',
      async (t) => {
        const client = dmIoClientCreate();
        const a = await openTemp(t, 64, direct, 'a.img');
        const b = await openTemp(t, 64, direct, 'b.img');
        const c = await openTemp(t, 64, direct, 'c.img');
        const data = pattern(4096, 5);
        const before = { ...c.device.stats };
        const result = await dmIo({ op: 'write', mem: { type: 'vm', data }, client }, [
          { device: a.device, sector: 8, count: 8 }, { device: c.device, sector: 0, count: 0 },
          { device: b.device, sector: 16, count: 4 }]);
        assert.equal(result.errorBits, 0n);
        assert.deepEqual(fileBytes(a.path, 8, 8), data);
        assert.deepEqual(fileBytes(b.path, 16, 4), data.subarray(0, 2048));
        assert.deepEqual(fileBytes(b.path, 20, 4), new Uint8Array(2048));
        assert.deepEqual(c.device.stats, before, 'no syscall for the count-0 region');
      });

    test('a zero-count region with preflush is one fdatasync and nothing else', async (t) => {
      const client = dmIoClientCreate();
      const { device } = await openTemp(t, 64, direct);
      const before = { ...device.stats };
      assert.equal((await dmIo({ op: 'write', flags: { preflush: true }, client },
        [{ device, sector: 0, count: 0 }])).errorBits, 0n);
      assert.equal(device.stats.fdatasyncs, before.fdatasyncs + 1);
      assert.equal(device.stats.writes, before.writes);
      assert.equal(device.stats.reads, before.reads);
    });

    test('past the end: pieces inside written, pieces beyond fail, the file does not grow',
      async (t) => {
        const client = dmIoClientCreate();
        const { device: file, path } = await openTemp(t, 32, direct);
        const device = createFaultDevice(file, { limits: { maxSectorsPerRequest: 4 } });
        const data = pattern(16 * 512, 7);
        const result = await dmIo({ op: 'write', mem: { type: 'vm', data }, client },
          [{ device, sector: 24, count: 16 }]);
        assert.equal(result.errorBits, 1n);
        assert.equal(statSync(path).size, 32 * 512);
        assert.deepEqual(fileBytes(path, 24, 8), data.subarray(0, 4096));
        const back = new Uint8Array(16 * 512).fill(0xff);
        const read = await dmIo({ op: 'read', mem: { type: 'vm', data: back }, client },
          [{ device, sector: 24, count: 16 }]);
        assert.equal(read.errorBits, 1n);
        assert.deepEqual(back.subarray(0, 4096), data.subarray(0, 4096));
        assert.ok(back.subarray(4096).every((byte) => byte === 0), 'beyond the end: zeros');
      });

    test('a read error zero-fills only the failed request\'s part (bounced or not)',
      async (t) => {
        const client = dmIoClientCreate({ reservedPages: 2 });
        const { device: file, path } = await openTemp(t, 64, direct);
        const data = pattern(24 * 512, 9);
        await dmIo({ op: 'write', mem: { type: 'vm', data }, client },
          [{ device: file, sector: 0, count: 24 }]);
        assert.deepEqual(fileBytes(path, 0, 24), data);
        const device = createFaultDevice(file, { limits: { maxSectorsPerRequest: 8 },
          ranges: [{ sector: 12, countSectors: 1, ops: ['read'] }] });
        for (const form of ['async', 'blocking'] as const) {
          const mem = { type: 'page-list' as const, list: pageList(4, { fill: 0xff }),
            offset: 1024 };
          const request = { op: 'read' as const, mem, client };
          const region = [{ device, sector: 0, count: 24 }];
          const result = form === 'async' ? await dmIo(request, region) :
            dmIoBlocking(request, region);
          assert.equal(result.errorBits, 1n, form);
          const expected = data.slice();
          expected.fill(0, 8 * 512, 16 * 512);
          assert.deepEqual(readLogical(mem, 24 * 512), expected, form);
          assert.ok(mem.list.page.subarray(0, 1024).every((byte) => byte === 0xff));
        }
        assert.equal(client.freePages, 2);
        await dmIoClientDestroy(client);
      });

    test('discard and write-zeroes clear the range, split by the device maximum', async (t) => {
      const client = dmIoClientCreate();
      const { device: file, path } = await openTemp(t, 64, direct);
      await dmIo({ op: 'write', mem: { type: 'vm', data: pattern(64 * 512, 2) }, client },
        [{ device: file, sector: 0, count: 64 }]);
      const device = createFaultDevice(file, { limits: { maxDiscardSectors: 8,
        maxWriteZeroesSectors: 8 } });
      const result = await dmIo({ op: 'discard', client }, [{ device, sector: 8, count: 20 }]);
      assert.equal(result.errorBits, 0n);
      assert.deepEqual(device.trace.map((entry) => entry.countSectors), [8, 8, 4]);
      assert.equal((await dmIo({ op: 'write-zeroes', client }, [{ device, sector: 40,
        count: 12 }])).errorBits, 0n);
      const expected = pattern(64 * 512, 2);
      expected.fill(0, 8 * 512, 28 * 512);
      expected.fill(0, 40 * 512, 52 * 512);
      assert.deepEqual(fileBytes(path, 0, 64), expected);
    });
  });
}

describe('O_DIRECT and the client bounce pool', () => {
  test('unaligned caller memory takes pool pages while in flight; all come back', async (t) => {
    const client = dmIoClientCreate({ reservedPages: 2, inflightMax: 16 });
    const { device, path } = await openTemp(t, 256, true);
    const unaligned = new Uint8Array(64 * 512 + 1).subarray(1);
    unaligned.set(pattern(64 * 512, 4));
    // The file refuses the unaligned memory itself: the bounce is what makes dm-io work. (A
    // whole 4 KiB block: ext4 quietly falls back to buffered I/O for a smaller direct write.)
    const writeUnaligned = (): ReturnType<NonNullable<typeof device.submitSync>> =>
      device.submitSync!({ op: 'write', sector: 0, countSectors: 8,
        segments: [unaligned.subarray(0, 4096)], flags: { sync: true, preflush: false,
          fua: false }, ioprio: 0 });
    // Once, on the shared VM under memory pressure, the kernel answered ENOMEM (a transient
    // allocation failure in the direct I/O path) before it looked at the alignment: asked again.
    let refused = writeUnaligned();
    if (refused?.errno === 'ENOMEM') refused = writeUnaligned();
    assert.equal(refused?.errno, 'EINVAL');
    const traced = createFaultDevice(device);
    const pending = dmIo({ op: 'write', mem: { type: 'vm', data: unaligned }, client },
      [{ device: traced, sector: 0, count: 64 }]);
    assert.ok(client.freePages < 2, 'pool pages are in use while the write is in flight');
    assert.equal((await pending).errorBits, 0n);
    assert.equal(client.freePages, 2);
    assert.ok(traced.trace.every((entry) => entry.countSectors <= 16),
      'each request fits the 2-page pool');
    assert.deepEqual(fileBytes(path, 0, 64), pattern(64 * 512, 4));
    await dmIoClientDestroy(client);
  });

  test('aligned caller memory goes straight to the file without the pool', async (t) => {
    const client = dmIoClientCreate({ reservedPages: 1 });
    const { device, path } = await openTemp(t, 256, true);
    const data = allocAligned(128 * 512);
    data.set(pattern(128 * 512, 6));
    const traced = createFaultDevice(device);
    const pending = dmIo({ op: 'write', mem: { type: 'vm', data }, client },
      [{ device: traced, sector: 0, count: 128 }]);
    assert.equal(client.freePages, 1, 'no bounce page taken');
    assert.equal((await pending).errorBits, 0n);
    assert.equal(client.freePages, 1);
    assert.ok(traced.trace.every((entry) => entry.segmentCount >= 1));
    assert.deepEqual(fileBytes(path, 0, 128), data);
    await dmIoClientDestroy(client);
  });

  test('openDevice with direct: true behaves the same', async (t) => {
    const client = dmIoClientCreate({ reservedPages: 4 });
    const directory = await tempDir(t);
    const path = join(directory, 'spec.img');
    const device = await openDevice(`file:${path}`, { direct: true,
      create: { sizeBytes: 65536 } });
    t.after(() => device.close());
    const data = pattern(4096, 8);
    const mem = { type: 'bvec' as const, bvecs: bvecs([1024, 3072], [3, 5]) };
    fillLogical(mem, data);
    assert.equal((await dmIo({ op: 'write', mem, client }, [{ device, sector: 1, count: 8 }]))
      .errorBits, 0n);
    assert.deepEqual(fileBytes(path, 1, 8), data);
    await dmIoClientDestroy(client);
  });
});
