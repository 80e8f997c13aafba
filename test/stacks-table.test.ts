// Tables: the text grammar, every refusal (with its code, line and reason, and nothing left
// open), the striped worked example, dmsetup-style status and table strings, flakey's clock and
// features, delay's held counts, a region crossing two segments (one completion, one error
// bit), flush and FUA reaching every device, limits, nested `table:` files and cycles, and
// `openDevice('table:PATH')`.

import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import {
  createRamDevice, dmIo, dmIoClientCreate, dmIoClientDestroy, formatTableReport, isDmIoError,
  openDevice, openTable, openTableFile, openTableText, parseDeviceSpec, TableError,
  type BlockDevice, type RamDevice,
} from '../src/index.js';
import { createFaultDevice, type FaultDevice } from '../src/testing.js';
import { stripeLocation } from '../src/stacks/striped-target.js';
import { parseTableText, splitArgs } from '../src/stacks/table-text.js';
import { peek, poke } from './helpers/devices.js';
import { deviceRequest, submitted } from './helpers/requests.js';
import { tempDir } from './helpers/tmp.js';

/** An opener over named RAM (or fault) devices that records what it opened. */
function fakeOpener(sizes: Record<string, number>, wrap?: (ram: RamDevice) => BlockDevice): {
  open: (spec: string) => Promise<BlockDevice>; opened: BlockDevice[];
} {
  const opened: BlockDevice[] = [];
  const open = (spec: string): Promise<BlockDevice> => {
    const sectors = sizes[spec];
    if (sectors === undefined) return Promise.reject(new Error(`no device ${spec}`));
    const ram = createRamDevice({ sizeBytes: sectors * 512, name: spec });
    const device = wrap === undefined ? ram : wrap(ram);
    opened.push(device);
    return Promise.resolve(device);
  };
  return { open, opened };
}

async function refused(text: string, code: string, line: number, reason: RegExp,
  sizes: Record<string, number> = { a: 64, b: 64 }): Promise<void> {
  const { open, opened } = fakeOpener(sizes);
  await assert.rejects(openTableText(text, open), (error: unknown) => {
    assert.ok(error instanceof TableError, String(error));
    assert.equal(error.code, code);
    assert.equal(error.line, line);
    assert.match(error.reason, reason);
    assert.match(error.message, new RegExp(`^${code}: <text>${line > 0 ? `:${line}` : ''}: `));
    return true;
  });
  assert.ok(opened.every((device) => device.closed), 'nothing is left open');
}

