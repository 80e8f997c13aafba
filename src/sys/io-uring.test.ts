// dmio's own io_uring against real files: data in and out of one buffer and of iovecs, the
// kernel's results (bytes, 0 at the end of the file, negated errnos) passed on unchanged,
// batches, the ioprio field read by the kernel, a full ring refusing more, completions never
// inside `prepareTransfer`, COOP_TASKRUN on rings without a polling thread, a throwing
// callback that does not stall the ring, large reads behind others handed to the kernel's
// workers (`offloadBusyReads`), the kernel polling thread waking again after it slept
// and taking each entry as soon as it is prepared, spinning for completions (chains of callbacks
// and of promises, the event loop still turning), close, and a child process that waits for its
// ring's completion (the poll handle holds the loop while requests are in flight) and then exits
// on its own.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { describe, test, type TestContext } from 'node:test';
import { promisify } from 'node:util';
import {
  IoUring, type IoUringOptions, OFFLOAD_READ_BYTES_MIN, URING_IOVECS_PER_ENTRY_MAX,
  uringErrorCode,
} from './io-uring.js';
import { pattern } from '../../test/helpers/requests.js';
import { tempDir } from '../../test/helpers/tmp.js';

const execFileAsync = promisify(execFile);

/** A ring, or a skip where the kernel refuses io_uring (a failure where CI=true). */
function ringOrSkip(t: TestContext, options: IoUringOptions = {}): IoUring | null {
  try {
    const ring = IoUring.create(8, options);
    t.after(() => ring.close());
    return ring;
  } catch (error) {
    if (process.env['CI'] === 'true') throw error;
    t.skip(`io_uring refused here: ${String(error)}`);
    return null;
  }
}

/** Prepares one transfer and resolves with its result; checks it did not complete inline. */
function transfer(
  ring: IoUring, fd: number, op: 'read' | 'write', buffers: Uint8Array[], positionBytes: number,
  ioprio = 0,
): Promise<number> {
  return new Promise((resolve) => {
    let returned = false;
    const prepared = ring.prepareTransfer(fd, op, buffers, positionBytes, ioprio, (result) => {
      assert.ok(returned, 'the callback ran inside prepareTransfer');
      resolve(result);
    });
    returned = true;
    assert.equal(prepared, true);
  });
}

/** Opens `path` for the test's duration. */
function openFor(t: TestContext, path: string, flags: 'r' | 'r+'): number {
  const fd = fs.openSync(path, flags);
  t.after(() => fs.closeSync(fd));
  return fd;
}

async function dataFile(t: TestContext, lengthBytes: number): Promise<{ path: string }> {
  const path = join(await tempDir(t), 'data.img');
  fs.writeFileSync(path, pattern(lengthBytes, 3));
  return { path };
}

