// Local devices on the io_uring engine: a request's ioprio in the entry, which steps take the ring
// (reads; O_DIRECT writes, inside flagged requests too; buffered writes only on an engine
// without a polling thread, and whole-page ones inline on an engine asked for that; never long vectors, flushes, or devices on the threadpool engine),
// how an engine is chosen (the
// default, the threadpool, one of the caller's without a polling thread), that the data is
// right both ways, that a short read continues in the general loop with its usual EIO, that a burst
// larger than the ring overflows to the other paths, that close waits for the ring, that worker
// threads stay off it (and exit cleanly), and a loop block device with O_DIRECT through the
// direct ring. Where CI=true the kernel must offer io_uring: this path is the default and
// must be tested.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import { once } from 'node:events';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { describe, test, type TestContext } from 'node:test';
import { isDmIoError } from '../errors.js';
import { allocAligned } from '../memory/aligned.js';
import { openFileDevice, type FileDevice, type FileDeviceOptions } from './file-device.js';
import { IoUringEngine, RING_ENTRIES, ringIoprio } from './file-ring.js';
import { SQPOLL_IDLE_MS_MAX } from '../sys/io-uring.js';
import { ThreadpoolEngine } from './file-threadpool-engine.js';
import { defaultFileEngine } from './file-device.js';
import { IOPRIO_DEFAULT } from '../constants.js';
import { tempDir } from '../../test/helpers/tmp.js';
import { deviceRequest, pattern, splitInto, submitted } from '../../test/helpers/requests.js';
import { requireLoopOrSkip, withLoopDevice } from '../../test/helpers/loop.js';

/** The default engine's ring for buffered or O_DIRECT devices; undefined where there is none. */
function deviceRing(direct: boolean): ReturnType<IoUringEngine['ring']> {
  const engine = defaultFileEngine();
  return engine instanceof IoUringEngine ? engine.ring(direct) : undefined;
}

const MIB = 1024 * 1024;

/** Skips `t` where the kernel refuses io_uring; fails instead where CI=true. */
function ringsOrSkip(t: TestContext): boolean {
  const available = deviceRing(false) !== undefined && deviceRing(true) !== undefined;
  if (available) return true;
  assert.notEqual(process.env['CI'], 'true', 'CI must run the io_uring path');
  t.skip('io_uring is refused here');
  return false;
}

/** Kernel SQPOLL threads of this process (the kernel names them iou-sqp-PID). */
function sqpollThreads(): number {
  return fs.readdirSync('/proc/self/task').filter((task) =>
    fs.readFileSync(`/proc/self/task/${task}/comm`, 'utf8').startsWith('iou-sqp-')).length;
}

async function openImage(
  t: TestContext, options: FileDeviceOptions = {}, lengthBytes = 4 * MIB,
): Promise<{ device: FileDevice; path: string; data: Uint8Array }> {
  const path = join(await tempDir(t), 'ring.img');
  const data = pattern(lengthBytes, 11);
  fs.writeFileSync(path, data);
  const device = await openFileDevice(path, options);
  t.after(() => device.close());
  return { device, path, data };
}

