// Writecache in the library: the layout sizes; formatting a zeroed cache (header bytes, entries
// all ones, the fresh status line); refusals (garbage, block size mismatch, duplicate entries of
// equal seq); a property test of random block writes, FUA writes, discards, reads and flushes on a small
// cache (writeback and blocking on the free list happen) against a plain model, ending with
// every block written back so the origin alone holds the data; crashes (the devices
// snapshotted without closing) after a flush keep every flushed block, and uncommitted writes
// are lost.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { formatTableReport, openTableText, TableError, type TableDevice } from '../src/index.js';
import { layoutFor, writeEntry } from '../src/stacks/writecache-format.js';
import type { WritecacheTarget } from '../src/stacks/writecache-target.js';
import { peek, poke } from './helpers/devices.js';
import { deviceRequest, submitted } from './helpers/requests.js';
import { devicePool } from './stacks-helpers.js';

const BLOCK = 4096;
const ORIGIN_SECTORS = 2048;
/** 256 KiB of cache: 63 blocks of 4 KiB after one block of metadata. */
const CACHE_SECTORS = 512;

function cacheOf(table: TableDevice): WritecacheTarget {
  return table.targets[0] as WritecacheTarget;
}

function block(value: number, blocks = 1): Uint8Array {
  return new Uint8Array(blocks * BLOCK).fill(value);
}

async function readBlocks(table: TableDevice, sector: number, blocks: number): Promise<Uint8Array> {
  const data = new Uint8Array(blocks * BLOCK);
  const error = await submitted(table, deviceRequest('read', sector, blocks * 8, [data]));
  assert.equal(error, null);
  return data;
}

const TABLE = `0 ${ORIGIN_SECTORS} writecache s origin cache 4096 0\n`;

