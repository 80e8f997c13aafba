// Tests write-behind on local devices (`writeBehindBytes`): background flushes start as writes
// and copy offload complete, through a second descriptor the device closes with its own; a
// writeback error that a background flush saw still fails the caller's own flush (a loop device
// over a file on a full tmpfs, whose writeback really fails); the option is off by default,
// ignored on read-only devices and checked.

import assert from 'node:assert/strict';
import { readdirSync, readFileSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { dmKcopydClientCreate, dmKcopydClientDestroy, dmKcopydCopy } from '../src/index.js';
import { allocAligned } from '../src/memory/aligned.js';
import { type FileDevice, openFileDevice } from '../src/devices/file-device.js';
import { requireLoopOrSkip, withLoopDevice } from './helpers/loop.js';
import { tempDir } from './helpers/tmp.js';
import { mountSmallTmpfs } from './helpers/tmpfs.js';
import { deviceRequest, pattern, submitted } from './helpers/requests.js';

const MIB = 1024 * 1024;
const MIB_SECTORS = MIB / 512;

function openDescriptors(): number {
  return readdirSync('/proc/self/fd').length;
}

/** Resolves once `ready()` holds, polling; fails after `timeoutMs`. */
async function until(ready: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!ready()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** Background flushes that ended, either way. */
function flushesEnded(device: FileDevice): number {
  const stats = device.writeBehind;
  assert.ok(stats !== null, 'the device has write-behind');
  return stats.flushes + stats.failures;
}

/** Writes MiB `index` of `pattern(totalBytes, seed)` to `device`, then waits for a flush. */
async function writeMibAndFlushBehind(
  device: FileDevice, data: Uint8Array, index: number,
): Promise<Error | null> {
  const before = flushesEnded(device);
  const chunk = allocAligned(MIB);
  chunk.set(data.subarray(index * MIB, (index + 1) * MIB));
  const error = await submitted(device,
    deviceRequest('write', index * MIB_SECTORS, MIB_SECTORS, [chunk]));
  if (error === null) await until(() => flushesEnded(device) > before, 'a background flush');
  return error;
}

describe('write-behind', () => {
  test('flushes in the background every writeBehindBytes, on a descriptor of its own', async (t) => {
    const path = join(await tempDir(t), 'dest.img');
    const before = openDescriptors();
    const device = await openFileDevice(path, { create: { sizeBytes: 8 * MIB },
      writeBehindBytes: 2 * MIB });
    assert.equal(openDescriptors(), before + 2, 'the device and its write-behind descriptor');
    const data = pattern(8 * MIB, 3);
    for (let index = 0; index < 8; index += 1) {
      const chunk = allocAligned(MIB);
      chunk.set(data.subarray(index * MIB, (index + 1) * MIB));
      assert.equal(await submitted(device,
        deviceRequest('write', index * MIB_SECTORS, MIB_SECTORS, [chunk])), null);
    }
    // 8 MiB at one flush per 2 MiB at most, fewer while one is in flight.
    await until(() => flushesEnded(device) >= 1, 'the first background flush');
    assert.equal(await submitted(device, deviceRequest('write', 0, 0, [], { preflush: true })),
      null, 'the caller\'s own flush');
    await device.close();
    const stats = device.writeBehind!;
    assert.equal(stats.failures, 0);
    assert.ok(stats.flushes >= 1 && stats.flushes <= 4, `${stats.flushes} background flushes`);
    assert.equal(openDescriptors(), before, 'close() closed both descriptors');
    assert.ok(Buffer.from(readFileSync(path)).equals(Buffer.from(data)), 'the data is intact');
  });

  test('copy offload into the device counts like writes', async (t) => {
    const dir = await tempDir(t);
    const sourcePath = join(dir, 'source.img');
    const data = pattern(6 * MIB, 5);
    writeFileSync(sourcePath, data);
    const source = await openFileDevice(sourcePath, { readOnly: true });
    const dest = await openFileDevice(join(dir, 'dest.img'),
      { create: { sizeBytes: 6 * MIB }, writeBehindBytes: MIB });
    const kc = dmKcopydClientCreate({ subJobSectors: MIB_SECTORS });
    try {
      const result = await dmKcopydCopy(kc, { device: source, sector: 0, count: 6 * MIB_SECTORS },
        [{ device: dest, sector: 0, count: 6 * MIB_SECTORS }], { copyOffload: true, flush: true });
      assert.equal(result.readErr, false);
      assert.equal(result.writeErr, 0n);
    } finally {
      await dmKcopydClientDestroy(kc);
      await source.close();
      await dest.close();
    }
    assert.ok(dest.stats.copyRanges > 0, 'the copy was offloaded');
    assert.ok(dest.writeBehind!.flushes >= 1, `${dest.writeBehind!.flushes} background flushes`);
    assert.ok(Buffer.from(readFileSync(join(dir, 'dest.img'))).equals(Buffer.from(data)));
  });

  test('a writeback error a background flush saw still fails the caller\'s flush', async (t) => {
    if (!requireLoopOrSkip(t)) return;
    const tmpfs = mountSmallTmpfs(t, 2);
    if (tmpfs === null) return;
    // A sparse 16 MiB image on a 2 MiB tmpfs: the loop device takes buffered writes into its
    // page cache, and writing them back into the image fails once the tmpfs is full.
    const imagePath = join(tmpfs, 'image.img');
    writeFileSync(imagePath, '');
    truncateSync(imagePath, 16 * MIB);
    await withLoopDevice(imagePath, {}, async (loopPath) => {
      const device = await openFileDevice(loopPath, { writeBehindBytes: MIB });
      try {
        const data = pattern(8 * MIB, 7);
        for (let index = 0; index < 8; index += 1) {
          assert.equal(await writeMibAndFlushBehind(device, data, index), null,
            `buffered write ${index}`);
        }
        assert.ok(device.writeBehind!.failures >= 1,
          `a background flush failed (${JSON.stringify(device.writeBehind)})`);
        const flushError = await submitted(device,
          deviceRequest('write', 0, 0, [], { preflush: true }));
        assert.ok(flushError !== null, 'the caller\'s flush reports the lost writes');
        assert.match(flushError.errno, /^(EIO|ENOSPC)$/);
      } finally {
        await device.close();
      }
    });
  });

  test('off by default, ignored read-only, and checked', async (t) => {
    const path = join(await tempDir(t), 'plain.img');
    const plain = await openFileDevice(path, { create: { sizeBytes: MIB } });
    assert.equal(plain.writeBehind, null);
    await plain.close();
    const before = openDescriptors();
    const readOnly = await openFileDevice(path, { readOnly: true, writeBehindBytes: MIB });
    assert.equal(readOnly.writeBehind, null);
    assert.equal(openDescriptors(), before + 1, 'no second descriptor');
    await readOnly.close();
    for (const [value, code] of [[-1, 'DMIO_ERR_OUT_OF_RANGE'], [1.5, 'DMIO_ERR_OUT_OF_RANGE'],
      ['64M', 'DMIO_ERR_INVALID_ARG_TYPE']] as const) {
      await assert.rejects(openFileDevice(path, { writeBehindBytes: value as number }),
        { code }, String(value));
    }
  });
});
