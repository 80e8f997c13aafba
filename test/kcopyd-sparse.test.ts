// Sparse copies in kcopyd (`options.sparse`): zero blocks and the source's extents are holes,
// and each destination does what its hole action says: 'skip' writes nothing there,
// 'write-zeroes' sends write-zeroes requests, 'write' writes the zeros. Checked on the requests
// each device saw (no write over a hole unless asked), on the bytes (a sparse copy reads back
// as the dense one), on real files (allocated blocks), against a model in a property test, and
// at the boundary (bad options refused with nothing submitted).

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import type {
  BlockDevice, DeviceExtent, DeviceRequest, ExtentsDone,
} from '../src/devices/block-device.js';
import { openFileDevice } from '../src/devices/file-device.js';
import { isDmIoError } from '../src/errors.js';
import { dmKcopydClientCreate, dmKcopydClientDestroy } from '../src/kcopyd/kcopyd.js';
import type { KcopydHoleAction } from '../src/kcopyd/sparse.js';
import { dmKcopydCopy, dmKcopydZero } from '../src/kcopyd/submit.js';
import { tempDir } from './helpers/tmp.js';
import { ProbeDevice, ramDevice, readBytes as readRam } from './kcopyd-helpers.js';
import { IoError } from '../src/errors.js';

const SECTOR = 512;

/** A probe over a fresh RAM device of `sectors`. */
function probe(sectors: number, name: string, limits = {}): ProbeDevice {
  return new ProbeDevice(ramDevice(sectors, name, limits));
}

/** The bytes of a probe's (or any) device, read through its inner RAM device. */
function readBytes(device: BlockDevice, sector: number, countSectors: number): Uint8Array {
  return readRam(device instanceof ProbeDevice ? device.inner : device, sector, countSectors);
}

/** A RAM device, filled with `bytes`, whose requests are logged and whose extents are given. */
class MappedSource extends ProbeDevice {
  readonly queries: Array<{ sector: number; countSectors: number }> = [];
  readonly #extents: readonly DeviceExtent[];

  constructor(bytes: Uint8Array, extents: readonly DeviceExtent[]) {
    super(filledRam(bytes));
    this.#extents = extents;
  }

  extents(sector: number, countSectors: number, done: ExtentsDone): void {
    this.queries.push({ sector, countSectors });
    const end = sector + countSectors;
    const answer = this.#extents.filter((extent) => extent.sector + extent.countSectors > sector &&
      extent.sector < end).map((extent) => {
      const start = Math.max(extent.sector, sector);
      return { ...extent, sector: start,
        countSectors: Math.min(extent.sector + extent.countSectors, end) - start };
    });
    setImmediate(done, null, answer);
  }
}

/** A logged RAM source holding `bytes`, with `extents` or (null) without any. */
function makeSource(bytes: Uint8Array, extents: readonly DeviceExtent[] | null): ProbeDevice {
  return extents === null ? new ProbeDevice(filledRam(bytes)) : new MappedSource(bytes, extents);
}

function filledRam(bytes: Uint8Array): BlockDevice {
  const device = ramDevice(bytes.length / SECTOR, 'source');
  writeAll(device, bytes);
  return device;
}

function writeAll(device: BlockDevice, bytes: Uint8Array): void {
  const request: DeviceRequest = {
    op: 'write', sector: 0, countSectors: bytes.length / SECTOR, segments: [bytes],
    flags: { sync: true, preflush: false, fua: false }, ioprio: 0,
  };
  const target = device instanceof ProbeDevice ? device.inner : device;
  assert.equal(target.submitSync?.(request), null);
}

/** 1 MiB: 64 KiB of data at 0 and at 512 KiB, the rest zeros. */
function sparseBytes(): Uint8Array {
  const bytes = new Uint8Array(1024 * 1024);
  for (const start of [0, 512 * 1024]) {
    for (let index = 0; index < 64 * 1024; index += 1) bytes[start + index] = (index % 251) + 1;
  }
  return bytes;
}

