// The server's synchronous WRITE (export-io `writeBytesNow`): whole blocks written at once on
// RAM and on a file whose engine writes inline, with the device's error mapped for the client;
// and `undefined`, with nothing written, for every write that must take the asynchronous path:
// FUA, partial blocks, an empty write, a range held by a merge (exclusive range or the threads'
// gate), a device that cannot block, a file whose engine would have to wait.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { dmIoClientCreate } from '../core/client.js';
import type { BlockDevice } from '../devices/block-device.js';
import { createRamDevice } from '../devices/ram-device.js';
import { requestError } from '../devices/request-error.js';
import { openFileDevice } from '../devices/file-device.js';
import { IoUringEngine } from '../devices/file-ring.js';
import { NBD_EIO } from '../nbd/protocol.js';
import { NonBlockingDevice, faultyRam, pattern, peek } from '../../test/helpers/devices.js';
import { tempDir } from '../../test/helpers/tmp.js';
import { writeBytesNow } from './export-io.js';
import { ServedExport } from './nbd-export.js';
import { createWriteGateState, ThreadWriteGate } from './thread-write-gate.js';

const SIZE_BYTES = 256 * 1024;

test('whole blocks are written at once; FUA, partial blocks and empty writes are left alone',
  () => {
    const device = createRamDevice({ sizeBytes: SIZE_BYTES });
    const served = new ServedExport({ name: '', device });
    const client = dmIoClientCreate();
    const data = pattern(8192, 1);
    assert.equal(writeBytesNow(client, served, 4096, data, false), null);
    assert.deepEqual(peek(device, 8, 16), data);
    const before = peek(device, 0, SIZE_BYTES / 512);
    assert.equal(writeBytesNow(client, served, 0, pattern(4096, 2), true), undefined, 'FUA');
    assert.equal(writeBytesNow(client, served, 100, pattern(512, 3), false), undefined,
      'a partial block (a merge)');
    assert.equal(writeBytesNow(client, served, 0, new Uint8Array(0), false), undefined, 'empty');
    assert.deepEqual(peek(device, 0, SIZE_BYTES / 512), before, 'nothing written');
    assert.equal(served.lock.heldCount, 0);
  });

test('a range held by a merge, or a gate held by another thread\'s merge, is left alone',
  async () => {
    const device = createRamDevice({ sizeBytes: SIZE_BYTES });
    const client = dmIoClientCreate();
    const data = pattern(4096, 4);
    // One thread: a merge holds its own blocks.
    const unthreaded = new ServedExport({ name: '', device });
    const merge = await unthreaded.lock.acquire(0, 8192, true);
    assert.equal(writeBytesNow(client, unthreaded, 4096, data, false), undefined, 'overlaps');
    assert.equal(writeBytesNow(client, unthreaded, 8192, data, false), null, 'beside it');
    merge();
    assert.equal(unthreaded.lock.heldCount, 0, 'every range released');
    // Threads: a merge on any thread holds the whole export (the gate).
    const state = createWriteGateState(2);
    const served = new ServedExport({ name: '', device }, new ThreadWriteGate(state, 0));
    const otherThread = await new ThreadWriteGate(state, 1).enter(true);
    assert.equal(writeBytesNow(client, served, 65536, data, false), undefined, 'gate held');
    otherThread();
    assert.equal(writeBytesNow(client, served, 65536, data, false), null);
    assert.deepEqual(peek(device, 16, 8), data);
    assert.deepEqual(peek(device, 128, 8), data);
    assert.equal(served.lock.heldCount, 0, 'every range released');
    // The gate was left: another thread's merge gets it at once.
    const next = new ThreadWriteGate(state, 1).enter(true);
    assert.equal(typeof next === 'function' || await Promise.race([next.then(() => true),
      new Promise((resolve) => setTimeout(() => resolve(false), 50))]), true);
    (await next)();
  });

test('a device error is the client\'s failure; devices without nowait are left alone', () => {
  const ram = createRamDevice({ sizeBytes: SIZE_BYTES });
  let calls = 0;
  const failing: BlockDevice = {
    name: 'failing', kind: 'ram', sizeSectors: ram.sizeSectors, readOnly: false,
    limits: ram.limits, closed: false, canBlock: true, nowait: true,
    submit: (request, done) => queueMicrotask(() => done(requestError(failing, request, 'EIO'))),
    submitSync: (request) => {
      calls += 1;
      return requestError(failing, request, 'EIO');
    },
    close: () => ram.close(),
  };
  const client = dmIoClientCreate();
  const failure = writeBytesNow(client, new ServedExport({ name: '', device: failing }), 4096,
    pattern(4096, 5), false);
  assert.equal(failure?.errorNumber, NBD_EIO);
  assert.equal(calls, 1);
  // Neither a device that cannot block nor a fault device (which declares no nowait) is called.
  const { dev: inner } = faultyRam(SIZE_BYTES / 512);
  const remote = new ServedExport({ name: '', device: new NonBlockingDevice(inner, 'nbd-like') });
  assert.equal(writeBytesNow(client, remote, 0, pattern(4096, 6), false), undefined);
  const { dev: fault } = faultyRam(SIZE_BYTES / 512, { ranges: [{ sector: 8, countSectors: 8 }] });
  assert.equal(writeBytesNow(client, new ServedExport({ name: '', device: fault }), 4096,
    pattern(4096, 5), false), undefined);
  assert.equal(inner.trace.length + fault.trace.length, 0, 'nothing reached them');
});

test('a write longer than one device request is left alone', () => {
  const device = createRamDevice({ sizeBytes: 16 * 1024 * 1024 });
  const served = new ServedExport({ name: '', device });
  const client = dmIoClientCreate();
  const longest = device.limits.maxSectorsPerRequest * 512;
  assert.ok(longest + 4096 <= device.sizeSectors * 512, 'the device holds a longer write');
  assert.equal(writeBytesNow(client, served, 0, pattern(longest + 4096, 8), false), undefined);
  assert.deepEqual(peek(device, 0, 8), new Uint8Array(4096), 'nothing written');
  assert.equal(writeBytesNow(client, served, 0, pattern(65536, 9), false), null);
  assert.deepEqual(peek(device, 0, 128), pattern(65536, 9));
});

test('a file: written at once on an engine with inline writes, left alone on one without',
  async (t) => {
    const directory = await tempDir(t, { parent: '/dev/shm' });
    const engine = new IoUringEngine({ sqPollIdleMs: 0, inlineWrites: true });
    t.after(() => engine.close());
    const client = dmIoClientCreate();
    const data = pattern(64 * 1024, 7);
    for (const [name, options, written] of [
      ['inline.img', { engine }, true], ['ring.img', {}, false],
    ] as const) {
      const path = join(directory, name);
      fs.writeFileSync(path, new Uint8Array(SIZE_BYTES));
      const device = await openFileDevice(path, options);
      t.after(() => device.close());
      const result = writeBytesNow(client, new ServedExport({ name, device }), 65536, data, false);
      assert.equal(result, written ? null : undefined, name);
      assert.equal(device.stats.inlineWrites, written ? 1 : 0, name);
      const onDisk = fs.readFileSync(path).subarray(65536, 131072);
      assert.deepEqual(onDisk, written ? Buffer.from(data) : Buffer.alloc(data.length), name);
    }
  });
