// Tests the local backend on real Linux block devices: loop devices over image files, attached
// with losetup for each test and always detached. Needs root; skipped elsewhere, failed in CI.
// Every expectation is checked against an independent source: sysfs read here, the image file
// read through the filesystem, or the kernel's own refusal. A block device reports no holes:
// its extents are all data, even over a sparse image.

import assert from 'node:assert/strict';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { describe, test, type TestContext } from 'node:test';
import { isDmIoError } from '../src/errors.js';
import { allocAligned } from '../src/memory/aligned.js';
import { BLOCK_MAX_SECTORS_PER_REQUEST } from '../src/devices/file-limits.js';
import { type FileDevice, openFileDevice } from '../src/devices/file-device.js';
import type { FileDeviceOptions } from '../src/devices/file-open.js';
import { requireLoopOrSkip, withLoopDevice, type LoopOptions } from './helpers/loop.js';
import { tempDir } from './helpers/tmp.js';
import { allZero, deviceRequest, pattern, submitted } from './helpers/requests.js';
import { extentsOf, writeSparseFile } from './helpers/extents.js';

const MIB = 1024 * 1024;
const IMAGE_BYTES = 16 * MIB;

/** Creates an image holding `pattern(IMAGE_BYTES, seed)`, attaches it, opens it, cleans up. */
async function withLoop(
  t: TestContext, loopOptions: LoopOptions, deviceOptions: FileDeviceOptions,
  fn: (device: FileDevice, imagePath: string, loopPath: string) => Promise<void>,
): Promise<void> {
  const imagePath = join(await tempDir(t), 'loop.img');
  writeFileSync(imagePath, pattern(IMAGE_BYTES, 1));
  await withLoopDevice(imagePath, loopOptions, async (loopPath) => {
    const device = await openFileDevice(loopPath, deviceOptions);
    try {
      await fn(device, imagePath, loopPath);
    } finally {
      await device.close();
    }
  });
}

function sysfsQueueNumber(loopPath: string, name: string): number {
  return Number(readFileSync(`/sys/block/${basename(loopPath)}/queue/${name}`, 'utf8').trim());
}

function imageBytes(imagePath: string, offsetBytes: number, lengthBytes: number): Uint8Array {
  return Uint8Array.from(readFileSync(imagePath).subarray(offsetBytes, offsetBytes + lengthBytes));
}