const DATA = (sector: number, countSectors: number): DeviceExtent =>
  ({ sector, countSectors, hole: false, zero: false });
const HOLE = (sector: number, countSectors: number): DeviceExtent =>
  ({ sector, countSectors, hole: true, zero: true });

/** The extents of `sparseBytes()`: data 0-128, hole to 1024, data 1024-1152, hole to 2048. */
const SPARSE_EXTENTS = [DATA(0, 128), HOLE(128, 896), DATA(1024, 128), HOLE(1152, 896)];

function writesOf(probe: ProbeDevice, op: DeviceRequest['op']): Array<[number, number]> {
  return probe.log.filter((entry) => entry.op === op)
    .map((entry) => [entry.sector, entry.sector + entry.countSectors]);
}

function covered(ranges: ReadonlyArray<[number, number]>): number {
  return ranges.reduce((sum, [start, end]) => sum + end - start, 0);
}

async function copy(
  source: BlockDevice, dests: BlockDevice[], sparse: unknown, subJobSectors = 256,
): Promise<Awaited<ReturnType<typeof dmKcopydCopy>>> {
  const kc = dmKcopydClientCreate({ subJobSectors });
  try {
    const count = source.sizeSectors;
    return await dmKcopydCopy(kc, { device: source, sector: 0, count },
      dests.map((device) => ({ device, sector: 0, count })), { sparse } as never);
  } finally {
    await dmKcopydClientDestroy(kc);
  }
}

