// dm-io over each memory type: bytes land at the right device offsets and come back into the
// right places of caller memory; page-list offsets, partial bvecs, circular lists; and the
// memory-shape errors (misaligned, too short, unknown type) that submit nothing.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  dmIo, dmIoBlocking, PAGE_SIZE, type DmIoMemory, type DmIoRegion,
} from '../src/index.js';
import { faultyRam, pattern, peek, poke, smallClient, thrown } from './helpers/devices.js';
import { bvecs, fillLogical, pageList, readLogical } from './helpers/memory.js';

const client = smallClient();

/** Memory of each type able to hold `lengthBytes`, with the layouts the tests name. */
function memories(lengthBytes: number): Array<[string, () => DmIoMemory]> {
  const pages = Math.ceil((lengthBytes + 1024) / PAGE_SIZE) + 1;
  return [
    ['page-list offset 0', () => ({ type: 'page-list', list: pageList(pages), offset: 0 })],
    ['page-list offset 1024', () => ({ type: 'page-list', list: pageList(pages), offset: 1024 })],
    ['bvec 1024/3072/4096…', () => ({
      type: 'bvec', bvecs: bvecs([1024, 3072, ...new Array<number>(
        Math.ceil(lengthBytes / 4096)).fill(4096)], [0, 512, 0, 2048, 0]),
    })],
    ['vm', () => ({ type: 'vm', data: new Uint8Array(lengthBytes + 512) })],
    ['kmem offset 512', () => ({ type: 'kmem', data: new Uint8Array(lengthBytes + 4096),
      offset: 512 })],
    ['kmem offset 100 (odd)', () => ({ type: 'kmem', data: new Uint8Array(lengthBytes + 4096),
      offset: 100 })],
  ];
}

describe('round trip per memory type', () => {
  for (const countSectors of [1, 8, 14, 40]) {
    for (const [label, make] of memories(countSectors * 512)) {
      test(`${label}, ${countSectors} sectors`, async () => {
        const { dev } = faultyRam(128);
        const lengthBytes = countSectors * 512;
        const data = pattern(lengthBytes, countSectors);
        const source = make();
        fillLogical(source, data);
        const guard = pattern(512, 99);
        poke(dev, 3 + countSectors, guard);
        const region: DmIoRegion = { device: dev, sector: 3, count: countSectors };

        const written = await dmIo({ op: 'write', mem: source, client }, [region]);
        assert.equal(written.errorBits, 0n);
        assert.deepEqual(peek(dev, 3, countSectors), data, 'bytes at the region on the device');
        assert.deepEqual(peek(dev, 2, 1), new Uint8Array(512), 'sector before untouched');
        assert.deepEqual(peek(dev, 3 + countSectors, 1), guard, 'sector after untouched');

        const target = make();
        const read = await dmIo({ op: 'read', mem: target, client }, [region]);
        assert.equal(read.errorBits, 0n);
        assert.deepEqual(readLogical(target, lengthBytes), data);
      });
    }
  }

  test('a read leaves memory outside the transfer untouched', async () => {
    const { dev } = faultyRam(64);
    poke(dev, 0, pattern(8 * 512, 5));
    const list = pageList(3, { fill: 0xee });
    await dmIo({ op: 'read', mem: { type: 'page-list', list, offset: 1536 }, client },
      [{ device: dev, sector: 0, count: 8 }]);
    const second = list.next;
    assert.ok(second !== null && second.next !== null);
    assert.ok(list.page.subarray(0, 1536).every((byte) => byte === 0xee), 'before offset');
    assert.deepEqual(list.page.subarray(1536), pattern(4096, 5).subarray(0, 2560));
    assert.deepEqual(second.page.subarray(0, 1536), pattern(4096, 5).subarray(2560));
    assert.ok(second.page.subarray(1536).every((byte) => byte === 0xee), 'after the end');
    assert.ok(second.next.page.every((byte) => byte === 0xee), 'third page untouched');
  });
});

