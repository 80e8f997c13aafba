// Block-device destinations are claimed with O_EXCL: a loop device holding a mounted ext4 file
// system is refused as a destination of copy, zero and write (exit 2, the device named as in
// use, not a byte changed, fsck clean after unmounting), while it may still be a source; the
// same device unmounted is accepted. Needs root and loop devices (CI=true fails, not skips).

import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, readSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { jsonOf, randomHash, runDmio } from './cli-helpers.js';
import { requireLoopOrSkip, withLoopDevice } from './helpers/loop.js';
import { tempDir } from './helpers/tmp.js';

const MIB = 1024 * 1024;

/** sha256 of the first `lengthBytes` of a device, read through a fresh descriptor. */
function headHash(path: string, lengthBytes: number): string {
  const fd = openSync(path, 'r');
  try {
    const bytes = Buffer.alloc(lengthBytes);
    assert.equal(readSync(fd, bytes, 0, lengthBytes, 0), lengthBytes);
    return createHash('sha256').update(bytes).digest('hex');
  } finally {
    closeSync(fd);
  }
}

test('a mounted block device is refused as a destination; unmounted it is accepted',
  async (t) => {
    if (!requireLoopOrSkip(t)) return;
    const dir = await tempDir(t);
    const image = join(dir, 'fs.img');
    const input = join(dir, 'input.bin');
    writeFileSync(input, Buffer.alloc(MIB, 0x5a));
    writeFileSync(image, Buffer.alloc(0));
    execFileSync('truncate', ['-s', '32M', image]);
    // No lazy initialisation: nothing writes to the device in the background while mounted.
    execFileSync('mkfs.ext4', ['-q', '-F', '-E', 'lazy_itable_init=0,lazy_journal_init=0',
      image]);
    const mountPoint = join(dir, 'mnt');
    mkdirSync(mountPoint);
    await withLoopDevice(image, {}, async (loop) => {
      execFileSync('mount', ['-t', 'ext4', loop, mountPoint]);
      try {
        writeFileSync(join(mountPoint, 'kept.txt'), 'still here\n');
        execFileSync('sync');
        const before = headHash(loop, 4 * MIB);
        for (const args of [['copy', 'random:1M', loop], ['zero', loop, '--length', '1M'],
          ['write', loop, '--sector', '0', '--input', input],
          ['copy', 'random:1M', join(dir, 'other.img'), loop]]) {
          const run = await runDmio([...args, '--json']);
          assert.equal(run.status, 2, `${args.join(' ')}: ${run.stderr}`);
          assert.equal(run.stdout, '');
          assert.match(run.stderr, new RegExp(`${loop} is in use`), run.stderr);
        }
        assert.equal(existsSync(join(dir, 'other.img')), false, 'no other destination created');
        execFileSync('sync');
        assert.equal(headHash(loop, 4 * MIB), before, 'not a byte of the device changed');
        // A mounted device may still be read: sources stay shared.
        const read = await runDmio(['copy', loop, join(dir, 'copy.img'), '--length', '1M']);
        assert.equal(read.status, 0, read.stderr);
      } finally {
        spawnSync('umount', [mountPoint]);
      }
      const fsck = spawnSync('e2fsck', ['-n', '-f', loop], { encoding: 'utf8' });
      assert.equal(fsck.status, 0, `fsck -n: ${fsck.stdout}${fsck.stderr}`);

      const run = await runDmio(['copy', 'random:1M,seed=4', loop, '--json']);
      assert.equal(run.status, 0, run.stderr);
      assert.equal(jsonOf(run).flushed, true);
      assert.equal(headHash(loop, MIB), randomHash(4, MIB, 0, MIB));
    });
  });
