// The real `dmio` binary on loop block devices (root and /dev/loop-control needed; where
// CI=true a missing loop device fails these tests instead of skipping them): a copy from
// random: to a loop device and a new image with O_DIRECT and --verify, a copy back out of the
// loop device, and a misaligned range refused on a 4096-byte-sector loop device.

import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { requireLoopOrSkip, withLoopDevice } from './helpers/loop.js';
import { tempDir } from './helpers/tmp.js';
import { fileHash, jsonOf, randomHash, runDmio } from './cli-helpers.js';

const MIB = 1024 * 1024;

describe('dmio on loop devices', () => {
  it('copies to a loop device and a new image with --direct --verify, then back out', async (t) => {
    if (!requireLoopOrSkip(t)) return;
    const dir = await tempDir(t);
    const backing = join(dir, 'backing.img');
    writeFileSync(backing, Buffer.alloc(8 * MIB));
    const copyOut = join(dir, 'out.img');
    await withLoopDevice(backing, {}, async (loop) => {
      const image = join(dir, 'b.img');
      const run = await runDmio(['copy', 'random:8M,seed=21', loop, image, '--direct',
        '--verify', '--json']);
      assert.equal(run.status, 0, run.stderr);
      assert.deepEqual((jsonOf(run).destinations as Array<{ ok: boolean }>).map((d) => d.ok),
        [true, true]);
      assert.equal(fileHash(image), randomHash(21, 8 * MIB, 0, 8 * MIB));
      const back = await runDmio(['copy', loop, copyOut, '--direct', '--length', '4M']);
      assert.equal(back.status, 0, back.stderr);
    });
    const expected = randomHash(21, 8 * MIB, 0, 8 * MIB);
    assert.equal(fileHash(backing), expected, 'the loop device holds the bytes');
    assert.equal(fileHash(copyOut), randomHash(21, 8 * MIB, 0, 4 * MIB));
  });

  it('refuses a range that is not whole 4096-byte blocks on a 4K-sector loop device', async (t) => {
    if (!requireLoopOrSkip(t)) return;
    const dir = await tempDir(t);
    const backing = join(dir, 'backing4k.img');
    writeFileSync(backing, Buffer.alloc(4 * MIB, 9));
    await withLoopDevice(backing, { sectorSize: 4096 }, async (loop) => {
      const bad = await runDmio(['copy', 'random:4M', loop, '--count', '4']);
      assert.equal(bad.status, 2, bad.stderr);
      const good = await runDmio(['copy', 'random:4M,seed=2', loop, '--count', '64', '--direct']);
      assert.equal(good.status, 0, good.stderr);
    });
    assert.equal(fileHash(backing, 0, 64 * 512), randomHash(2, 4 * MIB, 0, 64 * 512));
    assert.equal(fileHash(backing, 64 * 512, 4096),
      fileHash(backing, 4 * MIB - 4096, 4096), 'beyond the count untouched (still 9s)');
  });
});