describe('file devices on dmio io_uring', () => {
  test('buffered: reads take the ring, whole or in up to 16 segments; writes do not', async (t) => {
    if (!ringsOrSkip(t)) return;
    const { device, path, data } = await openImage(t);
    const one = new Uint8Array(8192);
    assert.equal(await submitted(device, deviceRequest('read', 24, 16, [one])), null);
    assert.deepEqual(one, data.subarray(24 * 512, 40 * 512));
    const pieces = splitInto(new Uint8Array(16 * 512), new Array(16).fill(512));
    assert.equal(await submitted(device, deviceRequest('read', 100, 16, pieces)), null);
    assert.deepEqual(Buffer.concat(pieces), Buffer.from(data.subarray(100 * 512, 116 * 512)));
    assert.deepEqual([device.stats.ringTransfers, device.stats.reads], [2, 2]);

    const many = splitInto(new Uint8Array(17 * 512), new Array(17).fill(512));
    assert.equal(await submitted(device, deviceRequest('read', 0, 17, many)), null);
    assert.deepEqual(Buffer.concat(many), Buffer.from(data.subarray(0, 17 * 512)));
    const written = pattern(4096, 5);
    assert.equal(await submitted(device, deviceRequest('write', 8, 8, [written])), null);
    assert.deepEqual(fs.readFileSync(path).subarray(4096, 8192), Buffer.from(written));
    assert.equal(device.stats.ringTransfers, 2, '17 segments and a buffered write go elsewhere');
    assert.equal(device.stats.writes, 1);
  });

  test('a request\'s ioprio reaches the kernel on the ring', async (t) => {
    if (!ringsOrSkip(t)) return;
    const { device, data } = await openImage(t, { direct: true });
    const back = allocAligned(4096);
    const idle = { ...deviceRequest('read', 8, 8, [back]), ioprio: 3 << 13 };
    assert.equal(await submitted(device, idle), null);
    assert.deepEqual(back, data.subarray(4096, 8192));
    assert.equal(device.stats.ringTransfers, 1);
    // dm-io's default stays off the entry (0: the process's own priority, as on the threadpool).
    assert.equal(ringIoprio(IOPRIO_DEFAULT), 0);
    assert.equal(ringIoprio(3 << 13), 3 << 13);
    // A class the kernel does not know fails there, so the value was in the entry it read.
    const invalid = { ...deviceRequest('read', 8, 8, [back]), ioprio: 7 << 13 };
    const error = await submitted(device, invalid);
    assert.ok(isDmIoError(error), String(error));
    assert.equal((error as { errno?: string }).errno, 'EINVAL');
  });

  test('O_DIRECT: reads and writes take the ring, a FUA write\'s too; its flush does not',
    async (t) => {
      if (!ringsOrSkip(t)) return;
      const { device, path, data } = await openImage(t, { direct: true });
      const back = allocAligned(64 * 1024);
      assert.equal(await submitted(device, deviceRequest('read', 256, 128, [back])), null);
      assert.deepEqual(back, data.subarray(256 * 512, 384 * 512));
      const written = allocAligned(8192);
      written.set(pattern(8192, 6));
      assert.equal(await submitted(device, deviceRequest('write', 64, 16, [written])), null);
      assert.equal(device.stats.ringTransfers, 2);
      assert.equal(await submitted(device, deviceRequest('write', 80, 16, [written],
        { fua: true })), null);
      // The step program runs on the engine: the FUA write's transfer step goes to the ring,
      // its fdatasync after it to the threadpool.
      assert.deepEqual([device.stats.ringTransfers, device.stats.fdatasyncs], [3, 1]);
      const onDisk = fs.readFileSync(path);
      assert.deepEqual(onDisk.subarray(64 * 512, 96 * 512),
        Buffer.concat([Buffer.from(written), Buffer.from(written)]));
    });

  test('without a polling thread the buffered ring takes buffered writes, a FUA write\'s too',
    async (t) => {
      if (!ringsOrSkip(t)) return;
      const own = new IoUringEngine({ sqPollIdleMs: 0 });
      t.after(() => own.close());
      const { device, path, data } = await openImage(t, { engine: own });
      const written = allocAligned(3 * 4096);
      written.set(pattern(written.length, 8));
      assert.equal(await submitted(device, deviceRequest('write', 16, 24, [written])), null);
      assert.equal(device.stats.ringTransfers, 1);
      assert.equal(await submitted(device, deviceRequest('write', 64, 24, [written],
        { fua: true })), null);
      // The FUA write's transfer step goes to the ring, its fdatasync to the threadpool.
      assert.deepEqual([device.stats.ringTransfers, device.stats.writes, device.stats.fdatasyncs],
        [2, 2, 1]);
      const onDisk = fs.readFileSync(path);
      assert.deepEqual(onDisk.subarray(16 * 512, 40 * 512), Buffer.from(written));
      assert.deepEqual(onDisk.subarray(64 * 512, 88 * 512), Buffer.from(written));
      assert.deepEqual(onDisk.subarray(40 * 512, 64 * 512), Buffer.from(data.subarray(40 * 512,
        64 * 512)), 'nothing written between them');
      // A write past what the ring takes (17 segments) still lands, through the threadpool.
      const long = pattern(17 * 512, 9);
      const pieces = splitInto(long, new Array(17).fill(512));
      assert.equal(await submitted(device, deviceRequest('write', 128, 17, pieces)), null);
      assert.deepEqual([device.stats.ringTransfers, device.stats.writes], [2, 3]);
      assert.deepEqual(fs.readFileSync(path).subarray(128 * 512, 145 * 512), Buffer.from(long));
    });

  test('inlineWrites: whole-page buffered writes are copied on the event loop, the rest take ' +
    'the ring; O_DIRECT devices never write inline', async (t) => {
    if (!ringsOrSkip(t)) return;
    const own = new IoUringEngine({ sqPollIdleMs: 0, inlineWrites: true });
    t.after(() => own.close());
    assert.deepEqual(own.inlineWriteCounters, { stalls: 0, samples: 0 });
    assert.equal(new IoUringEngine({ sqPollIdleMs: 0 }).inlineWriteCounters, null);
    const { device, path, data } = await openImage(t, { engine: own });
    const pages = pattern(3 * 4096, 12);
    // Sector 16 is page 2: inline, FUA too (its fdatasync on the threadpool).
    assert.equal(await submitted(device, deviceRequest('write', 16, 24, [pages], { fua: true })),
      null);
    assert.deepEqual([device.stats.inlineWrites, device.stats.ringTransfers,
      device.stats.writes, device.stats.fdatasyncs], [1, 0, 1, 1]);
    // Sector 65 is inside a page: the ring.
    const unaligned = pattern(8 * 512, 13);
    assert.equal(await submitted(device, deviceRequest('write', 65, 8, [unaligned])), null);
    assert.deepEqual([device.stats.inlineWrites, device.stats.ringTransfers], [1, 1]);
    const onDisk = fs.readFileSync(path);
    assert.deepEqual(onDisk.subarray(16 * 512, 40 * 512), Buffer.from(pages));
    assert.deepEqual(onDisk.subarray(65 * 512, 73 * 512), Buffer.from(unaligned));
    assert.deepEqual(onDisk.subarray(40 * 512, 65 * 512), Buffer.from(data.subarray(40 * 512,
      65 * 512)), 'nothing written between them');
    assert.ok((own.inlineWriteCounters?.samples ?? 0) >= 1, 'the headroom was read');
    // A page written while a 2 MiB write is on the ring waits its turn on the ring too (the
    // file's inode lock would hold the event loop): both land.
    const large = pattern(4 * 1024 * 1024 / 2, 15);
    const page = pattern(4096, 16);
    const both = await Promise.all([
      submitted(device, deviceRequest('write', 0, large.length / 512, [large])),
      submitted(device, deviceRequest('write', 4096 / 512 * 600, 8, [page])),
    ]);
    assert.deepEqual(both, [null, null]);
    assert.deepEqual([device.stats.inlineWrites, device.stats.ringTransfers], [1, 3]);
    const after = fs.readFileSync(path);
    assert.deepEqual(after.subarray(0, large.length), Buffer.from(large));
    assert.deepEqual(after.subarray(600 * 4096, 601 * 4096), Buffer.from(page));
    // With nothing else in flight, the next page is inline again.
    assert.equal(await submitted(device, deviceRequest('write', 8, 8, [page])), null);
    assert.equal(device.stats.inlineWrites, 2);
    // The same engine never writes an O_DIRECT device inline.
    const direct = await openImage(t, { engine: own, direct: true });
    const aligned = allocAligned(4096);
    aligned.set(pattern(4096, 14));
    assert.equal(await submitted(direct.device, deviceRequest('write', 8, 8, [aligned])), null);
    assert.deepEqual([direct.device.stats.inlineWrites, direct.device.stats.ringTransfers], [0, 1]);
  });

  test('an engine\'s options are checked when it is made, with typed errors', () => {
    const cases: Array<[unknown, string, string]> = [
      [{ sqPollIdleMs: -1 }, 'DMIO_ERR_OUT_OF_RANGE', 'options.sqPollIdleMs'],
      [{ sqPollIdleMs: 2.5 }, 'DMIO_ERR_OUT_OF_RANGE', 'options.sqPollIdleMs'],
      [{ sqPollIdleMs: SQPOLL_IDLE_MS_MAX + 1 }, 'DMIO_ERR_OUT_OF_RANGE', 'options.sqPollIdleMs'],
      [{ sqPollIdleMs: '10' }, 'DMIO_ERR_INVALID_ARG_TYPE', 'options.sqPollIdleMs'],
      [{ directSqPollIdleMs: -5 }, 'DMIO_ERR_OUT_OF_RANGE', 'options.directSqPollIdleMs'],
      [{ inlineWrites: 1 }, 'DMIO_ERR_INVALID_ARG_TYPE', 'options.inlineWrites'],
      [null, 'DMIO_ERR_INVALID_ARG_TYPE', 'options'],
    ];
    for (const [options, code, argument] of cases) {
      assert.throws(() => new IoUringEngine(options as never), (error: unknown) =>
        isDmIoError(error) && error.code === code && 'argument' in error &&
        error.argument === argument,
      `${JSON.stringify(options)} -> ${code}`);
    }
    const engine = new IoUringEngine({ sqPollIdleMs: 0, directSqPollIdleMs: SQPOLL_IDLE_MS_MAX });
    engine.close();
  });

  test('ioUring: false keeps every request off the ring', async (t) => {
    const { device, data } = await openImage(t, { ioUring: false });
    const back = new Uint8Array(4096);
    assert.equal(await submitted(device, deviceRequest('read', 8, 8, [back])), null);
    assert.deepEqual(back, data.subarray(4096, 8192));
    assert.equal(device.stats.ringTransfers, 0);
  });

  test('engines: the shared default, the threadpool, and one of the caller\'s', async (t) => {
    if (!ringsOrSkip(t)) return;
    const first = await openImage(t);
    const second = await openImage(t, { direct: true });
    assert.equal(first.device.engine, defaultFileEngine());
    assert.equal(second.device.engine, first.device.engine, 'devices share the default');
    const pooled = await openImage(t, { engine: 'threadpool' });
    assert.ok(pooled.device.engine instanceof ThreadpoolEngine);
    // Our own engine without a polling thread: it makes a ring, and no new iou-sqp thread.
    assert.equal(await submitted(first.device, deviceRequest('read', 0, 8,
      [new Uint8Array(4096)])), null); // the default buffered ring (and its thread) exist now
    const pollers = sqpollThreads();
    const own = new IoUringEngine({ sqPollIdleMs: 0 });
    const mine = await openImage(t, { engine: own });
    const back = new Uint8Array(4096);
    assert.equal(await submitted(mine.device, deviceRequest('read', 8, 8, [back])), null);
    assert.deepEqual(back, mine.data.subarray(4096, 8192));
    assert.equal(mine.device.stats.ringTransfers, 1);
    assert.equal(sqpollThreads(), pollers, 'sqPollIdleMs: 0 starts no polling thread');
    own.close();
    own.close(); // idempotent
    // A closed engine's steps go to the threadpool: still correct, no longer on a ring.
    assert.equal(await submitted(mine.device, deviceRequest('read', 8, 8, [back])), null);
    assert.deepEqual([mine.device.stats.ringTransfers, mine.device.stats.reads], [1, 2]);
    await assert.rejects(openFileDevice(mine.path, { engine: 'uring' as 'io_uring' }),
      (error: unknown) => isDmIoError(error) && error.code === 'DMIO_ERR_INVALID_ARG_TYPE');
  });

  test('a read the file no longer holds continues in the general loop: EIO', async (t) => {
    if (!ringsOrSkip(t)) return;
    const { device, path } = await openImage(t, { direct: true });
    fs.truncateSync(path, MIB); // The device still believes it has 4 MiB.
    const partial = allocAligned(8192);
    const shortError = await submitted(device, deviceRequest('read', 2044, 16, [partial]));
    assert.ok(isDmIoError(shortError) && shortError.code === 'DMIO_ERR_IO');
    assert.equal(shortError.errno, 'EIO');
    assert.deepEqual([shortError.sector, shortError.countSectors], [2044, 16]);
    assert.deepEqual(partial.subarray(0, 2048), pattern(4 * MIB, 11).subarray(2044 * 512, MIB),
      'the part inside the file was read');
    assert.equal(device.stats.ringTransfers, 0, 'a short transfer is not counted as whole');
  });

  test('a burst larger than the ring overflows to the other paths', async (t) => {
    if (!ringsOrSkip(t)) return;
    const { device, data } = await openImage(t);
    const count = RING_ENTRIES + 72;
    const buffers = Array.from({ length: count }, () => new Uint8Array(4096));
    const errors = await Promise.all(buffers.map((buffer, index) =>
      submitted(device, deviceRequest('read', index * 8, 8, [buffer]))));
    assert.deepEqual(errors, new Array(count).fill(null));
    buffers.forEach((buffer, index) => {
      assert.deepEqual(buffer, data.subarray(index * 4096, (index + 1) * 4096), `read ${index}`);
    });
    assert.equal(device.stats.ringTransfers, RING_ENTRIES, 'the ring took what it had room for');
  });

  test('close waits for reads on the ring; later requests fail with EBADF', async (t) => {
    if (!ringsOrSkip(t)) return;
    const { device } = await openImage(t, { direct: true });
    const outcomes: unknown[] = [];
    for (let index = 0; index < 8; index += 1) {
      device.submit(deviceRequest('read', index * 8, 8, [allocAligned(4096)]),
        (error) => outcomes.push(error));
    }
    await device.close();
    assert.deepEqual(outcomes, new Array(8).fill(null));
    const late = await submitted(device, deviceRequest('read', 0, 8, [allocAligned(4096)]));
    assert.equal(late?.errno, 'EBADF');
  });

  test('worker threads read without a ring, and exit cleanly', async (t) => {
    if (!ringsOrSkip(t)) return;
    const { path, data } = await openImage(t);
    const worker = new Worker(new URL('../../test/fixtures/ring-worker.mjs', import.meta.url),
      { workerData: path });
    const [message] = await once(worker, 'message') as [unknown];
    const [exitCode] = await once(worker, 'exit') as [number];
    assert.deepEqual(message, { first: Array.from(data.subarray(0, 4)), ringTransfers: 0 });
    assert.equal(exitCode, 0);
  });

  test('a loop block device with O_DIRECT through the direct ring', async (t) => {
    if (!requireLoopOrSkip(t) || !ringsOrSkip(t)) return;
    const imagePath = join(await tempDir(t), 'loop-backing.img');
    fs.writeFileSync(imagePath, pattern(8 * MIB, 13));
    await withLoopDevice(imagePath, {}, async (loopPath) => {
      const device = await openFileDevice(loopPath, { direct: true });
      try {
        assert.equal(device.kind, 'block');
        const blocks = Array.from({ length: 32 }, () => allocAligned(4096));
        const reads = await Promise.all(blocks.map((block, index) =>
          submitted(device, deviceRequest('read', index * 64, 8, [block]))));
        assert.deepEqual(reads, new Array(32).fill(null));
        const expected = pattern(8 * MIB, 13);
        blocks.forEach((block, index) => {
          assert.deepEqual(block, expected.subarray(index * 32768, index * 32768 + 4096));
        });
        const written = allocAligned(4096);
        written.set(pattern(4096, 2));
        assert.equal(await submitted(device, deviceRequest('write', 8, 8, [written])), null);
        const back = allocAligned(4096);
        assert.equal(await submitted(device, deviceRequest('read', 8, 8, [back])), null);
        assert.deepEqual(back, written);
        assert.equal(device.stats.ringTransfers, 34);
      } finally {
        await device.close();
      }
    });
  });
});