describe('table text', () => {
  test('comments, blank lines, backslash escapes and strict numbers', () => {
    const lines = parseTableText('# header\n\n0 8 linear a\\ b 0 # trailing\n8 8 zero\\#x\n', 't');
    assert.equal(lines.length, 2);
    assert.deepEqual(lines[0]?.args, ['a b', '0']);
    assert.equal(lines[0]?.lineNumber, 3);
    assert.equal(lines[1]?.target, 'zero#x');
    assert.deepEqual(splitArgs(' a\t b  c\\'), ['a', 'b', 'c\\']);
  });

  test('each malformed table is refused with its line, reason and code, nothing opened', async () => {
    const cases: Array<[string, number, RegExp]> = [
      ['', 0, /no segments/],
      ['# only a comment\n', 0, /no segments/],
      ['8 8 zero\n', 1, /gap in table/],
      ['0 8 zero\n16 8 zero\n', 2, /gap in table/],
      ['0 8 zero\n4 8 zero\n', 2, /overlap/],
      ['0 0 zero\n', 1, /zero-length/],
      ['0 8x zero\n', 1, /invalid length "8x"/],
      ['0 -8 zero\n', 1, /invalid length/],
      ['0 8\n', 1, /START LENGTH TARGET/],
      ['0 8 zero\n8 8 mirrorish a 0\n', 2, /unknown target type "mirrorish"/],
      ['0 8 zero 1\n', 1, /no arguments/],
      ['0 8 error x\n', 1, /no arguments/],
      ['0 8 linear a\n', 1, /argument count/],
      ['0 8 linear a 1x\n', 1, /invalid linear device sector/],
      ['0 8 striped 2 4 a 0\n', 1, /expected 2 DEV OFFSET pairs/],
      ['0 9 striped 2 4 a 0 b 0\n', 1, /not divisible by number of stripes/],
      ['0 12 striped 2 4 a 0 b 0\n', 1, /not divisible by chunk size/],
      ['0 8 striped 0 4\n', 1, /stripe count 0/],
      ['0 8 striped 2 0 a 0 b 0\n', 1, /chunk size 0/],
      ['0 8 flakey a 0 0 0\n', 1, /interval is zero/],
      ['0 8 flakey a 0 1 1 1 drop_writes error_writes\n', 1, /does not match/],
      ['0 8 flakey a 0 1 1 2 drop_writes error_writes\n', 1, /incompatible/],
      ['0 8 flakey a 0 1 1 2 error_reads error_reads\n', 1, /duplicated/],
      ['0 8 flakey a 0 1 1 1 sideways\n', 1, /unrecognised feature/],
      ['0 8 flakey a 0 1 1 5 corrupt_bio_byte 1 x 0 0\n', 1, /direction/],
      ['0 8 flakey a 0 1 1 6 error_reads corrupt_bio_byte 1 r 0 0\n', 1, /incompatible with read corruption/],
      ['0 8 delay a 0\n', 1, /exactly 3, 6 or 9/],
      ['0 8 delay a 0 10 b 0\n', 1, /exactly 3, 6 or 9/],
    ];
    for (const [text, line, reason] of cases) {
      await refused(text, 'DMIO_ERR_INVALID_TABLE', line, reason);
    }
  });

  test('a device too small for its extent is refused after opening, and closed again', async () => {
    await refused('0 8 linear a 0\n8 64 linear b 8\n', 'DMIO_ERR_INVALID_TABLE', 2,
      /device b too small for target/);
    await refused('0 64 striped 2 8 a 0 b 40\n', 'DMIO_ERR_INVALID_TABLE', 1, /device b too small/);
    await refused('0 8 delay a 0 0 b 60 5\n', 'DMIO_ERR_INVALID_TABLE', 1, /device b too small/);
  });

  test('a MAJOR:MINOR that names no block device is refused with its line', async () => {
    await refused('0 8 zero\n8 8 linear 4095:1048575 0\n', 'DMIO_ERR_INVALID_TABLE', 2,
      /device lookup failed: no block device 4095:1048575/);
  });

  test('a segment off the logical block of a 4096-byte device is refused', async () => {
    const opened: BlockDevice[] = [];
    const open = (): Promise<BlockDevice> => {
      const device = createRamDevice({ sizeBytes: 64 * 512, limits: { logicalBlockBytes: 4096 } });
      opened.push(device);
      return Promise.resolve(device);
    };
    await assert.rejects(openTableText('0 4 linear a 0\n', open),
      (error: TableError) => error.code === 'DMIO_ERR_INVALID_TABLE' && /aligned/.test(error.reason));
    await assert.rejects(openTableText('0 8 zero\n8 8 linear a 8\n16 4 zero\n', open),
      (error: TableError) => error.line === 3 && /aligned/.test(error.reason));
    assert.ok(opened.every((device) => device.closed));
  });
});