describe('writecache', () => {
  test('layout sizes as dm-writecache computes them', () => {
    const small = layoutFor(64 * 1024 * 1024, 4096, 0);
    assert.equal(small.blockCount, 16320);
    assert.equal(small.metadataBytes, 262144);
    const big = layoutFor(1024 * 1024 * 1024, 4096, 0);
    assert.equal(big.blockCount, 261123);
    assert.equal(big.metadataBytes, 4182016);
    assert.equal(layoutFor(CACHE_SECTORS * 512, 4096, 0).blockCount, 63);
  });

  test('a zeroed cache is formatted: header, entries all ones, fresh status', async () => {
    const pool = devicePool({ origin: ORIGIN_SECTORS, cache: CACHE_SECTORS });
    const table = await openTableText(TABLE, pool.open);
    try {
      assert.deepEqual(formatTableReport(table, 'status'), [`0 ${ORIGIN_SECTORS} writecache 0 63 63 0 0 0 0 0 0 0 0 0 0 0`]);
      assert.deepEqual(formatTableReport(table, 'table'), [`0 ${ORIGIN_SECTORS} writecache s origin cache 4096 0`]);
      assert.equal(table.limits.logicalBlockBytes, 4096);
      const header = peek(pool.ram('cache'), 0, 8);
      assert.deepEqual([...header.subarray(0, 32)], [0x21, 0x93, 0x48, 0x23, 1, 0, 0, 0, 0, 0x10, 0, 0,
        0, 0, 0, 0, 63, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
      assert.ok(header.subarray(64, 64 + 16 * 63).every((byte) => byte === 0xff));
    } finally {
      await table.close();
    }
  });

  test('garbage, a block size mismatch and duplicate entries are refused', async () => {
    const pool = devicePool({ origin: ORIGIN_SECTORS, cache: CACHE_SECTORS });
    poke(pool.ram('cache'), 0, block(0x5a));
    await assert.rejects(openTableText(TABLE, pool.open), (error: TableError) =>
      error.code === 'DMIO_ERR_INVALID_TABLE' && /holds something else/.test(error.reason));
    const fresh = devicePool({ origin: ORIGIN_SECTORS, cache: CACHE_SECTORS });
    await (await openTableText(TABLE, fresh.open)).close();
    await assert.rejects(openTableText(TABLE.replace(' 4096 0', ' 2048 0'), fresh.open),
      (error: TableError) => /block size mismatch/.test(error.reason));
    const meta = peek(fresh.ram('cache'), 0, 8);
    new DataView(meta.buffer).setBigUint64(24, 5n, true); // superblock seq 5
    writeEntry(meta, 0, 16, 2);
    writeEntry(meta, 1, 16, 2);
    poke(fresh.ram('cache'), 0, meta);
    await assert.rejects(openTableText(TABLE, fresh.open), (error: TableError) =>
      /two identical entries for sector 16/.test(error.reason));
    for (const [text, reason] of [
      ['0 8 writecache p origin cache 4096 0', /persistent memory/],
      ['0 8 writecache s origin cache 1000 0', /invalid block size/],
      ['0 8 writecache s origin cache 4096 3 high_watermark 10', /does not match/],
      ['0 8 writecache s origin cache 4096 4 high_watermark 10 low_watermark 20', /at least low_watermark/],
      ['0 8 writecache s origin cache 4096 2 max_age 100', /not supported/],
    ] as const) {
      await assert.rejects(openTableText(`${text}\n`, fresh.open), (error: TableError) => reason.test(error.reason));
    }
  });

  test('random writes, FUA, discards, reads and flushes agree with a model; writeback leaves the origin alone right', async () => {
    await fc.assert(fc.asyncProperty(
      fc.array(fc.record({
        kind: fc.constantFrom('write', 'write', 'write', 'fua', 'read', 'flush', 'discard'),
        block: fc.integer({ min: 0, max: ORIGIN_SECTORS / 8 - 1 }),
        blocks: fc.integer({ min: 1, max: 6 }),
        value: fc.integer({ min: 1, max: 255 }),
      }), { minLength: 1, maxLength: 60 }),
      fc.constantFrom('', ' 4 high_watermark 20 low_watermark 10', ' 2 autocommit_blocks 3'),
      async (operations, options) => {
        const pool = devicePool({ origin: ORIGIN_SECTORS, cache: CACHE_SECTORS });
        const model = new Uint8Array(ORIGIN_SECTORS * 512);
        const text = TABLE.replace(' 4096 0\n', options === '' ? ' 4096 0\n' : ` 4096${options}\n`);
        const table = await openTableText(text, pool.open);
        // A discarded block reads as zeros (the RAM origin discarded it) or, when it was under
        // writeback at the time, as before: the first read settles which.
        const discarded = new Map<number, Uint8Array>();
        const settle = (data: Uint8Array, firstBlock: number): void => {
          for (let index = 0; index < data.length / BLOCK; index += 1) {
            const old = discarded.get(firstBlock + index);
            if (old === undefined) continue;
            const got = data.subarray(index * BLOCK, (index + 1) * BLOCK);
            const at = (firstBlock + index) * BLOCK;
            if (got.every((byte) => byte === 0)) model.fill(0, at, at + BLOCK);
            else assert.ok(Buffer.from(got).equals(Buffer.from(old)), `discarded block ${firstBlock + index}`);
            discarded.delete(firstBlock + index);
          }
        };
        try {
          for (const { kind, block: first, blocks: wanted, value } of operations) {
            const blocks = Math.min(wanted, ORIGIN_SECTORS / 8 - first);
            const sector = first * 8;
            if (kind === 'flush') {
              assert.equal(await submitted(table, deviceRequest('write', 0, 0, [], { preflush: true })), null);
            } else if (kind === 'read') {
              const data = await readBlocks(table, sector, blocks);
              settle(data, first);
              assert.ok(Buffer.from(data).equals(Buffer.from(model.subarray(sector * 512, (sector + blocks * 8) * 512))),
                `read blocks ${first}+${blocks}`);
            } else if (kind === 'discard') {
              for (let index = first; index < first + blocks; index += 1) {
                if (!discarded.has(index)) discarded.set(index, model.slice(index * BLOCK, (index + 1) * BLOCK));
              }
              assert.equal(await submitted(table, deviceRequest('discard', sector, blocks * 8)), null);
            } else {
              for (let index = first; index < first + blocks; index += 1) discarded.delete(index);
              model.fill(value, sector * 512, (sector + blocks * 8) * 512);
              assert.equal(await submitted(table, deviceRequest('write', sector, blocks * 8, [block(value, blocks)],
                { fua: kind === 'fua' })), null);
            }
          }
          const all = await readBlocks(table, 0, ORIGIN_SECTORS / 8);
          settle(all, 0);
          assert.ok(Buffer.from(all).equals(Buffer.from(model)), 'every block reads back');
          await cacheOf(table).writeBackAll();
          assert.match(formatTableReport(table, 'status')[0] as string, / writecache 0 63 63 0 /);
        } finally {
          await table.close();
        }
        assert.ok(Buffer.from(peek(pool.ram('origin'), 0, ORIGIN_SECTORS)).equals(Buffer.from(model)),
          'the origin alone holds the data');
      },
    ), { numRuns: 30 });
  });

  test('writeback starts at the high watermark and stops past the low one', async () => {
    const pool = devicePool({ origin: 8192, cache: 4096 });
    const table = await openTableText('0 8192 writecache s origin cache 4096 2 pause_writeback 0\n', pool.open);
    try {
      // 509 blocks: writeback starts when free <= 255 (50 %) and stops when free > 280 (45 %).
      for (let index = 0; index < 300; index += 1) {
        assert.equal(await submitted(table, deviceRequest('write', index * 8, 8, [block(index % 250 + 1)])), null);
      }
      const deadline = performance.now() + 5000;
      while (cacheOf(table).writebackBlocks > 0 || cacheOf(table).freeBlocks < 281) {
        assert.ok(performance.now() < deadline, formatTableReport(table, 'status')[0]);
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      assert.equal(cacheOf(table).freeBlocks, 281);
      const written = peek(pool.ram('origin'), 0, 8);
      assert.ok(written.every((byte) => byte === 1), 'the oldest blocks went back first');
    } finally {
      await table.close();
    }
  });

  test('a crash keeps every flushed block and loses what was not committed', async () => {
    const pool = devicePool({ origin: ORIGIN_SECTORS, cache: CACHE_SECTORS });
    const text = `0 ${ORIGIN_SECTORS} writecache s origin cache 4096 2 autocommit_time 3600000\n`;
    const table = await openTableText(text, pool.open);
    assert.equal(await submitted(table, deviceRequest('write', 0, 16, [block(1, 2)])), null);
    assert.equal(await submitted(table, deviceRequest('write', 0, 0, [], { preflush: true })), null);
    const seqAfterFlush = new DataView(peek(pool.ram('cache'), 0, 8).buffer).getBigUint64(24, true);
    assert.equal(seqAfterFlush, 1n, 'one commit raised the superblock seq by one');
    assert.equal(await submitted(table, deviceRequest('write', 8, 8, [block(2)])), null); // in place
    assert.equal(await submitted(table, deviceRequest('write', 64, 8, [block(3)])), null); // new, uncommitted
    const crashed = devicePool({ origin: ORIGIN_SECTORS, cache: CACHE_SECTORS });
    for (const name of ['origin', 'cache']) poke(crashed.ram(name), 0, peek(pool.ram(name), 0, pool.ram(name).sizeSectors));
    await table.close();
    const reopened = await openTableText(text, crashed.open);
    try {
      const back = await readBlocks(reopened, 0, 9);
      assert.ok(back.subarray(0, BLOCK).every((byte) => byte === 1), 'flushed block 0 survives');
      // Block 1 was overwritten in place after the flush: either version is allowed.
      assert.ok(back.subarray(BLOCK, 2 * BLOCK).every((byte) => byte === 1 || byte === 2));
      assert.ok(back.subarray(8 * BLOCK).every((byte) => byte === 0), 'the uncommitted write is lost');
      const entries = peek(crashed.ram('cache'), 0, 8);
      assert.ok(entries.subarray(64 + 16 * 2, 64 + 16 * 63).every((byte) => byte === 0xff),
        'uncommitted slots read back as all ones after replay');
    } finally {
      await reopened.close();
    }
  });
});
