// Tests the local backend on real regular files: on the disk-backed tmp directory (ext4 here)
// and on tmpfs (/dev/shm), whose refusal of FALLOC_FL_ZERO_RANGE exercises the zero cascade
// for real. Most behaviour runs twice, through `submit` and through `submitSync`, so the two
// paths are held to the same results.

import assert from 'node:assert/strict';
import {
  closeSync, existsSync, ftruncateSync, openSync, readFileSync, statSync, writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { describe, test, type TestContext } from 'node:test';
import { isDmIoError, type IoError } from '../errors.js';
import { allocAligned } from '../memory/aligned.js';
import type { DeviceRequest } from './block-device.js';
import { type FileDevice, openFileDevice } from './file-device.js';
import { IoUringEngine } from './file-ring.js';
import { defaultFileEngine } from './file-device.js';
import { tempDir } from '../../test/helpers/tmp.js';
import {
  allZero, deviceRequest, pattern, splitInto, submitted,
} from '../../test/helpers/requests.js';

/** The default engine's ring for buffered or O_DIRECT devices; undefined where there is none. */
function deviceRing(direct: boolean): ReturnType<IoUringEngine['ring']> {
  const engine = defaultFileEngine();
  return engine instanceof IoUringEngine ? engine.ring(direct) : undefined;
}

const MIB = 1024 * 1024;

type Runner = (device: FileDevice, request: DeviceRequest) => Promise<IoError | null>;

const RUNNERS: ReadonlyArray<readonly [string, Runner]> = [
  ['submit', submitted],
  ['submitSync', (device, request) => {
    const submitSync = device.submitSync;
    assert.ok(submitSync !== undefined);
    return Promise.resolve(submitSync.call(device, request));
  }],
];

async function openTemp(
  t: TestContext, sizeBytes: number, parent?: string,
  extra: Parameters<typeof openFileDevice>[1] = {},
): Promise<{ device: FileDevice; path: string }> {
  const directory = await tempDir(t, parent === undefined ? {} : { parent });
  const path = join(directory, 'disk.img');
  const device = await openFileDevice(path, { create: { sizeBytes }, ...extra });
  t.after(() => device.close());
  return { device, path };
}

function fileBytes(path: string, offsetBytes: number, lengthBytes: number): Uint8Array {
  return Uint8Array.from(readFileSync(path).subarray(offsetBytes, offsetBytes + lengthBytes));
}

for (const [mode, run] of RUNNERS) {
  describe(`file device via ${mode}`, () => {
    test('one-segment round trip lands at the right offset of the file', async (t) => {
      const { device, path } = await openTemp(t, 4 * MIB);
      assert.equal(device.kind, 'file');
      assert.equal(device.sizeSectors, 8192);
      const data = pattern(8192, 1);
      assert.equal(await run(device, deviceRequest('write', 100, 16, [data])), null);
      assert.deepEqual(fileBytes(path, 100 * 512, 8192), data);
      const back = new Uint8Array(8192);
      assert.equal(await run(device, deviceRequest('read', 100, 16, [back])), null);
      assert.deepEqual(back, data);
      assert.equal(device.stats.writes, 1);
      // `submit` reads through dmio's io_uring where the kernel has one, else inline from the
      // page cache (preadv2 RWF_NOWAIT); the blocking form with a plain read.
      const viaRing = mode === 'submit' && deviceRing(false) !== undefined ? 1 : 0;
      const inline = mode === 'submit' ? 1 - viaRing : 0;
      assert.equal(device.stats.ringTransfers, viaRing);
      assert.equal(device.stats.inlineReads, inline);
      assert.equal(device.stats.reads, 1, "inline and ring reads count as reads too");
    });

    test('2000 segments cross IOV_MAX: two vectored calls each way', async (t) => {
      const { device, path } = await openTemp(t, 4 * MIB);
      const data = pattern(2000 * 512, 2);
      const writeSegments = splitInto(data, new Array<number>(2000).fill(512));
      assert.equal(await run(device, deviceRequest('write', 8, 2000, writeSegments)), null);
      assert.equal(device.stats.writes, 2, 'split at 1024 buffers');
      assert.deepEqual(fileBytes(path, 8 * 512, data.length), data);
      const back = new Uint8Array(data.length);
      const readSegments = splitInto(back, new Array<number>(2000).fill(512));
      assert.equal(await run(device, deviceRequest('read', 8, 2000, readSegments)), null);
      assert.equal(device.stats.reads, 2);
      assert.deepEqual(back, data);
    });

    test('segments of uneven lengths keep their order', async (t) => {
      const { device } = await openTemp(t, MIB);
      const lengths = [1, 511, 1024, 7, 3065, 512];
      const data = pattern(5120, 3);
      assert.equal(await run(device, deviceRequest('write', 0, 10, splitInto(data, lengths))),
        null);
      const back = new Uint8Array(5120);
      assert.equal(await run(device, deviceRequest('read', 0, 10, [back])), null);
      assert.deepEqual(back, data);
    });

    test('a request crossing the end fails whole with EIO and writes nothing', async (t) => {
      const { device, path } = await openTemp(t, MIB);
      const before = readFileSync(path);
      const statsBefore = { ...device.stats };
      const error = await run(device, deviceRequest('write', 2040, 16, [pattern(8192, 4)]));
      assert.ok(error !== null && isDmIoError(error, 'DMIO_ERR_IO'));
      assert.equal(error.errno, 'EIO');
      assert.equal(error.sector, 2040);
      assert.equal(error.countSectors, 16);
      assert.deepEqual(readFileSync(path), before);
      assert.deepEqual({ ...device.stats }, statsBefore, 'no syscall was issued');
      const beyond = await run(device, deviceRequest('read', 5000, 1, [new Uint8Array(512)]));
      assert.equal(beyond?.errno, 'EIO');
      const lastBlock = pattern(4096, 5);
      assert.equal(await run(device, deviceRequest('write', 2040, 8, [lastBlock])), null);
      assert.deepEqual(fileBytes(path, 2040 * 512, 4096), lastBlock);
    });

    test('discard punches a hole: blocks are freed and the range reads zeros', async (t) => {
      const { device, path } = await openTemp(t, 8 * MIB);
      assert.equal(await run(device, deviceRequest('write', 0, 16384, [pattern(8 * MIB, 6)],
        { fua: true })), null);
      const blocksBefore = statSync(path).blocks;
      assert.equal(await run(device, deviceRequest('discard', 2048, 8192)), null);
      const blocksAfter = statSync(path).blocks;
      assert.ok(blocksAfter <= blocksBefore - 8192, `${blocksBefore} -> ${blocksAfter}`);
      assert.equal(device.stats.discards, 1);
      const back = new Uint8Array(4 * MIB);
      assert.equal(await run(device, deviceRequest('read', 2048, 8192, [back])), null);
      assert.ok(allZero(back));
      assert.equal(statSync(path).size, 8 * MIB, 'KEEP_SIZE');
    });

    test('write-zeroes on the disk filesystem uses ZERO_RANGE and reads zeros', async (t) => {
      const { device, path } = await openTemp(t, 2 * MIB);
      assert.equal(await run(device, deviceRequest('write', 0, 4096, [pattern(2 * MIB, 7)])), null);
      assert.equal(await run(device, deviceRequest('write-zeroes', 1000, 1000)), null);
      assert.equal(device.stats.zeroRanges, 1);
      assert.equal(device.stats.refusals, 0);
      assert.ok(allZero(fileBytes(path, 1000 * 512, 1000 * 512)));
      assert.equal(fileBytes(path, 999 * 512, 512)[511], pattern(2 * MIB, 7)[1000 * 512 - 1]);
      assert.notEqual(fileBytes(path, 2000 * 512, 1)[0], 0, 'bytes after the range are kept');
    });

    test('tmpfs refuses ZERO_RANGE: the cascade drops it once and punches instead', async (t) => {
      const { device, path } = await openTemp(t, 2 * MIB, '/dev/shm');
      assert.deepEqual(device.methods.zeroes, ['zero-range', 'punch-hole', 'write']);
      assert.equal(await run(device, deviceRequest('write', 0, 4096, [pattern(2 * MIB, 8)])), null);
      assert.equal(await run(device, deviceRequest('write-zeroes', 8, 64)), null);
      assert.equal(device.stats.refusals, 1);
      assert.equal(device.stats.zeroPunches, 1);
      assert.equal(device.stats.zeroRanges, 0);
      assert.deepEqual(device.methods.zeroes, ['punch-hole', 'write']);
      assert.equal(await run(device, deviceRequest('write-zeroes', 200, 8)), null);
      assert.equal(device.stats.refusals, 1, 'a refused method is not tried again');
      assert.equal(device.stats.zeroPunches, 2);
      assert.ok(allZero(fileBytes(path, 8 * 512, 64 * 512)));
      assert.ok(allZero(fileBytes(path, 200 * 512, 8 * 512)));
      assert.notEqual(fileBytes(path, 72 * 512, 1)[0], 0);
    });

    test('concurrent write-zeroes all refused at once disable the method once', async (t) => {
      const { device, path } = await openTemp(t, 2 * MIB, '/dev/shm');
      assert.equal(await run(device, deviceRequest('write', 0, 4096, [pattern(2 * MIB, 15)])),
        null);
      const outcomes = await Promise.all(Array.from({ length: 8 }, (_unused, index) =>
        run(device, deviceRequest('write-zeroes', index * 256, 128))));
      assert.ok(outcomes.every((error) => error === null));
      assert.equal(device.stats.refusals, 1);
      assert.equal(device.stats.zeroPunches, 8);
      for (let index = 0; index < 8; index += 1) {
        assert.ok(allZero(fileBytes(path, index * 256 * 512, 128 * 512)));
        assert.notEqual(fileBytes(path, (index * 256 + 128) * 512, 1)[0], 0);
      }
    });

    test('with fallocate disabled, write-zeroes writes zeros from the shared buffer', async (t) => {
      const { device, path } = await openTemp(t, 24 * MIB, undefined,
        { disableMethods: ['zero-range', 'punch-hole'] });
      assert.deepEqual(device.methods.zeroes, ['write']);
      assert.equal(await run(device, deviceRequest('write', 0, 8, [pattern(4096, 9)])), null);
      // 20 MiB + 512 bytes: 21 views of the 1 MiB zero buffer, 16 per call: 2 calls.
      const countSectors = 20 * 2048 + 1;
      assert.equal(await run(device, deviceRequest('write-zeroes', 4, countSectors)), null);
      assert.equal(device.stats.zeroWrites, 2);
      assert.ok(allZero(fileBytes(path, 4 * 512, countSectors * 512)));
      assert.notEqual(fileBytes(path, 3 * 512, 1)[0], 0);
      assert.notEqual(statSync(path).blocks, 0);
    });

    test('preflush and FUA issue real fdatasyncs; a pure flush issues only that', async (t) => {
      const { device } = await openTemp(t, MIB);
      assert.equal(await run(device, deviceRequest('write', 0, 8, [pattern(4096, 10)],
        { fua: true })), null);
      assert.equal(device.stats.fdatasyncs, 1);
      assert.equal(await run(device, deviceRequest('write', 8, 8, [pattern(4096, 11)],
        { preflush: true, fua: true })), null);
      assert.equal(device.stats.fdatasyncs, 3);
      assert.equal(await run(device, deviceRequest('write', 0, 0, [], { preflush: true })), null);
      assert.equal(device.stats.fdatasyncs, 4);
      assert.equal(device.stats.writes, 2, 'the pure flush wrote nothing');
      assert.equal(await run(device, deviceRequest('write-zeroes', 0, 8, [], { fua: true })),
        null);
      assert.equal(device.stats.fdatasyncs, 5);
      assert.equal(await run(device, deviceRequest('write', 0, 8, [pattern(4096, 12)])), null);
      assert.equal(device.stats.fdatasyncs, 5, 'no flag, no flush');
    });

    test('a read-only device reads but refuses writes with EROFS', async (t) => {
      const { path } = await openTemp(t, MIB);
      writeFileSync(path, pattern(MIB, 13));
      const device = await openFileDevice(path, { readOnly: true });
      t.after(() => device.close());
      assert.equal(device.readOnly, true);
      const back = new Uint8Array(512);
      assert.equal(await run(device, deviceRequest('read', 1, 1, [back])), null);
      assert.deepEqual(back, pattern(MIB, 13).subarray(512, 1024));
      for (const op of ['write', 'discard', 'write-zeroes'] as const) {
        const segments = op === 'write' ? [new Uint8Array(512)] : [];
        assert.equal((await run(device, deviceRequest(op, 0, 1, segments)))?.errno, 'EROFS');
      }
      assert.deepEqual(readFileSync(path), Buffer.from(pattern(MIB, 13)));
      assert.equal(await run(device, deviceRequest('write', 0, 0, [], { preflush: true })), null);
    });

    test('a closed device fails requests with EBADF', async (t) => {
      const { device } = await openTemp(t, MIB);
      await device.close();
      assert.equal(device.closed, true);
      const error = await run(device, deviceRequest('read', 0, 1, [new Uint8Array(512)]));
      assert.equal(error?.errno, 'EBADF');
    });
  });
}

describe('file device options and sizes', () => {
  test('create extends an existing file; the size is whole sectors', async (t) => {
    const directory = await tempDir(t);
    const path = join(directory, 'odd.img');
    writeFileSync(path, new Uint8Array(1000).fill(1));
    const small = await openFileDevice(path);
    assert.equal(small.sizeSectors, 1, '1000 bytes hold one whole sector');
    await small.close();
    const grown = await openFileDevice(path, { create: { sizeBytes: 1 * MIB } });
    assert.equal(grown.sizeSectors, 2048);
    assert.equal(statSync(path).size, MIB);
    assert.equal(readFileSync(path)[999], 1, 'existing data kept');
    await grown.close();
    const kept = await openFileDevice(path, { create: { sizeBytes: 512 } });
    assert.equal(kept.sizeSectors, 2048, 'create never shrinks');
    await kept.close();
  });

  test('limits of a buffered regular file', async (t) => {
    const { device } = await openTemp(t, MIB);
    assert.deepEqual({ ...device.limits }, {
      logicalBlockBytes: 512,
      physicalBlockBytes: device.limits.physicalBlockBytes,
      maxSectorsPerRequest: 2048,
      maxSegmentsPerRequest: 256,
      maxDiscardSectors: 2 * 1024 * 1024,
      maxWriteZeroesSectors: 2 * 1024 * 1024,
      memoryAlignmentBytes: 0,
      flush: true,
      fua: true,
    });
    assert.equal(device.canBlock, true);
  });

  test('a refused discard method turns discard off: limit 0, EOPNOTSUPP, no syscall', async (t) => {
    const { device } = await openTemp(t, MIB, undefined, { disableMethods: ['punch-hole'] });
    assert.equal(device.limits.maxDiscardSectors, 0);
    assert.equal(device.methods.discard, null);
    assert.deepEqual(device.methods.zeroes, ['zero-range', 'write']);
    const error = await submitted(device, deviceRequest('discard', 0, 8));
    assert.equal(error?.errno, 'EOPNOTSUPP');
    assert.equal(device.stats.discards, 0);
  });

  test('open errors are OpenError with the errno and path', async (t) => {
    const directory = await tempDir(t);
    const cases: Array<[string, Parameters<typeof openFileDevice>[1], string]> = [
      [join(directory, 'missing.img'), {}, 'ENOENT'],
      [join(directory, 'missing', 'deeper.img'), { create: { sizeBytes: 512 } }, 'ENOENT'],
      [directory, {}, 'EISDIR'],
      [directory, { readOnly: true }, 'EISDIR'],
      ['/dev/null', {}, 'ENOTBLK'],
    ];
    for (const [path, options, errno] of cases) {
      await assert.rejects(openFileDevice(path, options), (error: unknown) => {
        assert.ok(isDmIoError(error, 'DMIO_ERR_OPEN_FAILED'), String(error));
        assert.equal((error as unknown as { errno: string }).errno, errno, path);
        assert.equal((error as unknown as { path: string }).path, path);
        return true;
      });
    }
    assert.equal(existsSync(join(directory, 'missing.img')), false);
  });

  test('bad options are argument errors, thrown before anything is opened', async (t) => {
    const directory = await tempDir(t);
    const path = join(directory, 'never.img');
    const cases: Array<[unknown, unknown, string]> = [
      ['', {}, 'DMIO_ERR_INVALID_ARG_TYPE'],
      [path, { direct: 'yes' }, 'DMIO_ERR_INVALID_ARG_TYPE'],
      [path, { create: { sizeBytes: -1 } }, 'DMIO_ERR_OUT_OF_RANGE'],
      [path, { create: { sizeBytes: 1000 } }, 'DMIO_ERR_MISALIGNED'],
      [path, { create: { sizeBytes: 512 }, readOnly: true }, 'DMIO_ERR_INVALID_ARG_VALUE'],
      [path, { disableMethods: ['write'] }, 'DMIO_ERR_INVALID_ARG_VALUE'],
    ];
    for (const [badPath, options, code] of cases) {
      await assert.rejects(
        openFileDevice(badPath as string, options as Parameters<typeof openFileDevice>[1]),
        (error: unknown) => isDmIoError(error, code as 'DMIO_ERR_OUT_OF_RANGE'));
    }
    assert.equal(existsSync(path), false);
  });

  test('close is idempotent and waits for requests in flight', async (t) => {
    const { device, path } = await openTemp(t, 4 * MIB);
    const completions: Array<IoError | null> = [];
    for (let index = 0; index < 16; index += 1) {
      device.submit(deviceRequest('write', index * 256, 256, [pattern(128 * 1024, index)]),
        (error) => completions.push(error));
    }
    const first = device.close();
    assert.equal(device.closed, true, 'closed as soon as close() began');
    assert.equal(device.close(), first, 'the same promise');
    await first;
    assert.equal(completions.length, 16);
    assert.ok(completions.every((error) => error === null));
    assert.deepEqual(fileBytes(path, 15 * 256 * 512, 128 * 1024), pattern(128 * 1024, 15));
  });

  test('O_DIRECT on the disk filesystem: aligned memory works, unaligned fails', async (t) => {
    const { device, path } = await openTemp(t, MIB, undefined, { direct: true });
    assert.equal(device.direct, true);
    const alignmentBytes = device.limits.memoryAlignmentBytes;
    assert.ok(alignmentBytes >= device.limits.logicalBlockBytes && alignmentBytes >= 512);
    const aligned = allocAligned(64 * 1024);
    aligned.set(pattern(64 * 1024, 14));
    assert.equal(await submitted(device, deviceRequest('write', 128, 128, [aligned])), null);
    const back = allocAligned(64 * 1024);
    assert.equal(await submitted(device, deviceRequest('read', 128, 128, [back])), null);
    assert.deepEqual(back, pattern(64 * 1024, 14));
    assert.deepEqual(fileBytes(path, 128 * 512, 64 * 1024), pattern(64 * 1024, 14));
    // Read where data is allocated: a hole is zero-filled without DMA and passes unaligned.
    const unaligned = allocAligned(8192).subarray(1, 4097);
    const error = await submitted(device, deviceRequest('read', 128, 8, [unaligned]));
    assert.equal(error?.errno, 'EINVAL', 'O_DIRECT needs bounce buffers for unaligned memory');
    const writeError = await submitted(device, deviceRequest('write', 0, 8, [unaligned]));
    assert.equal(writeError?.errno, 'EINVAL');
  });

  test('a file that shrinks under the device reads EIO, not a short buffer', async (t) => {
    const { device, path } = await openTemp(t, MIB);
    const fd = openSync(path, 'r+');
    try {
      // Another writer truncates the file behind the device's back.
      ftruncateSync(fd, 4096);
    } finally {
      closeSync(fd);
    }
    const error = await submitted(device, deviceRequest('read', 100, 8, [new Uint8Array(4096)]));
    assert.equal(error?.errno, 'EIO');
    // Half a request is still there: the first call comes back short, the next reads 0 bytes.
    const readsBefore = device.stats.reads;
    const halfError = await submitted(device, deviceRequest('read', 4, 8, [new Uint8Array(4096)]));
    assert.equal(halfError?.errno, 'EIO');
    assert.equal(device.stats.reads, readsBefore + 2, 'a short call, then a 0-byte call: EIO');
    const syncError = device.submitSync(deviceRequest('read', 4, 8, [new Uint8Array(4096)]));
    assert.equal(syncError?.errno, 'EIO');
  });
});

describe('creating files with preallocation', () => {
  test('preallocate gives a new file its blocks; without it the file is a hole', async (t) => {
    const directory = await tempDir(t);
    const sizeBytes = 8 * 1024 * 1024;
    for (const preallocate of [true, false]) {
      const path = join(directory, `${preallocate ? 'full' : 'sparse'}.img`);
      const device = await openFileDevice(path, { create: { sizeBytes, preallocate } });
      await device.close();
      const stats = statSync(path);
      assert.equal(stats.size, sizeBytes);
      if (preallocate) assert.ok(stats.blocks * 512 >= sizeBytes, `${stats.blocks} blocks`);
      else assert.ok(stats.blocks * 512 < sizeBytes / 8, `${stats.blocks} blocks`);
      // Either way the new range reads as zeros.
      assert.ok(readFileSync(path).every((byte) => byte === 0));
    }
  });

  test('extending a file preallocates only the added range and keeps the data', async (t) => {
    const directory = await tempDir(t);
    const path = join(directory, 'grow.img');
    writeFileSync(path, Buffer.alloc(4096, 0x7e));
    const device = await openFileDevice(path,
      { create: { sizeBytes: 1024 * 1024, preallocate: true } });
    assert.equal(device.sizeSectors, 2048);
    await device.close();
    const bytes = readFileSync(path);
    assert.equal(bytes.length, 1024 * 1024);
    assert.ok(bytes.subarray(0, 4096).every((byte) => byte === 0x7e));
    assert.ok(bytes.subarray(4096).every((byte) => byte === 0));
    assert.ok(statSync(path).blocks * 512 >= 1024 * 1024);
  });

  test('a non-boolean preallocate is a typed error and creates nothing', async (t) => {
    const path = join(await tempDir(t), 'never.img');
    await assert.rejects(openFileDevice(path, {
      create: { sizeBytes: 4096, preallocate: 'yes' as unknown as boolean },
    }), (error) => isDmIoError(error, 'DMIO_ERR_INVALID_ARG_TYPE'));
    assert.equal(existsSync(path), false);
  });
});