describe('targets', () => {
  test('striped: the worked example maps sector 1000 to stripe 1 sector 360', () => {
    assert.deepEqual(stripeLocation(1000, 3, 128), { stripe: 1, sector: 360 });
    assert.deepEqual(stripeLocation(0, 3, 128), { stripe: 0, sector: 0 });
    assert.deepEqual(stripeLocation(128 * 3, 3, 128), { stripe: 0, sector: 128 });
  });

  test('status and table strings as dmsetup prints them', async () => {
    const { open } = fakeOpener({ a: 4096, b: 4096 });
    const table = await openTableText([
      '0 2048 linear a 2048', '2048 1024 striped 2 256 a 0 b 0', '3072 8 zero', '3080 8 error',
      '3088 8 flakey a 0 5 1', '3096 8 flakey b 0 5 1 5 corrupt_bio_byte 32 r 1 0',
      '3104 8 delay a 0 0 b 0 400',
    ].join('\n'), open);
    try {
      assert.deepEqual(formatTableReport(table, 'table'), [
        '0 2048 linear a 2048', '2048 1024 striped 2 256 a 0 b 0', '3072 8 zero ',
        '3080 8 error ', '3088 8 flakey a 0 5 1 2 error_reads error_writes',
        '3096 8 flakey b 0 5 1 5 corrupt_bio_byte 32 r 1 0', '3104 8 delay a 0 0 b 0 400',
      ]);
      assert.deepEqual(formatTableReport(table, 'status'), [
        '0 2048 linear ', '2048 1024 striped 2 a b 1 AA', '3072 8 zero ', '3080 8 error ',
        '3088 8 flakey ', '3096 8 flakey ', '3104 8 delay 0 0 0',
      ]);
    } finally {
      await table.close();
    }
  });

  test('striped: an error on one stripe shows D for it only', async () => {
    let faulty: FaultDevice | null = null;
    const { open } = fakeOpener({ a: 64, b: 64, c: 64 }, (ram) => {
      if (ram.name !== 'b') return ram;
      faulty = createFaultDevice(ram, { ranges: [{ sector: 0, countSectors: 64, ops: ['read'] }] });
      return faulty;
    });
    const table = await openTableText('0 48 striped 3 8 a 0 b 0 c 0\n', open);
    try {
      assert.ok(faulty !== null);
      const error = await submitted(table, deviceRequest('read', 0, 24, [new Uint8Array(24 * 512)]));
      assert.equal(error?.errno, 'EIO');
      assert.equal(error?.device, table.name);
      assert.deepEqual(formatTableReport(table, 'status'), ['0 48 striped 3 a b c 1 ADA']);
    } finally {
      await table.close();
    }
  });

  test('zero: reads zeros, drops writes and discards, refuses write-zeroes', async () => {
    const table = await openTable('0 16 zero\n');
    try {
      const data = new Uint8Array(16 * 512).fill(7);
      assert.equal(await submitted(table, deviceRequest('write', 0, 16, [data])), null);
      assert.equal(await submitted(table, deviceRequest('read', 0, 16, [data])), null);
      assert.ok(data.every((byte) => byte === 0));
      assert.equal(await submitted(table, deviceRequest('discard', 0, 16)), null);
      assert.equal(table.limits.maxWriteZeroesSectors, 0);
    } finally {
      await table.close();
    }
  });

  test('flakey: up then down on its clock; drop_writes keeps old data; corrupt_bio_byte on reads', async () => {
    let nowMs = 0;
    const { open, opened } = fakeOpener({ a: 64, b: 64 });
    const table = await openTableText(
      '0 16 flakey a 0 1 1\n16 16 flakey b 0 1 1 6 drop_writes corrupt_bio_byte 32 r 1 0\n',
      open, { now: () => nowMs });
    try {
      const [a, b] = opened as [RamDevice, RamDevice];
      poke(a, 0, new Uint8Array(512).fill(3));
      poke(b, 0, new Uint8Array(512).fill(4));
      const read = (sector: number): Promise<{ error: unknown; data: Uint8Array }> => {
        const data = new Uint8Array(512);
        return submitted(table, deviceRequest('read', sector, 1, [data])).then((error) => ({ error, data }));
      };
      assert.equal((await read(0)).error, null);
      nowMs = 1500; // down
      assert.equal(((await read(0)).error as { errno?: string } | null)?.errno, 'EIO');
      const corrupted = await read(16);
      assert.equal(corrupted.error, null);
      assert.equal(corrupted.data[31], 1);
      assert.equal(corrupted.data[30], 4);
      assert.equal(await submitted(table, deviceRequest('write', 16, 1, [new Uint8Array(512).fill(9)])), null);
      assert.ok(peek(b, 0, 1).every((byte) => byte === 4), 'a dropped write leaves the old data');
      nowMs = 2100; // up again
      assert.equal((await read(0)).error, null);
      assert.equal((await read(16)).data[31], 4);
    } finally {
      await table.close();
    }
  });

  test('delay: writes held for their delay on their own device; status counts held requests', async () => {
    const { open, opened } = fakeOpener({ a: 64, b: 64 });
    const table = await openTableText('0 8 delay a 0 0 b 8 300\n', open);
    try {
      const [, b] = opened as [RamDevice, RamDevice];
      const started = performance.now();
      const write = submitted(table, deviceRequest('write', 0, 1, [new Uint8Array(512).fill(5)]));
      await new Promise((resolve) => setTimeout(resolve, 20));
      assert.deepEqual(formatTableReport(table, 'status'), ['0 8 delay 0 1 0']);
      assert.equal(await submitted(table, deviceRequest('read', 0, 1, [new Uint8Array(512)])), null);
      assert.equal(await write, null);
      assert.ok(performance.now() - started >= 290, 'held for its delay');
      assert.ok(peek(b, 8, 1).every((byte) => byte === 5), 'written to the write class device');
      assert.deepEqual(formatTableReport(table, 'status'), ['0 8 delay 0 0 0']);
    } finally {
      await table.close();
    }
  });

  test('delay and flakey tables read back in canonical form', async () => {
    const { open } = fakeOpener({ a: 64, b: 64, c: 64 });
    const table = await openTableText([
      '0 8 delay a 0 10 b 8 20', '8 8 delay a 0 10 b 8 20 c 16 30', '16 8 flakey a 0 3 4 0',
      '24 8 flakey b 0 3 4 3 random_read_corrupt 1000 error_writes',
    ].join('\n'), open);
    try {
      assert.deepEqual(formatTableReport(table, 'table'), [
        '0 8 delay a 0 10 b 8 20', '8 8 delay a 0 10 b 8 20 c 16 30',
        '16 8 flakey a 0 3 4 2 error_reads error_writes',
        '24 8 flakey b 0 3 4 3 error_writes random_read_corrupt 1000',
      ]);
    } finally {
      await table.close();
    }
  });

  test('delay: closing releases held requests at once', async () => {
    const { open } = fakeOpener({ a: 64 });
    const table = await openTableText('0 8 delay a 0 60000\n', open);
    const write = submitted(table, deviceRequest('write', 0, 1, [new Uint8Array(512)]));
    await new Promise((resolve) => setTimeout(resolve, 10));
    const started = performance.now();
    await table.close();
    assert.equal(await write, null);
    assert.ok(performance.now() - started < 5000);
  });
});