describe('IoUring', () => {
  test('reads and writes one buffer and iovecs, as the kernel reports them', async (t) => {
    const ring = ringOrSkip(t);
    if (ring === null) return;
    const { path } = await dataFile(t, 64 * 1024);
    const fd = openFor(t, path, 'r+');
    const expected = pattern(64 * 1024, 3);

    const one = new Uint8Array(4096);
    assert.equal(await transfer(ring, fd, 'read', [one], 8192), 4096);
    assert.deepEqual(one, expected.subarray(8192, 12288));

    const parts = [new Uint8Array(1000), new Uint8Array(3096), new Uint8Array(512)];
    assert.equal(await transfer(ring, fd, 'read', parts, 512), 4608);
    assert.deepEqual(Buffer.concat(parts), Buffer.from(expected.subarray(512, 5120)));

    const written = pattern(6144, 9);
    const pieces = [written.subarray(0, 2048), written.subarray(2048)];
    assert.equal(await transfer(ring, fd, 'write', pieces, 16384), 6144);
    assert.equal(await transfer(ring, fd, 'write', [pattern(512, 4)], 0), 512);
    const onDisk = fs.readFileSync(path);
    assert.deepEqual(onDisk.subarray(16384, 16384 + 6144), Buffer.from(written));
    assert.deepEqual(onDisk.subarray(0, 512), Buffer.from(pattern(512, 4)));
    assert.deepEqual(onDisk.subarray(512, 16384), Buffer.from(expected.subarray(512, 16384)));

    assert.equal(await transfer(ring, fd, 'read', [new Uint8Array(4096)], 64 * 1024), 0,
      'at the end of the file a read moves 0 bytes');
    assert.equal(await transfer(ring, fd, 'read', [new Uint8Array(4096)], 62 * 1024), 2048,
      'short at the end of the file');
  });

  test('a ring without a polling thread takes COOP_TASKRUN (5.19+): completions still arrive ' +
    'after JavaScript that made no system call, and while the loop sleeps', async (t) => {
    const ring = ringOrSkip(t);
    if (ring === null) return;
    const [major = 0, minor = 0] = os.release().split('.').map(Number);
    if (major > 5 || (major === 5 && minor >= 19)) assert.equal(ring.coopTaskrun, true);
    const polled = ringOrSkip(t, { sqPollIdleMs: 5 });
    assert.equal(polled?.coopTaskrun, false, 'a polling ring completes on its own thread');
    const { path } = await dataFile(t, 64 * 1024);
    const fd = openFor(t, path, 'r');
    const expected = pattern(64 * 1024, 3);
    const buffers = Array.from({ length: 8 }, () => new Uint8Array(4096));
    const pending = buffers.map((buffer, index) => transfer(ring, fd, 'read', [buffer],
      index * 4096));
    // Hold the thread for a while without a system call: the completions wait for the next one.
    const untilMs = performance.now() + 20;
    while (performance.now() < untilMs);
    assert.deepEqual(await Promise.all(pending), buffers.map(() => 4096));
    buffers.forEach((buffer, index) => assert.deepEqual(buffer,
      expected.subarray(index * 4096, (index + 1) * 4096)));
    await new Promise((resolve) => setTimeout(resolve, 20));
    const buffer = new Uint8Array(4096);
    assert.equal(await transfer(ring, fd, 'read', [buffer], 8192), 4096, 'from an idle loop');
    assert.deepEqual(buffer, expected.subarray(8192, 12288));
  });

  test('failures come back as negated errnos, one request at a time', async (t) => {
    const ring = ringOrSkip(t);
    if (ring === null) return;
    const { path } = await dataFile(t, 8192);
    const readOnly = openFor(t, path, 'r');
    const directory = openFor(t, join(path, '..'), 'r');
    const [refused, isDirectory, fine] = await Promise.all([
      transfer(ring, readOnly, 'write', [new Uint8Array(512)], 0),
      transfer(ring, directory, 'read', [new Uint8Array(512)], 0),
      transfer(ring, readOnly, 'read', [new Uint8Array(512)], 0),
    ]);
    assert.equal(uringErrorCode(refused), 'EBADF');
    assert.equal(uringErrorCode(isDirectory), 'EISDIR');
    assert.equal(fine, 512, 'a failing entry in the batch does not fail its neighbours');
  });

  test('a full ring, a long vector or movable memory: refused, nothing done', async (t) => {
    const ring = ringOrSkip(t);
    if (ring === null) return;
    const { path } = await dataFile(t, 1024 * 1024);
    const fd = openFor(t, path, 'r');
    assert.equal(ring.entries, 8);
    const results: Promise<number>[] = [];
    for (let index = 0; index < ring.entries; index += 1) {
      results.push(transfer(ring, fd, 'read', [new Uint8Array(4096)], index * 4096));
    }
    assert.equal(ring.inflight, 8);
    assert.equal(ring.hasRoom, false);
    let called = false;
    assert.equal(ring.prepareTransfer(fd, 'read', [new Uint8Array(512)], 0, 0, () => {
      called = true;
    }), false);
    const tooLong = Array.from({ length: URING_IOVECS_PER_ENTRY_MAX + 1 },
      () => new Uint8Array(512));
    assert.deepEqual(await Promise.all(results), new Array(8).fill(4096));
    assert.equal(ring.prepareTransfer(fd, 'read', tooLong, 0, 0, () => {
      called = true;
    }), false, 'longer vectors than a slot holds are refused');
    const tiny = new Uint8Array(64); // V8 may keep it in its moving heap.
    assert.equal(ring.prepareTransfer(fd, 'read', [tiny], 0, 0, () => {
      called = true;
    }), false, 'memory that could move is refused');
    assert.equal(called, false);
    assert.equal(ring.inflight, 0);
    assert.equal(await transfer(ring, fd, 'read', [new Uint8Array(512)], 0), 512);
  });

  test('a batch goes in one system call; completions in as few wake-ups', async (t) => {
    const ring = ringOrSkip(t);
    if (ring === null) return;
    const { path } = await dataFile(t, 1024 * 1024);
    const fd = openFor(t, path, 'r');
    const before = { ...ring.counters };
    const buffers = Array.from({ length: 8 }, () => new Uint8Array(4096));
    const results = await Promise.all(buffers.map(
      (buffer, index) => transfer(ring, fd, 'read', [buffer], index * 8192)));
    assert.deepEqual(results, new Array(8).fill(4096));
    assert.equal(ring.counters.enters - before.enters, 1, 'eight entries, one io_uring_enter');
    assert.equal(ring.counters.completions - before.completions, 8);
    const expected = pattern(1024 * 1024, 3);
    buffers.forEach((buffer, index) => {
      assert.deepEqual(buffer, expected.subarray(index * 8192, index * 8192 + 4096));
    });
  });

  test('offloadBusyReads: a large read behind others goes to a kernel worker; a lone read, ' +
    'a small one and writes are not marked; the data is the same either way', async (t) => {
    if (ringOrSkip(t) === null) return;
    const { path } = await dataFile(t, 1024 * 1024);
    fs.readFileSync(path); // cached: without the flag, no read would leave this thread
    // In a child of its own, so that the kernel workers it sees are its ring's alone.
    const script = (offloadBusyReads: boolean): string => [
      "import { createHash } from 'node:crypto';",
      "import fs from 'node:fs';",
      `import { IoUring } from ${JSON.stringify(new URL('./io-uring.ts', import.meta.url).href)};`,
      `const ring = IoUring.create(16, { offloadBusyReads: ${String(offloadBusyReads)} });`,
      `const fd = fs.openSync(${JSON.stringify(path)}, 'r+');`,
      'const transfer = (op, buffer, position) => new Promise((resolve) =>',
      '  ring.prepareTransfer(fd, op, [buffer], position, 0, resolve));',
      'const lone = new Uint8Array(4096);',
      'const results = [await transfer("read", lone, 4096)];',
      'const afterLone = ring.counters.offloadedReads;',
      'const buffers = Array.from({ length: 8 }, () => new Uint8Array(65536));',
      'results.push(...await Promise.all([',
      '  ...buffers.map((buffer, index) => transfer("read", buffer, index * 65536)),',
      '  transfer("read", new Uint8Array(4096), 8192)]));',
      'const afterBatch = ring.counters.offloadedReads;',
      "const workers = fs.readdirSync('/proc/self/task').filter((task) =>",
      "  fs.readFileSync(`/proc/self/task/${task}/comm`, 'utf8').startsWith('iou-wrk')).length;",
      'results.push(...await Promise.all([',
      '  transfer("write", new Uint8Array(4096).fill(7), 1024 * 1024 - 4096),',
      '  transfer("read", new Uint8Array(65536), 0)]));',
      'const hash = (bytes) => createHash("sha256").update(bytes).digest("hex");',
      'console.log(JSON.stringify({ results, afterLone, afterBatch,',
      '  offloaded: ring.counters.offloadedReads,',
      '  workers, lone: hash(lone), buffers: buffers.map(hash) }));',
      'ring.close();',
    ].join('\n');
    const run = async (offloadBusyReads: boolean) => JSON.parse((await execFileAsync(
      process.execPath, ['--import', 'tsx', '--input-type=module', '--eval',
        script(offloadBusyReads)],
      // Only this ring's workers: libuv's own io_uring (opt-in) would add some of its own.
      { timeout: 20_000, env: { ...process.env, UV_USE_IO_URING: '0' } })).stdout) as {
      results: number[]; afterLone: number; afterBatch: number; offloaded: number;
      workers: number;
      lone: string; buffers: string[];
    };
    const inline = await run(false);
    const offloaded = await run(true);
    assert.deepEqual(inline.results, [4096, ...new Array(8).fill(65536), 4096, 4096, 65536]);
    assert.deepEqual(offloaded.results, inline.results);
    assert.equal(inline.offloaded, 0);
    // io-wq workers are threads of the process (iou-wrk-*) since 5.12, kernel threads before.
    const [major = 0, minor = 0] = os.release().split('.').map(Number);
    const workersVisible = major > 5 || (major === 5 && minor >= 12);
    if (workersVisible) {
      assert.equal(inline.workers, 0, 'cached reads and nothing else: no kernel worker');
      assert.ok(offloaded.workers >= 1, 'the kernel ran the offloaded reads on its workers');
    }
    assert.equal(offloaded.afterLone, 0, 'a read on an idle ring stays inline');
    assert.equal(offloaded.afterBatch, 7,
      'eight large reads at once: the first inline, seven behind it; a small one stays inline');
    assert.equal(OFFLOAD_READ_BYTES_MIN, 65536);
    assert.equal(offloaded.offloaded, 8, 'a write and a read behind it: only the read');
    const expected = pattern(1024 * 1024, 3);
    const check = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');
    assert.equal(offloaded.lone, check(expected.subarray(4096, 8192)));
    assert.deepEqual(offloaded.buffers, Array.from({ length: 8 },
      (_, index) => check(expected.subarray(index * 65536, (index + 1) * 65536))));
    assert.deepEqual(inline.buffers, offloaded.buffers);
    assert.throws(() => IoUring.create(4, { sqPollIdleMs: 5, offloadBusyReads: true }),
      /no polling thread/);
  });

  test('a callback that throws surfaces later and its batch still completes', async (t) => {
    const ring = ringOrSkip(t);
    if (ring === null) return;
    const { path } = await dataFile(t, 8192);
    const fd = openFor(t, path, 'r');
    const captured: unknown[] = [];
    process.setUncaughtExceptionCaptureCallback((error) => captured.push(error));
    try {
      ring.prepareTransfer(fd, 'read', [new Uint8Array(512)], 0, 0, () => {
        throw new Error('a caller bug');
      });
      const second = transfer(ring, fd, 'read', [new Uint8Array(512)], 512);
      assert.equal(await second, 512);
      await new Promise((resolve) => setImmediate(resolve));
    } finally {
      process.setUncaughtExceptionCaptureCallback(null);
    }
    assert.equal((captured[0] as Error | undefined)?.message, 'a caller bug');
    assert.equal(await transfer(ring, fd, 'read', [new Uint8Array(512)], 0), 512,
      'the ring still delivers afterwards');
  });

  test('with a kernel polling thread, submissions wake it after it went idle', async (t) => {
    const ring = ringOrSkip(t, { sqPollIdleMs: 5 });
    if (ring === null) return;
    const { path } = await dataFile(t, 64 * 1024);
    const fd = openFor(t, path, 'r');
    const buffer = new Uint8Array(4096);
    assert.equal(await transfer(ring, fd, 'read', [buffer], 4096), 4096);
    await new Promise((resolve) => setTimeout(resolve, 50)); // Ten idle periods: it sleeps.
    assert.equal(await transfer(ring, fd, 'read', [buffer], 8192), 4096);
    assert.deepEqual(buffer, pattern(64 * 1024, 3).subarray(8192, 12288));
  });

  test('with a polling thread, an entry reaches the kernel as soon as it is prepared',
    async (t) => {
      const ring = ringOrSkip(t, { sqPollIdleMs: 2000 });
      if (ring === null) return;
      const { path } = await dataFile(t, 64 * 1024);
      const fd = openFor(t, path, 'r');
      const buffer = new Uint8Array(4096);
      // The thread first runs when the first batch wakes it; then it polls for 2 s.
      assert.equal(await transfer(ring, fd, 'read', [buffer], 0), 4096);
      const expected = pattern(64 * 1024, 3).subarray(12288, 16384);
      let completed = false;
      const done = new Promise<number>((resolve) => {
        ring.prepareTransfer(fd, 'read', [buffer], 12288, 0, (result) => {
          completed = true;
          resolve(result);
        });
      });
      // Still inside this JavaScript task: no microtask has run, yet the kernel reads.
      const deadlineMs = Date.now() + 10_000;
      while (!Buffer.from(buffer).equals(expected) && Date.now() < deadlineMs) { /* wait */ }
      assert.deepEqual(buffer, expected, 'the kernel read it before the task ended');
      assert.equal(completed, false, 'the callback waits for the event loop');
      assert.equal(await done, 4096);
    });

  test('spinning: chains of callbacks and of promises keep going; the loop still turns',
    async (t) => {
      const ring = ringOrSkip(t, { sqPollIdleMs: 10, spinUs: 1000 });
      if (ring === null) return;
      const lengthBytes = 1024 * 1024;
      const { path } = await dataFile(t, lengthBytes);
      const fd = openFor(t, path, 'r');
      const expected = pattern(lengthBytes, 3);
      let turns = 0;
      let turning = true;
      let lastTurnMs = performance.now();
      let longestGapMs = 0;
      const turn = (): void => {
        turns += 1;
        const nowMs = performance.now();
        longestGapMs = Math.max(longestGapMs, nowMs - lastTurnMs);
        lastTurnMs = nowMs;
        if (turning) setImmediate(turn);
      };
      setImmediate(turn);
      const mismatches: number[] = [];
      const check = (buffer: Uint8Array, positionBytes: number): void => {
        if (!Buffer.from(buffer).equals(expected.subarray(positionBytes, positionBytes + 4096))) {
          mismatches.push(positionBytes);
        }
      };
      // Each read issued from the previous one's callback, for 300 ms.
      const endMs = Date.now() + 300;
      let chained = 0;
      await new Promise<void>((resolve) => {
        const buffer = new Uint8Array(4096);
        const next = (): void => {
          const positionBytes = (chained * 4096 * 7) % lengthBytes;
          ring.prepareTransfer(fd, 'read', [buffer], positionBytes, 0, (result) => {
            assert.equal(result, 4096);
            check(buffer, positionBytes);
            chained += 1;
            if (Date.now() < endMs) next();
            else resolve();
          });
        };
        next();
      });
      // The same through awaited promises: the continuation prepares the next read.
      const buffer = new Uint8Array(4096);
      for (let index = 0; index < 300; index += 1) {
        const positionBytes = (index * 4096 * 5) % lengthBytes;
        assert.equal(await transfer(ring, fd, 'read', [buffer], positionBytes), 4096);
        check(buffer, positionBytes);
      }
      turning = false;
      assert.deepEqual(mismatches, []);
      assert.ok(chained > 10, `${chained} chained reads`);
      assert.ok(ring.counters.spinHits > 0, 'some completions were waited for, not woken for');
      // A wake-up spins for at most 1 ms: the event loop turns all through the chains.
      assert.ok(turns >= 20, `the event loop turned ${turns} times`);
      assert.ok(longestGapMs < 100, `the event loop stood still for ${longestGapMs} ms`);
    });

  test('the entry carries ioprio to the kernel, which checks it', async (t) => {
    const ring = ringOrSkip(t);
    if (ring === null) return;
    const { path } = await dataFile(t, 8192);
    const fd = openFor(t, path, 'r');
    const idle = 3 << 13;
    const bestEffortLowest = (2 << 13) | 7;
    assert.equal(await transfer(ring, fd, 'read', [new Uint8Array(4096)], 0, idle), 4096);
    assert.equal(await transfer(ring, fd, 'read', [new Uint8Array(4096)], 0, bestEffortLowest),
      4096);
    // Class 7 does not exist: only a kernel that read the field can refuse it (io_uring's
    // read preparation runs ioprio_check_cap on a non-zero ioprio).
    assert.equal(await transfer(ring, fd, 'read', [new Uint8Array(4096)], 0, 7 << 13), -22);
    assert.throws(() => ring.prepareTransfer(fd, 'read', [new Uint8Array(4096)], 0, 0x10000,
      () => {}), /16-bit/);
  });

  test('close completes what is in flight, then refuses everything', async (t) => {
    const ring = ringOrSkip(t);
    if (ring === null) return;
    const { path } = await dataFile(t, 64 * 1024);
    const fd = openFor(t, path, 'r');
    const results: number[] = [];
    for (let index = 0; index < 4; index += 1) {
      ring.prepareTransfer(fd, 'read', [new Uint8Array(4096)], index * 4096, 0,
        (result) => results.push(result));
    }
    ring.close();
    assert.deepEqual(results, [4096, 4096, 4096, 4096], 'close waited for every completion');
    assert.equal(ring.hasRoom, false);
    assert.equal(ring.prepareTransfer(fd, 'read', [new Uint8Array(512)], 0, 0, () => {}), false);
    ring.close(); // Idempotent.
  });

  test('a process waits for its requests in flight, then exits on its own', async (t) => {
    if (ringOrSkip(t) === null) return;
    const { path } = await dataFile(t, 8192);
    const script = [
      "import fs from 'node:fs';",
      `import { IoUring } from ${JSON.stringify(new URL('./io-uring.ts', import.meta.url).href)};`,
      'const ring = IoUring.create(4);',
      `const fd = fs.openSync(${JSON.stringify(path)}, 'r');`,
      'ring.prepareTransfer(fd, "read", [new Uint8Array(4096)], 4096, 0, (result) => {',
      '  console.log(`completed ${result}`);',
      '});',
    ].join('\n');
    const { stdout } = await execFileAsync(process.execPath,
      ['--import', 'tsx', '--input-type=module', '--eval', script], { timeout: 20_000 });
    assert.equal(stdout.trim(), 'completed 4096');
  });
});
