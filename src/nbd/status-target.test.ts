// The BLOCK_STATUS target on its own: descriptors become sector extents (a sector partly data
// is data, hole and zero only where every byte is), extents are clipped to the window and
// start at its first sector even when the request began a block earlier, a reply ending inside
// a sector or before the window still answers the first sector, the answer holds at most
// EXTENTS_PER_QUERY_MAX extents whatever the server sends, and a second chunk is refused.
// The plan widens a sector range to whole blocks and cuts it at the u32 length.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { EXTENTS_PER_QUERY_MAX, type DeviceExtent } from '../devices/block-device.js';
import { NBD_BLOCK_STATUS_BYTES_MAX } from './protocol.js';
import { planBlockStatus, StatusTarget } from './status-target.js';

const HOLE_ZERO = 3;
const ZERO = 2;
const DATA = 0;

function extent(sector: number, countSectors: number, flags: number): DeviceExtent {
  return { sector, countSectors, hole: (flags & 1) !== 0, zero: (flags & 2) !== 0 };
}

describe('StatusTarget', () => {
  it('rounds descriptors that split sectors, as in the worked example', () => {
    const target = new StatusTarget({ requestOffsetBytes: 0, sector: 0, countSectors: 3 });
    assert.equal(target.beginChunk(), true);
    target.add(700, HOLE_ZERO);
    target.add(324, DATA);
    target.add(512, ZERO);
    target.add(4096, DATA);
    assert.deepEqual(target.finish(),
      [extent(0, 1, HOLE_ZERO), extent(1, 1, DATA), extent(2, 1, ZERO)]);
  });

  it('keeps only the flags every byte of a sector shares, and merges equal neighbours', () => {
    const target = new StatusTarget({ requestOffsetBytes: 0, sector: 0, countSectors: 16 });
    target.add(1024, HOLE_ZERO);
    target.add(256, HOLE_ZERO);
    target.add(256, ZERO);
    target.add(2560, ZERO);
    target.add(4096, ZERO | 4);
    // Sector 2 is hole+zero then zero: zero. Unknown flag bits are dropped, so the last merges.
    assert.deepEqual(target.finish(), [extent(0, 2, HOLE_ZERO), extent(2, 14, ZERO)]);
  });

  it('reports from the window start when the request began a block earlier', () => {
    // Sectors 9-20 of a 4096-byte-block export: the request covers bytes 4096-12287.
    const target = new StatusTarget({ requestOffsetBytes: 4096, sector: 9, countSectors: 12 });
    target.add(2048, DATA);
    target.add(6144, HOLE_ZERO);
    assert.deepEqual(target.finish(), [extent(9, 3, DATA), extent(12, 9, HOLE_ZERO)]);
  });

  it('clips a final descriptor that runs past the window', () => {
    const target = new StatusTarget({ requestOffsetBytes: 0, sector: 0, countSectors: 8 });
    target.add(1024, DATA);
    target.add(1 << 30, HOLE_ZERO);
    target.add(512, DATA);
    assert.deepEqual(target.finish(), [extent(0, 2, DATA), extent(2, 6, HOLE_ZERO)]);
  });

  it('answers a prefix when the reply describes less, the partial sector as data', () => {
    const target = new StatusTarget({ requestOffsetBytes: 0, sector: 0, countSectors: 100 });
    target.add(2048 + 100, HOLE_ZERO);
    assert.deepEqual(target.finish(), [extent(0, 4, HOLE_ZERO), extent(4, 1, DATA)]);
  });

  it('answers the first sector as data when the reply ended before the window', () => {
    const target = new StatusTarget({ requestOffsetBytes: 0, sector: 8, countSectors: 8 });
    target.add(1024, HOLE_ZERO);
    assert.deepEqual(target.finish(), [extent(8, 1, DATA)]);
  });

  it('holds at most EXTENTS_PER_QUERY_MAX extents, contiguous, from the first sector', () => {
    const countSectors = 4 * EXTENTS_PER_QUERY_MAX;
    const target = new StatusTarget({ requestOffsetBytes: 0, sector: 0, countSectors });
    for (let index = 0; index < countSectors; index += 1) {
      target.add(512, index % 2 === 0 ? DATA : HOLE_ZERO);
    }
    const extents = target.finish();
    assert.equal(extents.length, EXTENTS_PER_QUERY_MAX);
    extents.forEach((entry, index) => assert.deepEqual(entry,
      extent(index, 1, index % 2 === 0 ? DATA : HOLE_ZERO)));
  });

  it('still merges into the last extent once full', () => {
    const target = new StatusTarget({ requestOffsetBytes: 0, sector: 0, countSectors: 4096 });
    for (let index = 0; index < EXTENTS_PER_QUERY_MAX; index += 1) {
      target.add(512, index % 2 === 0 ? DATA : HOLE_ZERO);
    }
    const lastFlags = (EXTENTS_PER_QUERY_MAX - 1) % 2 === 0 ? DATA : HOLE_ZERO;
    target.add(1024, lastFlags);
    target.add(512, lastFlags === DATA ? HOLE_ZERO : DATA);
    target.add(512, lastFlags);
    const extents = target.finish();
    assert.equal(extents.length, EXTENTS_PER_QUERY_MAX);
    assert.deepEqual(extents.at(-1), extent(EXTENTS_PER_QUERY_MAX - 1, 3, lastFlags));
  });

  it('accepts one status chunk only', () => {
    const target = new StatusTarget({ requestOffsetBytes: 0, sector: 0, countSectors: 1 });
    assert.equal(target.chunkSeen, false);
    assert.equal(target.beginChunk(), true);
    assert.equal(target.chunkSeen, true);
    assert.equal(target.beginChunk(), false);
  });
});

describe('planBlockStatus', () => {
  it('widens sectors to whole blocks, as in the worked example', () => {
    const plan = planBlockStatus(9, 12, 4096);
    assert.equal(plan.offsetBytes, 4096);
    assert.equal(plan.lengthBytes, 8192);
    plan.target.add(8192, HOLE_ZERO);
    assert.deepEqual(plan.target.finish(), [extent(9, 12, HOLE_ZERO)]);
  });

  it('asks exactly for 512-byte blocks', () => {
    const plan = planBlockStatus(3, 5, 512);
    assert.equal(plan.offsetBytes, 1536);
    assert.equal(plan.lengthBytes, 2560);
  });

  it('cuts a long range at the u32 length and reports only what it asked about', () => {
    const countSectors = 2 ** 24;  // 8 GiB
    const plan = planBlockStatus(1, countSectors, 512);
    assert.equal(plan.offsetBytes, 512);
    assert.equal(plan.lengthBytes, NBD_BLOCK_STATUS_BYTES_MAX);
    plan.target.add(2 ** 32, HOLE_ZERO);
    const [only] = plan.target.finish();
    assert.deepEqual(only, extent(1, NBD_BLOCK_STATUS_BYTES_MAX / 512, HOLE_ZERO));
  });
});