describe('page lists', () => {
  test('offset 512, count 8: 3584 bytes from offset 512, then 512 from the second page',
    async () => {
      const { dev } = faultyRam(64);
      const list = pageList(2);
      list.page.fill(0xa1);
      list.page.fill(0x0f, 0, 512);
      assert.ok(list.next !== null);
      list.next.page.fill(0xb2, 0, 512);
      list.next.page.fill(0xcc, 512);

      const result = await dmIo({ op: 'write', mem: { type: 'page-list', list, offset: 512 },
        client }, [{ device: dev, sector: 16, count: 8 }]);
      assert.equal(result.errorBits, 0n);
      const bytes = peek(dev, 16, 8);
      assert.ok(bytes.subarray(0, 3584).every((byte) => byte === 0xa1), 'first 3584 bytes');
      assert.ok(bytes.subarray(3584).every((byte) => byte === 0xb2), 'last 512 bytes');
      assert.equal(dev.trace.length, 1);
      assert.equal(dev.trace[0]?.segmentCount, 2, 'two segments: 3584 + 512');
      assert.equal(dev.trace[0]?.countSectors, 8);
    });

  test('a circular one-page list writes that page over and over', async () => {
    const { dev } = faultyRam(64);
    const list = pageList(1, { circular: true });
    list.page.set(pattern(PAGE_SIZE, 7));
    const result = await dmIo({ op: 'write', mem: { type: 'page-list', list, offset: 0 }, client },
      [{ device: dev, sector: 0, count: 24 }]);
    assert.equal(result.errorBits, 0n);
    for (let page = 0; page < 3; page += 1) {
      assert.deepEqual(peek(dev, page * 8, 8), list.page, `copy ${page}`);
    }
  });

  test('a circular list with an offset wraps into its first page again', async () => {
    const { dev } = faultyRam(64);
    const list = pageList(2, { circular: true });
    const second = list.next;
    assert.ok(second !== null);
    list.page.set(pattern(PAGE_SIZE, 1));
    second.page.set(pattern(PAGE_SIZE, 2));
    await dmIo({ op: 'write', mem: { type: 'page-list', list, offset: 3072 }, client },
      [{ device: dev, sector: 0, count: 20 }]);
    const expected = new Uint8Array(20 * 512);
    expected.set(list.page.subarray(3072), 0);
    expected.set(second.page, 1024);
    expected.set(list.page, 5120);
    expected.set(second.page.subarray(0, 1024), 9216);
    assert.deepEqual(peek(dev, 0, 20), expected);
  });
});

describe('bio vectors', () => {
  test('1024, 3072, 4096 transferred in order; the last one only partly', async () => {
    const { dev } = faultyRam(64);
    const vectors = bvecs([1024, 3072, 4096], [512, 0, 0]);
    const [first, second, third] = vectors;
    assert.ok(first !== undefined && second !== undefined && third !== undefined);
    first.page.fill(0x11, 512, 1536);
    second.page.fill(0x22, 0, 3072);
    third.page.fill(0x33);
    const result = await dmIo({ op: 'write', mem: { type: 'bvec', bvecs: vectors }, client },
      [{ device: dev, sector: 0, count: 10 }]);
    assert.equal(result.errorBits, 0n);
    const bytes = peek(dev, 0, 12);
    assert.ok(bytes.subarray(0, 1024).every((byte) => byte === 0x11));
    assert.ok(bytes.subarray(1024, 4096).every((byte) => byte === 0x22));
    assert.ok(bytes.subarray(4096, 5120).every((byte) => byte === 0x33), '1024 of the 4096');
    assert.ok(bytes.subarray(5120).every((byte) => byte === 0), 'nothing past the region');
    assert.deepEqual(dev.trace.map((entry) => entry.segmentCount), [3]);
  });

  test('a partly consumed last vector is partly filled by a read', async () => {
    const { dev } = faultyRam(64);
    poke(dev, 0, pattern(5 * 512, 3));
    const vectors = bvecs([1024, 4096], [0, 0], 0x77);
    await dmIo({ op: 'read', mem: { type: 'bvec', bvecs: vectors }, client },
      [{ device: dev, sector: 0, count: 5 }]);
    const last = vectors[1];
    assert.ok(last !== undefined);
    assert.deepEqual(last.page.subarray(0, 1536), pattern(5 * 512, 3).subarray(1024));
    assert.ok(last.page.subarray(1536).every((byte) => byte === 0x77));
  });
});

