// NBD device under injected faults from real nbdkit servers: the error filter (by rate, by
// operation, by trigger file), the delay filter (out-of-order replies), the server killed
// mid-transfer with SIGTERM and SIGKILL, request timeouts, and bounded reconnect. Every
// request is awaited with a deadline, so a hang fails the test instead of stalling it.

import assert from 'node:assert/strict';
import { rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { isDmIoError, type IoError } from '../src/errors.js';
import { openNbdDevice } from '../src/nbd/open-nbd.js';
import type { NbdDevice } from '../src/nbd/nbd-device.js';
import { flushRequest, pattern, request, submit } from './helpers/device-io.js';
import { makeTempDir, requireTools, startNbdkit } from './helpers/nbdkit.js';

const KiB = 1024;

function causeCode(error: IoError | null): string | undefined {
  const cause = error?.cause as { code?: string } | undefined;
  return cause?.code;
}

/** The device is broken and refuses a new request at once with DMIO_ERR_NBD_BROKEN. */
async function assertBrokenNow(device: NbdDevice): Promise<void> {
  // The server's exit and the client's seeing EOF are two events; allow a moment between them.
  await waitFor(() => device.broken, 1000);
  assert.ok(isDmIoError(device.brokenError, 'DMIO_ERR_NBD_BROKEN'));
  const started = performance.now();
  const late = await submit(device, request('read', 0, 8, [new Uint8Array(4096)]), 1000);
  assert.ok(isDmIoError(late?.cause, 'DMIO_ERR_NBD_BROKEN'));
  assert.ok(performance.now() - started < 100, 'a broken device fails at once');
}

/** Polls `condition` every 5 ms; fails after `timeoutMs`. */
async function waitFor(condition: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!condition()) {
    assert.ok(performance.now() < deadline, `condition not met within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

describe('nbdkit error filter', () => {
  test('per-operation errors fail only the right requests, with the mapped errno', async (t) => {
    if (!requireTools(t, 'nbdkit')) return;
    const server = await startNbdkit(['--filter=error', 'memory', '8M', 'error=ENOSPC',
      'error-pwrite-rate=100%', 'error-trim=EPERM', 'error-trim-rate=100%']);
    const device = await openNbdDevice(server.uri);
    try {
      const write = await submit(device, request('write', 0, 8, [pattern(0, 4096)]));
      assert.equal(write?.errno, 'ENOSPC');
      assert.equal(write?.syscall, 'NBD_CMD_WRITE');
      assert.equal(write?.device, server.uri);
      assert.equal(write?.sector, 0);
      assert.equal(causeCode(write), 'DMIO_ERR_NBD_SERVER');
      const trim = await submit(device, request('discard', 0, 8));
      assert.equal(trim?.errno, 'EPERM');
      assert.equal(trim?.syscall, 'NBD_CMD_TRIM');
      assert.equal(await submit(device, request('write-zeroes', 0, 8)), null);
      assert.equal(await submit(device, request('read', 0, 8, [new Uint8Array(4096)])), null);
      assert.equal(await submit(device, flushRequest()), null);
      assert.equal(device.broken, false, 'server errors never break the device');
    } finally {
      await device.close();
      await server.stop();
    }
  });

  test('random error rate: failures are EIO, successes carry correct data', async (t) => {
    if (!requireTools(t, 'nbdkit')) return;
    const server = await startNbdkit(['--filter=error', 'pattern', '8M', 'error-rate=30%']);
    const device = await openNbdDevice(server.uri);
    try {
      const buffers = Array.from({ length: 80 }, () => new Uint8Array(4096));
      const results = await Promise.all(buffers.map((buffer, index) =>
        submit(device, request('read', index * 8, 8, [buffer]))));
      const failed = results.filter((error) => error !== null);
      assert.ok(failed.length > 0 && failed.length < 80, `${failed.length} of 80 failed`);
      for (const error of failed) assert.equal(error?.errno, 'EIO');
      results.forEach((error, index) => {
        if (error !== null) return;
        const view = Buffer.from(buffers[index] ?? []);
        assert.equal(view.readBigUInt64BE(0), BigInt(index * 4096));
        assert.equal(view.readBigUInt64BE(4088), BigInt(index * 4096 + 4088));
      });
      assert.equal(device.broken, false);
    } finally {
      await device.close();
      await server.stop();
    }
  });

  test('a trigger file arms and disarms the errors', async (t) => {
    if (!requireTools(t, 'nbdkit')) return;
    const dir = makeTempDir();
    const trigger = path.join(dir, 'inject');
    const server = await startNbdkit(['--filter=error', 'memory', '8M', 'error-rate=100%',
      `error-file=${trigger}`], { dir });
    const device = await openNbdDevice(server.uri);
    const read = (): Promise<IoError | null> =>
      submit(device, request('read', 0, 8, [new Uint8Array(4096)]));
    try {
      assert.equal(await read(), null);
      writeFileSync(trigger, '');
      assert.equal((await read())?.errno, 'EIO');
      assert.equal((await submit(device, request('write', 0, 8, [new Uint8Array(4096)])))?.errno, 'EIO');
      rmSync(trigger);
      assert.equal(await read(), null);
    } finally {
      await device.close();
      await server.stop();
    }
  });
});

describe('nbdkit delay filter', () => {
  test('out-of-order replies are matched to the right requests', async (t) => {
    if (!requireTools(t, 'nbdkit')) return;
    const server = await startNbdkit(['-t', '64', '--filter=delay', 'memory', '8M', 'rdelay=150ms']);
    const device = await openNbdDevice(server.uri);
    try {
      for (let index = 0; index < 16; index += 1) {
        assert.equal(await submit(device, request('write', index * 64, 64, [pattern(index * 32 * KiB, 32 * KiB, index)])), null);
      }
      const order: string[] = [];
      const jobs: Array<Promise<void>> = [];
      for (let index = 0; index < 16; index += 1) {
        const buffer = new Uint8Array(32 * KiB);
        jobs.push(submit(device, request('read', index * 64, 64, [buffer])).then((error) => {
          assert.equal(error, null);
          assert.deepEqual(buffer, pattern(index * 32 * KiB, 32 * KiB, index));
          order.push(`read${index}`);
        }));
        const sector = 4096 + index * 8;
        jobs.push(submit(device, request('write', sector, 8, [pattern(sector * 512, 4096)])).then((error) => {
          assert.equal(error, null);
          order.push(`write${index}`);
        }));
      }
      await Promise.all(jobs);
      // Every write was sent after a read yet finished before all reads: replies came out of order.
      assert.ok(order.indexOf('write15') < order.indexOf('read0'), order.join(' '));
    } finally {
      await device.close();
      await server.stop();
    }
  });
});

describe('server killed mid-transfer', () => {
  test('SIGKILL: every request in flight fails, nothing hangs, the device is broken', async (t) => {
    if (!requireTools(t, 'nbdkit')) return;
    // 2 Mbit/s: eight 256 KiB reads need seconds, so most are mid-transfer when the signal lands.
    const server = await startNbdkit(['--filter=rate', 'memory', '16M', 'rate=2M']);
    const device = await openNbdDevice(server.uri);
    try {
      let killed = false;
      const settledAfterKill: Array<IoError | null> = [];
      const jobs = Array.from({ length: 8 }, (_unused, index) =>
        submit(device, request('read', index * 512, 512, [new Uint8Array(256 * KiB)]), 5000)
          .then((error) => { if (killed) settledAfterKill.push(error); }));
      jobs.push(submit(device, request('write', 8192, 512, [new Uint8Array(256 * KiB)]), 5000)
        .then((error) => { if (killed) settledAfterKill.push(error); }));
      await new Promise((resolve) => setTimeout(resolve, 300));
      killed = true;
      await server.stop('SIGKILL');
      await Promise.all(jobs);
      assert.ok(settledAfterKill.length >= 4, `${settledAfterKill.length} in flight at the kill`);
      for (const error of settledAfterKill) {
        assert.equal(error?.errno, 'EIO');
        assert.equal(causeCode(error), 'DMIO_ERR_NBD_DISCONNECTED');
      }
      await assertBrokenNow(device);
    } finally {
      await device.close();
      await server.stop();
    }
  });

  test('SIGTERM: requests in flight settle (ESHUTDOWN or disconnect), the device is broken', async (t) => {
    if (!requireTools(t, 'nbdkit')) return;
    const server = await startNbdkit(['--filter=delay', 'memory', '16M', 'rdelay=1500ms']);
    const device = await openNbdDevice(server.uri);
    try {
      const jobs = Array.from({ length: 8 }, (_unused, index) =>
        submit(device, request('read', index * 512, 512, [new Uint8Array(256 * KiB)]), 5000));
      await new Promise((resolve) => setTimeout(resolve, 100));
      await server.stop('SIGTERM');
      for (const error of await Promise.all(jobs)) {
        assert.ok(error !== null, 'delayed reads cannot have succeeded');
        const disconnected = causeCode(error) === 'DMIO_ERR_NBD_DISCONNECTED' && error.errno === 'EIO';
        const shutdown = causeCode(error) === 'DMIO_ERR_NBD_SERVER' && error.errno === 'ESHUTDOWN';
        assert.ok(disconnected || shutdown, `${error.errno} ${causeCode(error)}`);
      }
      await assertBrokenNow(device);
    } finally {
      await device.close();
      await server.stop();
    }
  });

  test('a request timeout fails everything in flight with ETIMEDOUT', async (t) => {
    if (!requireTools(t, 'nbdkit')) return;
    const server = await startNbdkit(['--filter=delay', 'memory', '8M', 'rdelay=10000ms']);
    const device = await openNbdDevice(server.uri, { requestTimeoutMs: 300 });
    try {
      const started = performance.now();
      const results = await Promise.all(Array.from({ length: 4 }, (_unused, index) =>
        submit(device, request('read', index * 8, 8, [new Uint8Array(4096)]), 3000)));
      const elapsedMs = performance.now() - started;
      assert.ok(elapsedMs >= 290 && elapsedMs < 2000, `timed out after ${elapsedMs} ms`);
      for (const error of results) {
        assert.equal(error?.errno, 'ETIMEDOUT');
        assert.equal(causeCode(error), 'DMIO_ERR_NBD_TIMEOUT');
      }
      assert.equal(device.broken, true);
    } finally {
      await device.close();
      await server.stop('SIGKILL');
    }
  });
});

describe('bounded reconnect', () => {
  test('reconnects to a restarted server; unflushed writes make the next flush fail once', async (t) => {
    if (!requireTools(t, 'nbdkit')) return;
    const dir = makeTempDir();
    const first = await startNbdkit(['memory', '8M'], { dir });
    const device = await openNbdDevice(first.uri, { reconnect: { attemptsMax: 100, delayMs: 20 } });
    let second: Awaited<ReturnType<typeof startNbdkit>> | null = null;
    try {
      assert.equal(await submit(device, request('write', 0, 8, [pattern(0, 4096)])), null);
      first.child.kill('SIGKILL');
      await first.exited;
      await waitFor(() => device.connectionCount === 0, 1000);
      // Submitted while the server is down: waits for the reconnect, then runs.
      const waiting = submit(device, request('write', 8, 8, [pattern(4096, 4096)]), 5000);
      await new Promise((resolve) => setTimeout(resolve, 100));
      second = await startNbdkit(['memory', '8M'], { dir });
      assert.equal(await waiting, null);
      assert.equal(device.broken, false);
      assert.equal(device.connectionCount, 1);
      const lost = await submit(device, flushRequest());
      assert.equal(lost?.errno, 'EIO', 'the write acknowledged before the crash may be lost');
      assert.equal(causeCode(lost), 'DMIO_ERR_NBD_DISCONNECTED');
      assert.equal(await submit(device, flushRequest()), null);
      const out = new Uint8Array(4096);
      assert.equal(await submit(device, request('read', 8, 8, [out])), null);
      assert.deepEqual(out, pattern(4096, 4096));
    } finally {
      await device.close();
      await (second ?? first).stop();
    }
  });

  test('gives up after attemptsMax failures and breaks the device', async (t) => {
    if (!requireTools(t, 'nbdkit')) return;
    const server = await startNbdkit(['memory', '8M']);
    const device = await openNbdDevice(server.uri, { reconnect: { attemptsMax: 3, delayMs: 10 } });
    try {
      await server.stop('SIGKILL');
      await waitFor(() => device.connectionCount === 0, 1000);
      // Submitted while reconnecting: waits, then fails once the attempts are exhausted.
      const result = await submit(device, request('read', 0, 8, [new Uint8Array(4096)]), 3000);
      assert.ok(result !== null);
      assert.ok(isDmIoError(result.cause, 'DMIO_ERR_NBD_BROKEN'), String(result.cause));
      assert.equal(device.broken, true);
    } finally {
      await device.close();
    }
  });
});
