// Inline reads of cached data: served on the calling thread by preadv2(RWF_NOWAIT) and
// completed on a later turn; data that is not cached, a direct device, an opt-out or anything
// unusual takes the threadpool path; libuv's own engine makes no difference; and a closed loop
// of inline reads never starves the event loop.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import { join } from 'node:path';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, test } from 'node:test';
import { allocAligned } from '../memory/aligned.js';
import { openFileDevice } from './file-device.js';
import { tempDir } from '../../test/helpers/tmp.js';
import { deviceRequest, pattern, submitted } from '../../test/helpers/requests.js';

const MIB = 1024 * 1024;
/** These tests are about the threadpool engine and its inline reads. */
const NO_RING = { engine: 'threadpool' } as const;
const CHILD = fileURLToPath(new URL('../../test/fixtures/inline-reads-child.ts', import.meta.url));

/** A file whose first MiB was written with O_DIRECT, so none of it is in the page cache. */
async function uncachedFile(directory: string): Promise<{ path: string; data: Uint8Array }> {
  const path = join(directory, 'uncached.img');
  const data = allocAligned(MIB);
  data.set(pattern(MIB, 7));
  const fd = fs.openSync(path, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_DIRECT);
  try {
    fs.ftruncateSync(fd, 4 * MIB);
    assert.equal(fs.writeSync(fd, data, 0, MIB, 0), MIB);
  } finally {
    fs.closeSync(fd);
  }
  return { path, data: data.slice() };
}

describe('inline cached reads', () => {
  test('data not in the page cache goes to the threadpool; once cached it is read inline', async (t) => {
    const { path, data } = await uncachedFile(await tempDir(t));
    const device = await openFileDevice(path, NO_RING);
    t.after(() => device.close());
    assert.equal(device.inlineCachedReads, true);
    const first = new Uint8Array(4096);
    // `submitted` fails the test if `done` runs inside `submit` or more than once.
    assert.equal(await submitted(device, deviceRequest('read', 16, 8, [first])), null);
    assert.deepEqual(first, data.subarray(16 * 512, 16 * 512 + 4096));
    assert.deepEqual([device.stats.inlineReads, device.stats.reads], [0, 1],
      'O_DIRECT-written data is not cached: RWF_NOWAIT refused, the threadpool read it');
    const again = new Uint8Array(4096);
    assert.equal(await submitted(device, deviceRequest('read', 16, 8, [again])), null);
    assert.deepEqual(again, first);
    assert.deepEqual([device.stats.inlineReads, device.stats.reads], [1, 2], 'now cached: inline');
  });

  test('large reads, opted-out devices and O_DIRECT devices never read inline', async (t) => {
    const directory = await tempDir(t);
    const path = join(directory, 'plain.img');
    fs.writeFileSync(path, pattern(4 * MIB, 3));
    const optedOut = await openFileDevice(path, { ...NO_RING, inlineCachedReads: false });
    const direct = await openFileDevice(path, { ...NO_RING, direct: true });
    const plain = await openFileDevice(path, NO_RING);
    t.after(() => Promise.all([optedOut.close(), direct.close(), plain.close()]));
    assert.equal(optedOut.inlineCachedReads, false);
    assert.equal(direct.inlineCachedReads, false);
    assert.equal(await submitted(optedOut, deviceRequest('read', 0, 8, [new Uint8Array(4096)])), null);
    assert.equal(await submitted(direct, deviceRequest('read', 0, 8, [allocAligned(4096)])), null);
    const big = new Uint8Array(2 * MIB); // More than INLINE_READ_BYTES_MAX.
    assert.equal(await submitted(plain, deviceRequest('read', 0, 4096, [big])), null);
    assert.deepEqual(big, pattern(4 * MIB, 3).subarray(0, big.length));
    for (const device of [optedOut, direct, plain]) {
      assert.deepEqual([device.stats.inlineReads, device.stats.reads], [0, 1], device.name);
    }
  });

  test('a closed loop of cached reads still lets timers run', { timeout: 10_000 }, async (t) => {
    const directory = await tempDir(t);
    const path = join(directory, 'loop.img');
    fs.writeFileSync(path, pattern(MIB, 5));
    const device = await openFileDevice(path, NO_RING);
    t.after(() => device.close());
    // If completions ran as microtasks, the loop would never yield and the timer could not
    // fire; the read budget ends the loop anyway, so that regression fails instead of hangs.
    const READS_MAX = 20_000;
    let timerFired = false;
    let reads = 0;
    const timer = setTimeout(() => {
      timerFired = true;
    }, 20);
    await new Promise<void>((resolve) => {
      const next = (): void => {
        if (timerFired || reads >= READS_MAX) {
          resolve();
          return;
        }
        device.submit(deviceRequest('read', (reads % 256) * 8, 8, [new Uint8Array(4096)]),
          (error) => {
            assert.equal(error, null);
            reads += 1;
            next();
          });
      };
      next();
    });
    clearTimeout(timer);
    assert.ok(timerFired, `the timer fired while reads ran (${reads} reads)`);
    assert.ok(reads > 10, `${reads} reads before the timer`);
    assert.equal(device.stats.inlineReads, reads, 'every read was served inline');
  });
});

describe('inline reads and libuv', () => {
  test('libuv running its own io_uring (UV_USE_IO_URING=1) changes nothing: all inline',
    async (t) => {
      const env = { ...process.env, UV_USE_IO_URING: '1' };
      const { stdout } = await promisify(execFile)(process.execPath,
        ['--import', 'tsx', CHILD, await tempDir(t)], { env });
      assert.deepEqual(JSON.parse(stdout), { inline: 16, libuv: 0, intact: true });
    });
});

describe('inline read batches', () => {
  test('a completion that throws does not strand the rest of its batch', async (t) => {
    const directory = await tempDir(t);
    const path = join(directory, 'batch.img');
    fs.writeFileSync(path, pattern(MIB, 9));
    const device = await openFileDevice(path, NO_RING);
    const captured: unknown[] = [];
    process.setUncaughtExceptionCaptureCallback((error) => captured.push(error));
    const completed: number[] = [];
    try {
      // Both reads are cached, so both complete in the same batch.
      device.submit(deviceRequest('read', 0, 8, [new Uint8Array(4096)]), () => {
        completed.push(1);
        throw new Error('a caller bug');
      });
      device.submit(deviceRequest('read', 8, 8, [new Uint8Array(4096)]), () => {
        completed.push(2);
      });
      await new Promise((resolve) => setImmediate(resolve));
      await new Promise((resolve) => setImmediate(resolve));
    } finally {
      process.setUncaughtExceptionCaptureCallback(null);
    }
    assert.deepEqual(completed, [1, 2], 'the second completion still ran');
    assert.equal(device.stats.inlineReads, 2);
    assert.equal((captured[0] as Error).message, 'a caller bug', 'the throw is not swallowed');
    await device.close(); // Settles: nothing is left in flight.
  });
});