describe('memory errors submit nothing', () => {
  const cases: Array<[string, () => DmIoMemory, number, string]> = [
    ['page-list offset 100', () => ({ type: 'page-list', list: pageList(2), offset: 100 }), 8,
      'DMIO_ERR_MISALIGNED'],
    ['page-list offset 4096', () => ({ type: 'page-list', list: pageList(2), offset: 4096 }), 1,
      'DMIO_ERR_OUT_OF_RANGE'],
    ['bvec len 1000', () => ({ type: 'bvec', bvecs: bvecs([1000, 4096]) }), 8,
      'DMIO_ERR_MISALIGNED'],
    ['page list one page short', () => ({ type: 'page-list', list: pageList(2), offset: 512 }),
      16, 'DMIO_ERR_BUFFER_TOO_SHORT'],
    ['page list of one page for 9 sectors', () => ({ type: 'page-list', list: pageList(1),
      offset: 0 }), 9, 'DMIO_ERR_BUFFER_TOO_SHORT'],
    ['bvecs too short', () => ({ type: 'bvec', bvecs: bvecs([1024, 1024]) }), 5,
      'DMIO_ERR_BUFFER_TOO_SHORT'],
    ['bvec past its page', () => ({ type: 'bvec', bvecs: [{ page: new Uint8Array(4096),
      len: 4096, offset: 512 }] }), 8, 'DMIO_ERR_BUFFER_TOO_SHORT'],
    ['vm too short', () => ({ type: 'vm', data: new Uint8Array(4095) }), 8,
      'DMIO_ERR_BUFFER_TOO_SHORT'],
    ['kmem too short after offset', () => ({ type: 'kmem', data: new Uint8Array(4096),
      offset: 512 }), 8, 'DMIO_ERR_BUFFER_TOO_SHORT'],
    ['unknown type', () => ({ type: 'bio', data: new Uint8Array(4096) } as unknown as
      DmIoMemory), 8, 'DMIO_ERR_UNKNOWN_MEMORY_TYPE'],
    ['page of wrong size', () => ({ type: 'page-list', list: { page: new Uint8Array(512),
      next: null }, offset: 0 }), 1, 'DMIO_ERR_INVALID_ARG_VALUE'],
    ['vm data not bytes', () => ({ type: 'vm', data: [1, 2, 3] } as unknown as DmIoMemory), 1,
      'DMIO_ERR_INVALID_ARG_TYPE'],
    ['missing memory', () => undefined as unknown as DmIoMemory, 1, 'DMIO_ERR_INVALID_ARG_TYPE'],
  ];
  for (const [label, make, countSectors, code] of cases) {
    for (const op of ['read', 'write'] as const) {
      test(`${label} (${op}) → ${code}`, () => {
        const { dev } = faultyRam(64);
        const region = { device: dev, sector: 0, count: countSectors };
        let called = false;
        const notify = { fn: () => { called = true; } };
        for (const run of [
          () => dmIo({ op, mem: make(), client }, [region]),
          () => dmIo({ op, mem: make(), client, notify }, [region]),
          () => dmIoBlocking({ op, mem: make(), client }, [region]),
        ]) {
          assert.equal(thrown(run).code, code);
        }
        assert.equal(dev.trace.length, 0, 'nothing submitted');
        assert.equal(called, false, 'no callback');
      });
    }
  }

  test('an unknown memory type gets no callback even later', async () => {
    const { dev } = faultyRam(64);
    let called = false;
    assert.throws(() => dmIo({
      op: 'write', mem: { type: 'nope' } as unknown as DmIoMemory, client,
      notify: { fn: () => { called = true; } },
    }, [{ device: dev, sector: 0, count: 1 }]), { code: 'DMIO_ERR_UNKNOWN_MEMORY_TYPE' });
    await new Promise((resolve) => setTimeout(resolve, 5));
    assert.equal(called, false);
  });

  test('memory longer than needed is fine; only the longest region decides', async () => {
    const { dev: a } = faultyRam(64);
    const { dev: b } = faultyRam(64);
    const mem: DmIoMemory = { type: 'page-list', list: pageList(1), offset: 2048 };
    // 4 sectors fit the 2048 bytes after the offset; a second region of 5 would not.
    await dmIo({ op: 'write', mem, client }, [{ device: a, sector: 0, count: 4 },
      { device: b, sector: 0, count: 2 }]);
    assert.equal(thrown(() => dmIo({ op: 'write', mem, client }, [
      { device: a, sector: 0, count: 4 }, { device: b, sector: 0, count: 5 }])).code,
    'DMIO_ERR_BUFFER_TOO_SHORT');
  });
});