describe('table device', () => {
  test('a dm-io region crossing two segments: right pieces, one completion, one error bit', async () => {
    const { open, opened } = fakeOpener({ a: 64 });
    const table = await openTableText('0 8 linear a 16\n8 8 error\n16 8 linear a 0\n', open);
    const client = dmIoClientCreate();
    try {
      const [a] = opened as [RamDevice];
      const data = new Uint8Array(24 * 512);
      for (let index = 0; index < data.length; index += 1) data[index] = index % 251;
      let calls = 0;
      const result = await new Promise<{ errorBits: bigint }>((resolve) => {
        dmIo({ op: 'write', mem: { type: 'vm', data }, client,
          notify: { fn: (errorBits) => { calls += 1; resolve({ errorBits }); } } },
        [{ device: table, sector: 0, count: 24 }]);
      });
      assert.equal(result.errorBits, 1n);
      await new Promise((resolve) => setTimeout(resolve, 10));
      assert.equal(calls, 1);
      assert.ok(Buffer.from(peek(a, 16, 8)).equals(data.subarray(0, 8 * 512)));
      assert.ok(Buffer.from(peek(a, 0, 8)).equals(data.subarray(16 * 512)));
      const ok = await dmIo({ op: 'write', mem: { type: 'vm', data }, client },
        [{ device: table, sector: 0, count: 8 }, { device: table, sector: 16, count: 8 }]);
      assert.equal(ok.errorBits, 0n);
    } finally {
      await dmIoClientDestroy(client);
      await table.close();
    }
  });

  test('flush reaches every device before the data; FUA goes with the data', async () => {
    const { open, opened } = fakeOpener({ a: 64, b: 64, c: 64 }, (ram) => createFaultDevice(ram));
    const table = await openTableText('0 8 linear a 0\n8 16 striped 2 8 b 0 c 0\n24 8 zero\n', open);
    try {
      const devices = opened as FaultDevice[];
      assert.equal(await submitted(table, deviceRequest('write', 0, 0, [], { preflush: true })), null);
      for (const device of devices) {
        assert.deepEqual(device.trace.map((entry) => [entry.countSectors, entry.flags.preflush]), [[0, true]]);
        device.clearTrace();
      }
      assert.equal(await submitted(table, deviceRequest('write', 4, 8, [new Uint8Array(4096)],
        { preflush: true, fua: true })), null);
      const [a, b, c] = devices as [FaultDevice, FaultDevice, FaultDevice];
      assert.deepEqual(a.trace.map((entry) => [entry.sector, entry.countSectors, entry.flags.preflush,
        entry.flags.fua]), [[0, 0, true, false], [4, 4, false, true]]);
      assert.deepEqual(b.trace.map((entry) => [entry.sector, entry.countSectors, entry.flags.fua]),
        [[0, 0, false], [0, 4, true]]);
      assert.deepEqual(c.trace.map((entry) => entry.countSectors), [0]);
    } finally {
      await table.close();
    }
  });

  test('limits are the most restrictive of the parts', async () => {
    const opened: BlockDevice[] = [];
    const limits: Record<string, object> = {
      a: { maxSectorsPerRequest: 64, physicalBlockBytes: 512 },
      b: { logicalBlockBytes: 4096, maxDiscardSectors: 0, memoryAlignmentBytes: 4096 },
    };
    const open = (spec: string): Promise<BlockDevice> => {
      const device = createRamDevice({ sizeBytes: 256 * 512, name: spec, limits: limits[spec] ?? {} });
      opened.push(device);
      return Promise.resolve(device);
    };
    const table = await openTableText('0 64 linear a 0\n64 64 linear b 0\n', open);
    try {
      assert.equal(table.limits.logicalBlockBytes, 4096);
      assert.equal(table.limits.physicalBlockBytes, 4096);
      assert.equal(table.limits.maxSectorsPerRequest, 64);
      assert.equal(table.limits.maxDiscardSectors, 0);
      assert.equal(table.limits.memoryAlignmentBytes, 4096);
      assert.equal(table.kind, 'table');
      assert.equal(table.sizeSectors, 128);
    } finally {
      await table.close();
    }
    assert.ok(opened.every((device) => device.closed));
  });

  test('requests past the end, to a closed table, or writes to a read-only table fail whole', async () => {
    const table = await openTable('0 8 zero\n', { readOnly: true });
    assert.equal((await submitted(table, deviceRequest('read', 4, 8, [new Uint8Array(4096)])))?.errno, 'EIO');
    assert.equal((await submitted(table, deviceRequest('write', 0, 1, [new Uint8Array(512)])))?.errno, 'EROFS');
    await table.close();
    assert.equal((await submitted(table, deviceRequest('read', 0, 1, [new Uint8Array(512)])))?.errno, 'EBADF');
  });
});

