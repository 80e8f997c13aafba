// The region loop's segment building: memory that continues the previous segment extends it
// (as the kernel merges physically contiguous pages into one bio vector), memory that does
// not opens a new segment, and a merge needs no free segment slot.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { PAGE_SIZE } from '../constants.js';
import { createFaultDevice } from '../devices/fault-device.js';
import { createRamDevice } from '../devices/ram-device.js';
import type { PageListNode } from '../memory/types.js';
import { dmIoClientCreate } from './client.js';
import { dmIo } from './dm-io.js';

function device(limits = {}) {
  return createFaultDevice(createRamDevice({ sizeBytes: 1 << 20, limits }));
}

/** A page list over `pages` views, in the order given. */
function listOf(pages: readonly Uint8Array[]): PageListNode {
  let head: PageListNode | null = null;
  for (let index = pages.length - 1; index >= 0; index -= 1) {
    head = { page: pages[index] as Uint8Array, next: head };
  }
  assert.ok(head !== null);
  return head;
}

describe('segment merging', () => {
  test('pages of one slab in memory order become one segment; out of order they do not', async () => {
    const client = dmIoClientCreate();
    const slab = new Uint8Array(4 * PAGE_SIZE);
    const pages = [0, 1, 2, 3].map((index) => slab.subarray(index * PAGE_SIZE, (index + 1) * PAGE_SIZE));
    const dev = device();
    const inOrder = { type: 'page-list' as const, list: listOf(pages), offset: 0 };
    assert.equal((await dmIo({ op: 'write', client, mem: inOrder },
      [{ device: dev, sector: 0, count: 32 }])).errorBits, 0n);
    assert.deepEqual(dev.trace.map((entry) => entry.segmentCount), [1]);
    dev.clearTrace();
    const shuffled = [pages[0], pages[2], pages[1], pages[3]] as Uint8Array[];
    const outOfOrder = { type: 'page-list' as const, list: listOf(shuffled), offset: 0 };
    assert.equal((await dmIo({ op: 'write', client, mem: outOfOrder },
      [{ device: dev, sector: 0, count: 32 }])).errorBits, 0n);
    assert.deepEqual(dev.trace.map((entry) => entry.segmentCount), [4],
      'page 2 then page 1 are not contiguous; page 3 does not continue page 1');
  });

  test('separate allocations stay separate segments, and the segment limit still splits them', async () => {
    const client = dmIoClientCreate();
    const pages = [0, 1, 2, 3].map(() => new Uint8Array(PAGE_SIZE));
    const dev = device({ maxSegmentsPerRequest: 2 });
    assert.equal((await dmIo({ op: 'write', client,
      mem: { type: 'page-list', list: listOf(pages), offset: 0 } },
    [{ device: dev, sector: 0, count: 32 }])).errorBits, 0n);
    assert.deepEqual(dev.trace.map((entry) => [entry.sector, entry.segmentCount]), [[0, 2], [16, 2]]);
  });

  test('a merge needs no free segment: one segment allowed, contiguous bvecs still fill the request', async () => {
    const client = dmIoClientCreate();
    const buffer = new Uint8Array(3 * 1024);
    const bvecs = [0, 1, 2].map((index) => ({ page: buffer, offset: index * 1024, len: 1024 }));
    const dev = device({ maxSegmentsPerRequest: 1 });
    const data = buffer.map((_, index) => index % 251);
    buffer.set(data);
    assert.equal((await dmIo({ op: 'write', client, mem: { type: 'bvec', bvecs } },
      [{ device: dev, sector: 0, count: 6 }])).errorBits, 0n);
    assert.deepEqual(dev.trace.map((entry) => [entry.countSectors, entry.segmentCount]), [[6, 1]]);
    const back = new Uint8Array(buffer.length);
    await dmIo({ op: 'read', client, mem: { type: 'vm', data: back } }, [{ device: dev, sector: 0, count: 6 }]);
    assert.deepEqual(back, data, 'the merged segment carried the bytes in order');
  });
});

describe('reads that fail before reaching the device', () => {
  test('an unsplittable read region is zero-filled, not left stale', async () => {
    const client = dmIoClientCreate();
    // One 4096-byte block cannot be built from 512-byte pieces with one segment per request.
    const dev = device({ logicalBlockBytes: 4096, maxSegmentsPerRequest: 1 });
    const pages = Array.from({ length: 8 }, () => new Uint8Array(512).fill(0xee));
    const bvecs = pages.map((page) => ({ page, offset: 0, len: 512 }));
    const result = await dmIo({ op: 'read', client, mem: { type: 'bvec', bvecs } },
      [{ device: dev, sector: 0, count: 8 }]);
    assert.equal(result.errorBits, 1n);
    assert.equal((result.errors[0] as { errno?: string }).errno, 'EINVAL');
    assert.equal(dev.trace.length, 0, 'nothing was sent');
    assert.ok(pages.every((page) => page.every((byte) => byte === 0)), 'no stale bytes');
  });
});
