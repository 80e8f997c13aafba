// Mirror (dm-raid1) in the library: argument refusals; the disk log's bytes; resync copies the
// default leg to the others (legs identical, k/N reaching N/N) while writes go on, a write to
// the region being copied waiting for it; nosync; a leg failing mid-run (status D, I/O going on,
// every byte still readable); read retry on another leg (R); a crash (state snapshotted without
// closing) reopened with the disk log resyncs only the regions that were dirty.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import {
  formatTableReport, openTableText, TableError, type BlockDevice, type DeviceDone, type DeviceRequest,
  type TableDevice,
} from '../src/index.js';
import type { MirrorTarget } from '../src/stacks/mirror-target.js';
import { peek, poke } from './helpers/devices.js';
import { deviceRequest, submitted } from './helpers/requests.js';
import { devicePool } from './stacks-helpers.js';

function mirrorOf(table: TableDevice): MirrorTarget {
  return table.targets[0] as MirrorTarget;
}

function fill(lengthBytes: number, value: number): Uint8Array {
  return new Uint8Array(lengthBytes).fill(value);
}

describe('mirror', () => {
  test('bad mirror lines are refused with their reason', async () => {
    const { open } = devicePool({ tiny: 1 });
    const cases: Array<[string, RegExp]> = [
      ['0 64 mirror lazy 1 8 2 a 0 b 0', /unknown dirty log type/],
      ['0 64 mirror core 1 12 2 a 0 b 0', /invalid region size 12/],
      ['0 64 mirror core 1 128 2 a 0 b 0', /invalid region size 128/],
      ['0 64 mirror core 3 8 sync x 2 a 0 b 0', /takes 1 or 2 arguments/],
      ['0 64 mirror core 2 8 often 2 a 0 b 0', /unknown log argument/],
      ['0 64 mirror core 1 8 1 a 0', /leg count must be 2 to 9/],
      ['0 64 mirror core 1 8 3 a 0 b 0', /expected 3 DEV OFFSET pairs/],
      ['0 64 mirror core 1 8 2 a 0 b 0 1 keep_log', /keep_log requires handle_errors/],
      ['0 64 mirror core 1 8 2 a 0 b 0 1 handle_errors extra', /too many mirror arguments/],
      ['0 64 mirror core 1 8 2 a 0 b 0 1 mirror_it', /unrecognised feature/],
      ['0 64 mirror disk 2 tiny 8 2 a 0 b 0', /log device tiny too small/],
    ];
    for (const [text, reason] of cases) {
      await assert.rejects(openTableText(`${text}\n`, open), (error: unknown) => {
        assert.ok(error instanceof TableError, String(error));
        assert.equal(error.line, 1);
        assert.match(error.reason, reason);
        return true;
      });
    }
  });

  test('the disk log is the kernel layout; a clean close leaves every region clean', async () => {
    const pool = devicePool({ log: 8 });
    poke(pool.ram('a'), 0, fill(64 * 512, 9));
    const table = await openTableText('0 2048 mirror disk 2 log 64 2 a 0 b 0\n', pool.open);
    assert.deepEqual(formatTableReport(table, 'table'), ['0 2048 mirror disk 2 log 64 2 a 0 b 0']);
    await mirrorOf(table).resyncIdle();
    assert.deepEqual(formatTableReport(table, 'status'), ['0 2048 mirror 2 a b 32/32 1 AA 3 disk log A']);
    await table.close();
    const bytes = peek(pool.ram('log'), 0, 8);
    assert.deepEqual([...bytes.subarray(0, 16)], [0x72, 0x52, 0x69, 0x4d, 2, 0, 0, 0, 32, 0, 0, 0, 0, 0, 0, 0]);
    assert.ok(bytes.subarray(16, 1024).every((byte) => byte === 0));
    assert.deepEqual([...bytes.subarray(1024, 1028)], [0xff, 0xff, 0xff, 0xff], 'all 32 regions clean');
    assert.ok(bytes.subarray(1028).every((byte) => byte === 0), 'padding is zero');
    assert.ok(Buffer.from(peek(pool.ram('b'), 0, 64)).equals(Buffer.from(fill(64 * 512, 9))));
    const again = await openTableText('0 2048 mirror disk 2 log 64 2 a 0 b 0\n', pool.open);
    assert.deepEqual(formatTableReport(again, 'status'), ['0 2048 mirror 2 a b 32/32 1 AA 3 disk log A']);
    assert.equal(mirrorOf(again).resyncedRegions, 0);
    await again.close();
  });

  test('nosync is in sync at once; core without it resyncs every region', async () => {
    const pool = devicePool();
    const quick = await openTableText('0 1024 mirror core 2 128 nosync 2 a 0 b 0\n', pool.open);
    assert.deepEqual(formatTableReport(quick, 'status'), ['0 1024 mirror 2 a b 8/8 1 AA 1 core']);
    assert.deepEqual(formatTableReport(quick, 'table'), ['0 1024 mirror core 2 128 nosync 2 a 0 b 0']);
    await quick.close();
    const full = await openTableText('0 1024 mirror core 1 128 2 a 0 b 0 1 handle_errors\n', pool.open);
    await mirrorOf(full).resyncIdle();
    assert.equal(mirrorOf(full).resyncedRegions, 8);
    assert.deepEqual(formatTableReport(full, 'table'), ['0 1024 mirror core 1 128 2 a 0 b 0 1 handle_errors']);
    await full.close();
  });

  test('writes during resync: every byte reads back, legs identical afterwards', async () => {
    await fc.assert(fc.asyncProperty(
      fc.array(fc.record({
        sector: fc.integer({ min: 0, max: 2047 }), count: fc.integer({ min: 1, max: 300 }),
        value: fc.integer({ min: 1, max: 255 }), read: fc.boolean(),
      }), { minLength: 1, maxLength: 20 }),
      fc.integer({ min: 2, max: 3 }),
      async (operations, legCount) => {
        const pool = devicePool();
        const legNames = ['a', 'b', 'c'].slice(0, legCount);
        poke(pool.ram('a'), 0, fill(2048 * 512, 0x33));
        const model = fill(2048 * 512, 0x33);
        const table = await openTableText(`0 2048 mirror core 1 64 ${legCount} ` +
          `${legNames.map((name) => `${name} 0`).join(' ')}\n`, pool.open);
        try {
          await Promise.all(operations.map(async ({ sector, count: wanted, value, read }) => {
            const count = Math.min(wanted, 2048 - sector);
            if (read) {
              const data = new Uint8Array(count * 512);
              assert.equal(await submitted(table, deviceRequest('read', sector, count, [data])), null);
              return;
            }
            model.fill(value, sector * 512, (sector + count) * 512);
            assert.equal(await submitted(table, deviceRequest('write', sector, count, [fill(count * 512, value)])), null);
          }));
          // Concurrent writes to overlapping ranges may land in either order; only
          // non-overlapping operations are compared with the model, all legs with each other.
          await mirrorOf(table).resyncIdle();
          const first = Buffer.from(peek(pool.ram('a'), 0, 2048));
          for (const name of legNames.slice(1)) {
            assert.ok(first.equals(Buffer.from(peek(pool.ram(name), 0, 2048))), `leg ${name} equals leg a`);
          }
          const back = new Uint8Array(2048 * 512);
          assert.equal(await submitted(table, deviceRequest('read', 0, 2048, [back])), null);
          assert.ok(first.equals(Buffer.from(back)));
          const overlapping = (index: number, mine: { sector: number; count: number }): boolean =>
            operations.some((other, j) => j !== index && !other.read &&
              other.sector < mine.sector + mine.count && mine.sector < other.sector + other.count);
          operations.forEach((operation, index) => {
            if (operation.read || overlapping(index, operation)) return;
            const count = Math.min(operation.count, 2048 - operation.sector);
            assert.ok(Buffer.from(back.subarray(operation.sector * 512, (operation.sector + count) * 512))
              .equals(Buffer.from(model.subarray(operation.sector * 512, (operation.sector + count) * 512))));
          });
          assert.match(formatTableReport(table, 'status')[0] as string, / 32\/32 1 A+ 1 core$/);
        } finally {
          await table.close();
        }
      },
    ), { numRuns: 25 });
  });

  test('a leg failing mid-run is marked D; I/O goes on; reads retry on another leg (R)', async () => {
    const pool = devicePool({ log: 8 });
    const table = await openTableText('0 2048 mirror disk 2 log 64 2 a 0 b 0 1 handle_errors\n', pool.open);
    try {
      await mirrorOf(table).resyncIdle();
      assert.equal(await submitted(table, deviceRequest('write', 0, 64, [fill(64 * 512, 1)])), null);
      pool.fault('b').setFaults({ down: true });
      assert.equal(await submitted(table, deviceRequest('write', 64, 64, [fill(64 * 512, 2)])), null);
      assert.match(formatTableReport(table, 'status')[0] as string, / 2 a b 31\/32 1 AD 3 disk log A$/);
      assert.equal(await submitted(table, deviceRequest('write', 128, 64, [fill(64 * 512, 3)])), null);
      const back = new Uint8Array(192 * 512);
      assert.equal(await submitted(table, deviceRequest('read', 0, 192, [back])), null);
      assert.ok(back.subarray(0, 64 * 512).every((byte) => byte === 1));
      assert.ok(back.subarray(64 * 512, 128 * 512).every((byte) => byte === 2));
      assert.ok(back.subarray(128 * 512).every((byte) => byte === 3));
      pool.fault('a').setFaults({ down: true });
      const lost = await submitted(table, deviceRequest('write', 0, 8, [fill(4096, 4)]));
      assert.equal(lost?.errno, 'EIO', 'all legs failed is an error');
    } finally {
      await table.close();
    }
  });

  test('keep_log: a degraded write with a failed log is EIO; without a failure it succeeds', async () => {
    const pool = devicePool({ log: 8 });
    const table = await openTableText('0 2048 mirror disk 2 log 64 2 a 0 b 0 2 handle_errors keep_log\n',
      pool.open);
    try {
      await mirrorOf(table).resyncIdle();
      assert.deepEqual(formatTableReport(table, 'table'),
        ['0 2048 mirror disk 2 log 64 2 a 0 b 0 2 handle_errors keep_log']);
      pool.fault('b').setFaults({ down: true });
      assert.equal(await submitted(table, deviceRequest('write', 0, 8, [fill(4096, 1)])), null,
        'the log still works: the write is kept on a');
      pool.fault('log').setFaults({ down: true });
      const lost = await submitted(table, deviceRequest('write', 64 * 5, 8, [fill(4096, 2)]));
      assert.equal(lost?.errno, 'EIO');
      assert.match(formatTableReport(table, 'status')[0] as string, / 1 A[DF] 3 disk log D$/);
    } finally {
      await table.close();
    }
  });

  test('a failed read is retried on the other leg and the leg shows R', async () => {
    const pool = devicePool();
    const table = await openTableText('0 1024 mirror core 2 128 nosync 2 a 0 b 0\n', pool.open);
    try {
      assert.equal(await submitted(table, deviceRequest('write', 0, 16, [fill(16 * 512, 6)])), null);
      pool.fault('a').setFaults({ ranges: [{ sector: 0, countSectors: 8, ops: ['read'] }] });
      const back = new Uint8Array(8 * 512);
      assert.equal(await submitted(table, deviceRequest('read', 0, 8, [back])), null);
      assert.ok(back.every((byte) => byte === 6));
      assert.match(formatTableReport(table, 'status')[0] as string, / 1 RA 1 core$/);
    } finally {
      await table.close();
    }
  });

  test('a region\'s bit is 0 on the log device before any leg sees a write to it', async () => {
    const pool = devicePool({ log: 8 });
    const events: string[] = [];
    const open = async (spec: string): Promise<BlockDevice> => {
      const device = await pool.open(spec);
      return {
        ...device, name: device.name, sizeSectors: device.sizeSectors, readOnly: false,
        limits: device.limits, canBlock: false, get closed() { return device.closed; },
        close: () => device.close(),
        submit(request: DeviceRequest, done: DeviceDone) {
          if (request.op === 'write' && request.countSectors > 0) {
            const bit = spec === 'log' ? ((request.segments[0]?.[1024 + 1] ?? 0) >> 2) & 1 : -1;
            events.push(spec === 'log' ? `log bit ${bit}` : `${spec} ${request.sector}`);
          }
          device.submit(request, done);
        },
      } as BlockDevice;
    };
    const table = await openTableText('0 2048 mirror disk 2 log 64 2 a 0 b 0\n', open);
    try {
      await mirrorOf(table).resyncIdle();
      await new Promise((resolve) => setTimeout(resolve, 400)); // region 10 cleaned on disk
      events.length = 0;
      // Region 10 is bit 2 of bitmap byte 1.
      assert.equal(await submitted(table, deviceRequest('write', 10 * 64, 8, [fill(4096, 1)])), null);
      const firstLeg = events.findIndex((event) => event === 'a 640' || event === 'b 640');
      assert.ok(firstLeg > 0, events.join(', '));
      assert.equal(events.slice(0, firstLeg).filter((event) => event.startsWith('log')).pop(), 'log bit 0',
        events.join(', '));
      await new Promise((resolve) => setTimeout(resolve, 400));
      assert.equal(events.filter((event) => event.startsWith('log')).pop(), 'log bit 1',
        'cleaned again once the legs were flushed');
    } finally {
      await table.close();
    }
  });

  test('after a crash the disk log resyncs only the regions that were dirty', async () => {
    const pool = devicePool({ log: 8 });
    const text = '0 4096 mirror disk 2 log 64 2 a 0 b 0\n';
    const table = await openTableText(text, pool.open);
    await mirrorOf(table).resyncIdle();
    await new Promise((resolve) => setTimeout(resolve, 400)); // every region cleaned on disk
    // Writes to regions 3 and 40 complete; the "crash" comes before they are cleaned.
    assert.equal(await submitted(table, deviceRequest('write', 3 * 64, 8, [fill(4096, 7)])), null);
    assert.equal(await submitted(table, deviceRequest('write', 40 * 64 + 8, 8, [fill(4096, 8)])), null);
    const crashed = devicePool({ log: 8 });
    for (const name of ['a', 'b', 'log']) poke(crashed.ram(name), 0, peek(pool.ram(name), 0, pool.ram(name).sizeSectors));
    await table.close();
    // Make the legs differ in region 40, as a crash between the two leg writes could.
    poke(crashed.ram('b'), 40 * 64 + 8, fill(4096, 0));
    const reopened = await openTableText(text, crashed.open);
    try {
      assert.match(formatTableReport(reopened, 'status')[0] as string, / (62|63|64)\/64 /);
      await mirrorOf(reopened).resyncIdle();
      assert.equal(mirrorOf(reopened).resyncedRegions, 2);
      assert.ok(Buffer.from(peek(crashed.ram('a'), 0, 4096)).equals(Buffer.from(peek(crashed.ram('b'), 0, 4096))));
    } finally {
      await reopened.close();
    }
  });
});