describe('file device on loop devices', () => {
  test('size comes from BLKGETSIZE64 although fstat says 0', async (t) => {
    if (!requireLoopOrSkip(t)) return;
    await withLoop(t, {}, {}, async (device, _imagePath, loopPath) => {
      assert.equal(statSync(loopPath).size, 0, 'fstat knows no size for block devices');
      assert.equal(device.kind, 'block');
      assert.equal(device.sizeSectors, IMAGE_BYTES / 512);
      assert.equal(device.limits.logicalBlockBytes, 512);
    });
  });

  test('limits come from the sysfs queue, capped', async (t) => {
    if (!requireLoopOrSkip(t)) return;
    await withLoop(t, {}, {}, async (device, _imagePath, loopPath) => {
      const maxSegments = sysfsQueueNumber(loopPath, 'max_segments');
      const maxSectorsKib = sysfsQueueNumber(loopPath, 'max_sectors_kb');
      const discardMaxBytes = sysfsQueueNumber(loopPath, 'discard_max_bytes');
      assert.match(device.queue?.queuePath ?? '', /^\/sys\/dev\/block\/7:\d+\/queue$/);
      assert.equal(device.limits.maxSegmentsPerRequest, Math.min(maxSegments, 256));
      assert.equal(device.limits.maxSectorsPerRequest,
        Math.min(maxSectorsKib * 2, BLOCK_MAX_SECTORS_PER_REQUEST));
      assert.equal(device.limits.maxDiscardSectors,
        Math.min(Math.floor(discardMaxBytes / 512), 2 * 1024 * 1024));
      assert.equal(device.limits.maxWriteZeroesSectors, 2 * 1024 * 1024);
      assert.equal(device.limits.memoryAlignmentBytes, 0, 'buffered');
      assert.deepEqual(device.methods, { discard: 'blkdiscard', zeroes: ['blkzeroout', 'write'] });
    });
  });

  test('4096-byte logical blocks: BLKSSZGET, size in whole blocks, misaligned zeroout EINVAL',
    async (t) => {
      if (!requireLoopOrSkip(t)) return;
      await withLoop(t, { sectorSize: 4096 }, {}, async (device, imagePath) => {
        assert.equal(device.limits.logicalBlockBytes, 4096);
        assert.equal(device.limits.physicalBlockBytes, 4096);
        assert.equal(device.sizeSectors % 8, 0);
        assert.equal(device.limits.maxSectorsPerRequest % 8, 0);
        const error = await submitted(device, deviceRequest('write-zeroes', 1, 8));
        assert.equal(error?.errno, 'EINVAL', 'the kernel refuses a range not in whole blocks');
        assert.deepEqual(device.methods.zeroes, ['blkzeroout', 'write'], 'EINVAL is no refusal');
        assert.deepEqual(imageBytes(imagePath, 512, 4096), pattern(IMAGE_BYTES, 1).subarray(512,
          4608));
        assert.equal(await submitted(device, deviceRequest('write-zeroes', 8, 8)), null);
        assert.equal(device.stats.zeroOuts, 1);
      });
    });

  test('round trip through the block device lands in the image', async (t) => {
    if (!requireLoopOrSkip(t)) return;
    await withLoop(t, {}, {}, async (device, imagePath) => {
      const data = pattern(64 * 1024, 2);
      assert.equal(await submitted(device, deviceRequest('write', 300, 128, [data],
        { fua: true })), null);
      assert.equal(device.stats.fdatasyncs, 1);
      const back = new Uint8Array(64 * 1024);
      assert.equal(device.submitSync(deviceRequest('read', 300, 128, [back])), null);
      assert.deepEqual(back, data);
      assert.deepEqual(imageBytes(imagePath, 300 * 512, data.length), data);
      const pastEnd = await submitted(device, deviceRequest('read', device.sizeSectors - 1, 2,
        [new Uint8Array(1024)]));
      assert.equal(pastEnd?.errno, 'EIO');
    });
  });

  test('BLKDISCARD frees the image blocks and the range reads zeros', async (t) => {
    if (!requireLoopOrSkip(t)) return;
    await withLoop(t, {}, {}, async (device, imagePath) => {
      const blocksBefore = statSync(imagePath).blocks;
      assert.equal(await submitted(device, deviceRequest('discard', 2048, 8192)), null);
      assert.equal(device.stats.discards, 1);
      const back = new Uint8Array(4 * MIB);
      assert.equal(await submitted(device, deviceRequest('read', 2048, 8192, [back])), null);
      assert.ok(allZero(back));
      assert.ok(statSync(imagePath).blocks <= blocksBefore - 8192);
      assert.ok(allZero(imageBytes(imagePath, MIB, 4 * MIB)));
      assert.notEqual(imageBytes(imagePath, MIB - 1, 1)[0], 0, 'bytes before are kept');
    });
  });

  test('BLKZEROOUT zeroes the range, async and sync', async (t) => {
    if (!requireLoopOrSkip(t)) return;
    await withLoop(t, {}, {}, async (device, imagePath) => {
      assert.equal(await submitted(device, deviceRequest('write-zeroes', 16, 48)), null);
      assert.equal(device.submitSync(deviceRequest('write-zeroes', 1000, 24)), null);
      assert.equal(device.stats.zeroOuts, 2);
      assert.equal(device.stats.zeroWrites, 0);
      const back = new Uint8Array(48 * 512);
      assert.equal(await submitted(device, deviceRequest('read', 16, 48, [back])), null);
      assert.ok(allZero(back));
      assert.ok(allZero(imageBytes(imagePath, 1000 * 512, 24 * 512)));
      assert.notEqual(imageBytes(imagePath, 64 * 512, 1)[0], 0);
    });
  });

  test('with BLKZEROOUT disabled, a block device writes zeros itself', async (t) => {
    if (!requireLoopOrSkip(t)) return;
    await withLoop(t, {}, { disableMethods: ['blkzeroout', 'blkdiscard'] },
      async (device, imagePath) => {
        assert.equal(device.limits.maxDiscardSectors, 0);
        assert.equal(await submitted(device, deviceRequest('write-zeroes', 8, 4096,
          [], { fua: true })), null);
        assert.equal(device.stats.zeroOuts, 0);
        assert.equal(device.stats.zeroWrites, 1);
        assert.ok(allZero(imageBytes(imagePath, 8 * 512, 2 * MIB)));
      });
  });

  test('O_DIRECT round trip with aligned memory; unaligned memory fails EINVAL', async (t) => {
    if (!requireLoopOrSkip(t)) return;
    await withLoop(t, {}, { direct: true }, async (device, imagePath, loopPath) => {
      const dmaAlignmentBytes = sysfsQueueNumber(loopPath, 'dma_alignment') + 1;
      assert.equal(device.limits.memoryAlignmentBytes, Math.max(dmaAlignmentBytes, 512));
      const data = allocAligned(MIB);
      data.set(pattern(MIB, 3));
      assert.equal(await submitted(device, deviceRequest('write', 2048, 2048, [data])), null);
      const back = allocAligned(MIB);
      assert.equal(await submitted(device, deviceRequest('read', 2048, 2048, [back])), null);
      assert.deepEqual(back, pattern(MIB, 3));
      assert.deepEqual(imageBytes(imagePath, MIB, MIB), pattern(MIB, 3));
      const unaligned = allocAligned(8192).subarray(1, 4097);
      const error = await submitted(device, deviceRequest('read', 0, 8, [unaligned]));
      assert.equal(error?.errno, 'EINVAL');
      assert.equal(device.submitSync(deviceRequest('write', 0, 8, [unaligned]))?.errno, 'EINVAL');
    });
  });

  test('O_DIRECT on 4096-byte blocks: 4096 alignment, whole-block requests', async (t) => {
    if (!requireLoopOrSkip(t)) return;
    await withLoop(t, { sectorSize: 4096 }, { direct: true }, async (device) => {
      assert.ok(device.limits.memoryAlignmentBytes >= 4096);
      const data = allocAligned(8192);
      data.set(pattern(8192, 4));
      assert.equal(await submitted(device, deviceRequest('write', 16, 16, [data])), null);
      const back = allocAligned(8192);
      assert.equal(await submitted(device, deviceRequest('read', 16, 16, [back])), null);
      assert.deepEqual(back, pattern(8192, 4));
      const partial = await submitted(device, deviceRequest('read', 17, 8, [back.subarray(0,
        4096)]));
      assert.equal(partial?.errno, 'EINVAL', 'a request off the 4096 grid is refused');
    });
  });

  test('exclusive open claims the device: a second exclusive open gets EBUSY', async (t) => {
    if (!requireLoopOrSkip(t)) return;
    await withLoop(t, {}, { exclusive: true }, async (_device, _imagePath, loopPath) => {
      await assert.rejects(openFileDevice(loopPath, { exclusive: true }), (error: unknown) =>
        isDmIoError(error, 'DMIO_ERR_OPEN_FAILED') &&
        (error as unknown as { errno: string }).errno === 'EBUSY');
      const shared = await openFileDevice(loopPath, { readOnly: true });
      assert.equal(shared.sizeSectors, IMAGE_BYTES / 512, 'a plain open is still allowed');
      await shared.close();
    });
  });

  test('a read-only loop device refuses a read-write open with EROFS', async (t) => {
    if (!requireLoopOrSkip(t)) return;
    await withLoop(t, { readOnly: true }, { readOnly: true }, async (device, _image, loopPath) => {
      await assert.rejects(openFileDevice(loopPath), (error: unknown) =>
        isDmIoError(error, 'DMIO_ERR_OPEN_FAILED') &&
        (error as unknown as { errno: string }).errno === 'EROFS');
      const back = new Uint8Array(512);
      assert.equal(await submitted(device, deviceRequest('read', 0, 1, [back])), null);
      assert.deepEqual(back, pattern(IMAGE_BYTES, 1).subarray(0, 512));
    });
  });

  test('create on a block device smaller than asked fails with ENOSPC', async (t) => {
    if (!requireLoopOrSkip(t)) return;
    await withLoop(t, {}, {}, async (_device, _imagePath, loopPath) => {
      await assert.rejects(openFileDevice(loopPath, { create: { sizeBytes: 2 * IMAGE_BYTES } }),
        (error: unknown) => (error as unknown as { errno: string }).errno === 'ENOSPC');
      const fits = await openFileDevice(loopPath, { create: { sizeBytes: IMAGE_BYTES } });
      assert.equal(fits.sizeSectors, IMAGE_BYTES / 512);
      await fits.close();
    });
  });

  test('a block device reports all data, even over a sparse image', async (t) => {
    if (!requireLoopOrSkip(t)) return;
    const imagePath = join(await tempDir(t), 'sparse.img');
    writeSparseFile(imagePath, 4 * MIB, [{ offsetBytes: MIB, lengthBytes: 64 * 1024 }]);
    await withLoopDevice(imagePath, {}, async (loopPath) => {
      const device = await openFileDevice(loopPath, { readOnly: true });
      try {
        assert.equal(device.kind, 'block');
        assert.deepEqual(await extentsOf(device, 8, device.sizeSectors - 8),
          [{ sector: 8, countSectors: device.sizeSectors - 8, hole: false, zero: false }]);
      } finally {
        await device.close();
      }
    });
  });
});