describe('table: files', () => {
  test('nested tables open through openDevice; a cycle is refused naming the line', async (t) => {
    const dir = await tempDir(t);
    const inner = join(dir, 'inner.table');
    const outer = join(dir, 'outer.table');
    await writeFile(inner, '0 16 linear mem:1M 8\n');
    await writeFile(outer, `# outer\n0 16 linear table:${inner} 0\n16 16 zero\n`);
    assert.deepEqual(parseDeviceSpec(`table:${outer}`), { kind: 'table', path: outer });
    const device = await openDevice(`table:${outer}`);
    try {
      assert.equal(device.sizeSectors, 32);
      assert.equal(device.kind, 'table');
      const data = new Uint8Array(16 * 512).fill(0x5a);
      assert.equal(await submitted(device, deviceRequest('write', 0, 16, [data])), null);
      const back = new Uint8Array(16 * 512);
      assert.equal(await submitted(device, deviceRequest('read', 0, 16, [back])), null);
      assert.ok(back.every((byte) => byte === 0x5a));
    } finally {
      await device.close();
    }
    const a = join(dir, 'a.table');
    const b = join(dir, 'b.table');
    await writeFile(a, `0 8 linear mem:4K 0\n8 8 linear table:${b} 0\n`);
    await writeFile(b, `# b\n0 8 linear table:${a} 0\n`);
    await assert.rejects(openDevice(`table:${a}`), (error: unknown) => {
      assert.ok(error instanceof TableError);
      assert.equal(error.code, 'DMIO_ERR_TABLE_CYCLE');
      assert.equal(error.source, b);
      assert.equal(error.line, 2);
      return true;
    });
    const self = join(dir, 'self.table');
    await writeFile(self, `0 8 linear table:${self} 0\n`);
    await assert.rejects(openDevice(`table:${self}`), (error: unknown) =>
      isDmIoError(error, 'DMIO_ERR_TABLE_CYCLE'));
  });

  test('a refused nested table closes the devices the outer one had opened', async (t) => {
    const dir = await tempDir(t);
    const bad = join(dir, 'bad.table');
    const outer = join(dir, 'outer.table');
    await writeFile(bad, '0 8 linear x 0\n8 8 striped 3 8 x 0\n');
    await writeFile(outer, `0 8 linear x 0\n8 8 linear table:${bad} 0\n`);
    const { open, opened } = fakeOpener({ x: 64 });
    await assert.rejects(openTableFile(outer, open), (error: TableError) =>
      error.source === bad && error.line === 2 && /not divisible/.test(error.reason));
    assert.equal(opened.length, 1);
    assert.ok(opened.every((device) => device.closed));
    await assert.rejects(openDevice(`table:${join(dir, 'missing.table')}`),
      (error: unknown) => isDmIoError(error, 'DMIO_ERR_OPEN_FAILED'));
  });
});