describe('kcopyd sparse copies', () => {
  it('zero blocks found in chunks that were read: skip writes none, write-zeroes zeroes them', async () => {
    const bytes = sparseBytes();
    const source = makeSource(bytes, null);
    const skip = probe(2048, 'skip');
    const zeroes = probe(2048, 'zeroes');
    writeAll(zeroes, new Uint8Array(1024 * 1024).fill(0xee));
    const dense = probe(2048, 'dense');
    const result = await copy(source, [skip, zeroes, dense],
      { holes: ['skip', 'write-zeroes', 'write'] });
    assert.equal(result.writeErr, 0n);
    assert.deepEqual(result.writtenBytes, [bytes.length, bytes.length, bytes.length]);
    assert.equal(covered(writesOf(source, 'read')), 2048, 'without extents every chunk is read');
    assert.deepEqual(writesOf(skip, 'write'), [[0, 128], [1024, 1152]], 'data only');
    assert.deepEqual(writesOf(skip, 'write-zeroes'), []);
    assert.deepEqual(writesOf(zeroes, 'write'), [[0, 128], [1024, 1152]]);
    assert.equal(covered(writesOf(zeroes, 'write-zeroes')), 2048 - 256);
    assert.equal(covered(writesOf(dense, 'write')), 2048, "'write' writes every byte");
    for (const device of [skip, zeroes, dense]) {
      assert.deepEqual(readBytes(device, 0, 2048), bytes, device.name);
    }
  });

  it('the source extents spare the reads of hole chunks and the onChunkRead data is zeros', async () => {
    const bytes = sparseBytes();
    const source = new MappedSource(bytes, SPARSE_EXTENTS);
    const dest = probe(2048, 'dest');
    const kc = dmKcopydClientCreate({ subJobSectors: 256 });
    const seen = new Uint8Array(bytes.length).fill(0xaa);
    try {
      const result = await dmKcopydCopy(kc, { device: source, sector: 0, count: 2048 },
        [{ device: dest, sector: 0, count: 2048 }], {
          sparse: { holes: 'skip' },
          onChunkRead: (sector, countSectors, pages) => {
            let at = sector * SECTOR;
            for (const page of pages) {
              const take = Math.min(page.length, (sector + countSectors) * SECTOR - at);
              seen.set(page.subarray(0, take), at);
              at += take;
            }
          },
        });
      assert.equal(result.writeErr, 0n);
      assert.deepEqual(result.writtenBytes, [bytes.length]);
    } finally {
      await dmKcopydClientDestroy(kc);
    }
    assert.deepEqual(seen, bytes, 'onChunkRead saw every chunk, holes as zeros');
    // Chunks of 256 sectors: 0-256 and 1024-1280 are mixed, and only their data runs are read;
    // the other six are holes, not read at all.
    assert.deepEqual(writesOf(source, 'read'), [[0, 128], [1024, 1152]]);
    assert.deepEqual(writesOf(dest, 'write'), [[0, 128], [1024, 1152]]);
    assert.ok(source.queries.length >= 1 && source.queries.length <= 8, 'bounded lookups');
    assert.deepEqual(readBytes(dest, 0, 2048), bytes);
  });

  it('a hole chunk goes to write-zeroes destinations as one request, and skips need no I/O', async () => {
    const bytes = new Uint8Array(256 * 1024);
    const source = new MappedSource(bytes, [HOLE(0, 512)]);
    const zeroes = probe(512, 'zeroes');
    writeAll(zeroes, new Uint8Array(bytes.length).fill(7));
    const skip = probe(512, 'skip');
    const result = await copy(source, [zeroes, skip], { holes: ['write-zeroes', 'skip'] }, 512);
    assert.equal(result.writeErr, 0n);
    assert.deepEqual(result.writtenBytes, [bytes.length, bytes.length]);
    assert.deepEqual(writesOf(source, 'read'), []);
    assert.deepEqual(writesOf(zeroes, 'write-zeroes'), [[0, 512]]);
    assert.deepEqual(skip.log, []);
    assert.deepEqual(readBytes(zeroes, 0, 512), bytes);
  });

  it('write-zeroes falls back to plain zeros on a device without write-zeroes', async () => {
    const bytes = sparseBytes();
    const source = new MappedSource(bytes, SPARSE_EXTENTS);
    const plain = probe(2048, 'plain', { maxWriteZeroesSectors: 0 });
    writeAll(plain, new Uint8Array(bytes.length).fill(3));
    const result = await copy(source, [plain], {});
    assert.equal(result.writeErr, 0n);
    assert.deepEqual(writesOf(plain, 'write-zeroes'), []);
    assert.equal(covered(writesOf(plain, 'write')), 2048);
    assert.deepEqual(readBytes(plain, 0, 2048), bytes);
  });

  it('a destination failing in one step is reported once, the others complete', async () => {
    const bytes = sparseBytes();
    const source = makeSource(bytes, null);
    const good = ramDevice(2048, 'good');
    const bad = probe(2048, 'bad');
    bad.submit = (request, done) => {
      if (request.op === 'write-zeroes' && request.sector >= 1152) {
        setImmediate(done, new IoError({ errno: 'EIO', syscall: 'write-zeroes', device: 'bad',
          sector: request.sector, countSectors: request.countSectors }));
      } else ProbeDevice.prototype.submit.call(bad, request, done);
    };
    const kc = dmKcopydClientCreate({ subJobSectors: 256 });
    try {
      const result = await dmKcopydCopy(kc, { device: source, sector: 0, count: 2048 },
        [{ device: good, sector: 0, count: 2048 }, { device: bad, sector: 0, count: 2048 }],
        { sparse: { holes: 'write-zeroes' }, dropFailedDestinations: true });
      assert.equal(result.writeErr, 0b10n);
      assert.equal(result.writtenBytes[0], bytes.length);
      assert.ok((result.writtenBytes[1] ?? 0) < bytes.length);
      assert.ok(result.writeErrors[1] !== undefined);
      assert.deepEqual(readBytes(good, 0, 2048), bytes);
    } finally {
      await dmKcopydClientDestroy(kc);
    }
  });

  it('holes from 512-byte extents are rounded in to a 4K destination\'s blocks, written whole', async () => {
    // Data in sectors 0-2 and 200-511: on a 4K destination, holes keep only whole blocks.
    const bytes = sparseBytes().subarray(0, 512 * SECTOR);
    bytes.fill(0, 3 * SECTOR, 200 * SECTOR);
    const source = new MappedSource(bytes, [DATA(0, 3), HOLE(3, 197), DATA(200, 312)]);
    for (const blockBytes of [4096, 0]) {
      const dest = probe(512, 'dest', { logicalBlockBytes: 4096 });
      writeAll(dest, new Uint8Array(bytes.length).fill(0xee));
      const result = await copy(source, [dest], { blockBytes });
      assert.equal(result.writeErr, 0n, String(result.writeErrors[0]));
      assert.deepEqual(result.writtenBytes, [bytes.length]);
      for (const [start, end] of [...writesOf(dest, 'write'), ...writesOf(dest, 'write-zeroes')]) {
        assert.ok(start % 8 === 0 && end % 8 === 0, `${start}-${end} is whole 4K blocks`);
      }
      assert.deepEqual(readBytes(dest, 0, 512), bytes);
    }
  });

  it('an extents answer that breaks its contract is believed only as far as it holds', async () => {
    // Real layout: data 0-64, hole 64-128, data 128-512.
    const bytes = sparseBytes().subarray(0, 512 * SECTOR);
    bytes.fill(0, 64 * SECTOR, 128 * SECTOR);
    const layout = [DATA(0, 64), HOLE(64, 64), DATA(128, 384)];
    const truthful = new MappedSource(bytes, layout);
    const answers: Record<string, (sector: number, countSectors: number, done: ExtentsDone) => void> = {
      'starting past the sector asked': (sector, _count, done) =>
        setImmediate(done, null, [HOLE(sector + 100, 28)]),
      'with a gap': (sector, countSectors, done) => setImmediate(done, null,
        [DATA(sector, 10), HOLE(sector + 20, 10), DATA(sector + 40, countSectors - 40)]),
      'overlapping': (sector, countSectors, done) => setImmediate(done, null,
        [DATA(sector, 64), HOLE(sector, countSectors)]),
      'twice': (sector, countSectors, done) => {
        truthful.extents(sector, countSectors, done);
        truthful.extents(sector, countSectors, done);
      },
      'then throwing': (sector, countSectors, done) => {
        truthful.extents(sector, countSectors, done);
        throw new Error('broken device');
      },
    };
    for (const [name, answer] of Object.entries(answers)) {
      const source = new MappedSource(bytes, layout);
      source.extents = answer;
      const dest = probe(512, 'dest');
      writeAll(dest, new Uint8Array(bytes.length).fill(0xee));
      const result = await copy(source, [dest], {}, 128);
      assert.equal(result.writeErr, 0n, name);
      assert.deepEqual(result.writtenBytes, [bytes.length], name);
      assert.deepEqual(readBytes(dest, 0, 512), bytes, name);
    }
  });

  it('a real sparse file copied to a new file keeps its holes (as cp --sparse=always)', async (t) => {
    const dir = await tempDir(t);
    const sourcePath = path.join(dir, 'source.img');
    const fd = fs.openSync(sourcePath, 'w');
    fs.ftruncateSync(fd, 64 * 1024 * 1024);
    for (const at of [0, 5, 17, 40, 63]) {
      fs.writeSync(fd, new Uint8Array(64 * 1024).fill(at + 1), 0, 64 * 1024, at * 1024 * 1024);
    }
    fs.closeSync(fd);
    const copyPath = path.join(dir, 'copy.img');
    const cpPath = path.join(dir, 'cp.img');
    const source = await openFileDevice(sourcePath, { readOnly: true });
    const dest = await openFileDevice(copyPath,
      { create: { sizeBytes: 64 * 1024 * 1024, preallocate: false } });
    try {
      const result = await copy(source, [dest], { holes: 'skip' }, 1024);
      assert.equal(result.writeErr, 0n);
    } finally {
      await source.close();
      await dest.close();
    }
    execFileSync('cp', ['--sparse=always', sourcePath, cpPath]);
    assert.ok(fs.readFileSync(copyPath).equals(fs.readFileSync(sourcePath)));
    const blocks = (file: string): number => fs.statSync(file).blocks * SECTOR;
    assert.ok(blocks(copyPath) <= blocks(cpPath) + 1024 * 1024,
      `dmio ${blocks(copyPath)} bytes allocated, cp ${blocks(cpPath)}`);
    assert.ok(blocks(copyPath) < 2 * 1024 * 1024, `${blocks(copyPath)} bytes allocated`);
  });

  it('property: a sparse copy reads back as the dense copy, whatever the holes and actions', async () => {
    const actionArb = fc.constantFrom<KcopydHoleAction>('skip', 'write-zeroes', 'write');
    await fc.assert(fc.asyncProperty(
      fc.array(fc.record({ zero: fc.boolean(), blocks: fc.integer({ min: 1, max: 24 }) }),
        { minLength: 1, maxLength: 12 }),
      fc.array(actionArb, { minLength: 1, maxLength: 3 }),
      fc.constantFrom(0, 512, 4096, 8192), fc.boolean(), fc.constantFrom(8, 24, 64),
      async (layout, actions, blockBytes, withExtents, subJobSectors) => {
        const totalSectors = layout.reduce((sum, run) => sum + run.blocks * 8, 0);
        const bytes = new Uint8Array(totalSectors * SECTOR);
        const extents: DeviceExtent[] = [];
        let at = 0;
        for (const run of layout) {
          const countSectors = run.blocks * 8;
          if (!run.zero) bytes.fill((at % 200) + 1, at * SECTOR, (at + countSectors) * SECTOR);
          extents.push(run.zero ? HOLE(at, countSectors) : DATA(at, countSectors));
          at += countSectors;
        }
        const source = makeSource(bytes, withExtents ? extents : null);
        const dests = actions.map((action, index) => {
          const device = probe(totalSectors, `d${index}`);
          // 'skip' promises the destination reads zeros already; the others start dirty.
          if (action !== 'skip') writeAll(device, new Uint8Array(bytes.length).fill(0x5a));
          return device;
        });
        const result = await copy(source, dests, { blockBytes, holes: actions }, subJobSectors);
        assert.equal(result.writeErr, 0n);
        assert.equal(result.readErr, false);
        dests.forEach((device, index) => {
          assert.deepEqual(result.writtenBytes[index], bytes.length);
          assert.deepEqual(readBytes(device, 0, totalSectors), bytes, device.name);
          if (actions[index] === 'skip' && (withExtents || blockBytes !== 0)) {
            const holeWrites = writesOf(device, 'write').filter(([start, end]) =>
              bytes.subarray(start * SECTOR, end * SECTOR).every((byte) => byte === 0));
            assert.deepEqual(holeWrites, [], 'no write of zeros only to a skipping destination');
          }
        });
      }), { numRuns: 60 });
  });

  it('bad sparse options are refused with nothing submitted', async () => {
    const source = makeSource(sparseBytes(), null);
    const dest = probe(2048, 'dest');
    const kc = dmKcopydClientCreate();
    try {
      const cases: unknown[] = [
        { blockBytes: 1000 }, { blockBytes: 3 * 4096 + 512 }, { blockBytes: -512 },
        { holes: 'punch' }, { holes: ['skip', 'skip'] }, { hole: 'skip' }, 'yes',
      ];
      for (const sparse of cases) {
        assert.throws(() => dmKcopydCopy(kc, { device: source, sector: 0, count: 2048 },
          [{ device: dest, sector: 0, count: 2048 }], { sparse } as never),
        (error: unknown) => isDmIoError(error) &&
          ((error as { argument?: string }).argument ?? '').startsWith('options.sparse'),
        JSON.stringify(sparse));
      }
      assert.throws(() => dmKcopydZero(kc, [{ device: dest, sector: 0, count: 8 }],
        { sparse: true } as never), (error: unknown) => isDmIoError(error));
      assert.deepEqual(source.log, []);
      assert.deepEqual(dest.log, []);
      assert.equal(kc.masterJobs, 0);
    } finally {
      await dmKcopydClientDestroy(kc);
    }
  });
});
