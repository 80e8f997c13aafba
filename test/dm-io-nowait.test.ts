// dm-io's `nowait` (the kernel's REQ_NOWAIT) on real files: `dmIoBlocking` writes at once what a
// device can finish on the calling thread (a whole-page buffered write on an engine with inline
// writes, anything on a RAM device) and fails the rest with WouldBlockError, errno EAGAIN,
// having written nothing for that region, while the other regions of the request are written
// (the bitset); a device that does not declare `nowait` is never called, nor is one whose
// region would need bounce pages or split into several requests; the asynchronous `dmIo`
// refuses the flag with nothing submitted.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import {
  allocAligned, createRamDevice, dmIo, dmIoBlocking, dmIoClientCreate, IoUringEngine, isDmIoError,
  openFileDevice, WouldBlockError, type FileDevice,
} from '../src/index.js';
import { DirectDevice, faultyRam, pattern, peek, thrown } from './helpers/devices.js';
import { tempDir } from './helpers/tmp.js';

const IMAGE_BYTES = 1024 * 1024;

/** A 1 MiB image of a known pattern on tmpfs, opened on `engine` (the default one if absent). */
async function image(
  t: TestContext, name: string, engine?: IoUringEngine,
): Promise<{ device: FileDevice; path: string; before: Buffer }> {
  const path = join(await tempDir(t, { parent: '/dev/shm' }), name);
  fs.writeFileSync(path, pattern(IMAGE_BYTES, 3));
  const device = await openFileDevice(path, engine === undefined ? {} : { engine });
  t.after(() => device.close());
  return { device, path, before: fs.readFileSync(path) };
}

function inlineEngine(t: TestContext): IoUringEngine {
  const engine = new IoUringEngine({ sqPollIdleMs: 0, inlineWrites: true });
  t.after(() => engine.close());
  return engine;
}

test('nowait: a whole-page buffered write on an inline-writes engine is written at once',
  async (t) => {
    const { device, path } = await image(t, 'inline.img', inlineEngine(t));
    assert.equal(device.nowait, true, 'a buffered file on an inline-writes engine declares it');
    const client = dmIoClientCreate();
    const data = pattern(16 * 1024, 7);
    const result = dmIoBlocking({ op: 'write', flags: { nowait: true }, client,
      mem: { type: 'kmem', data } }, [{ device, sector: 64, count: 32 }]);
    assert.equal(result.errorBits, 0n);
    assert.equal(device.stats.inlineWrites, 1);
    assert.deepEqual(fs.readFileSync(path).subarray(64 * 512, 96 * 512), Buffer.from(data));
  });

test('nowait: what the device would wait for fails with WouldBlockError, nothing written',
  async (t) => {
    const engine = inlineEngine(t);
    const { device, path, before } = await image(t, 'refused.img', engine);
    const client = dmIoClientCreate();
    const cases: Array<[string, 'read' | 'write', number, number, { fua?: boolean }]> = [
      ['a write inside a page (read-modify-write of the page)', 'write', 1, 8, {}],
      ['a write of part of a page', 'write', 8, 4, {}],
      ['a write with FUA (a flush waits for the disk)', 'write', 8, 8, { fua: true }],
      ['a read (the engine reads on its ring)', 'read', 0, 8, {}],
    ];
    for (const [name, op, sector, count, flags] of cases) {
      const data = op === 'write' ? pattern(count * 512, 9) : new Uint8Array(count * 512);
      const result = dmIoBlocking({ op, flags: { ...flags, nowait: true }, client,
        mem: { type: 'kmem', data } }, [{ device, sector, count }]);
      assert.equal(result.errorBits, 1n, name);
      const error = result.errors[0];
      assert.ok(error instanceof WouldBlockError, name);
      assert.equal(error.code, 'DMIO_ERR_WOULD_BLOCK');
      assert.equal(error.errno, 'EAGAIN');
      assert.deepEqual([error.device, error.sector, error.countSectors, error.regionIndex],
        [device.name, sector, count, 0], name);
    }
    assert.deepEqual(fs.readFileSync(path), before, 'nothing written');
    assert.equal(device.stats.inlineWrites + device.stats.writes + device.stats.reads, 0);
    // Without nowait the same blocking write goes through.
    const data = pattern(4 * 512, 10);
    assert.equal(dmIoBlocking({ op: 'write', client, mem: { type: 'kmem', data } },
      [{ device, sector: 8, count: 4 }]).errorBits, 0n);
    assert.deepEqual(fs.readFileSync(path).subarray(8 * 512, 12 * 512), Buffer.from(data));
  });

test('nowait: one region refused, the others written (the error bitset)', async (t) => {
  const inline = await image(t, 'a.img', inlineEngine(t));
  // The default engine writes on its ring or threadpool: never at once.
  const ringOnly = await image(t, 'b.img');
  const ram = createRamDevice({ sizeBytes: IMAGE_BYTES });
  const client = dmIoClientCreate();
  const data = pattern(8 * 1024, 11);
  const result = dmIoBlocking({ op: 'write', flags: { nowait: true }, client,
    mem: { type: 'kmem', data } }, [
    { device: inline.device, sector: 16, count: 16 },
    { device: ringOnly.device, sector: 16, count: 16 },
    { device: ram, sector: 16, count: 16 },
  ]);
  assert.equal(result.errorBits, 0b010n);
  const refused = result.errors[1];
  assert.ok(refused instanceof WouldBlockError);
  assert.equal(refused.regionIndex, 1);
  assert.deepEqual(fs.readFileSync(inline.path).subarray(16 * 512, 32 * 512), Buffer.from(data));
  assert.deepEqual(fs.readFileSync(ringOnly.path), ringOnly.before, 'the refused region untouched');
  assert.deepEqual(peek(ram, 16, 16), data, 'memory never waits');
});

test('dmIo refuses nowait (DMIO_ERR_INVALID_ARG_VALUE) with nothing submitted; bad types are typed',
  async (t) => {
    const { device, path, before } = await image(t, 'async.img', inlineEngine(t));
    const client = dmIoClientCreate();
    const data = pattern(4096, 12);
    const refused = thrown(() => dmIo({ op: 'write', flags: { nowait: true }, client,
      mem: { type: 'kmem', data } }, [{ device, sector: 0, count: 8 }]));
    assert.ok(isDmIoError(refused, 'DMIO_ERR_INVALID_ARG_VALUE'));
    assert.equal((refused as { argument?: string }).argument, 'request.flags.nowait');
    const notify = thrown(() => dmIo({ op: 'write', flags: { nowait: true }, client,
      mem: { type: 'kmem', data }, notify: { fn: () => assert.fail('never called') } },
    [{ device, sector: 0, count: 8 }]));
    assert.ok(isDmIoError(notify, 'DMIO_ERR_INVALID_ARG_VALUE'));
    const badType = thrown(() => dmIoBlocking({ op: 'write',
      flags: { nowait: 'yes' as unknown as boolean }, client, mem: { type: 'kmem', data } },
    [{ device, sector: 0, count: 8 }]));
    assert.ok(isDmIoError(badType, 'DMIO_ERR_INVALID_ARG_TYPE'));
    assert.equal((badType as { argument?: string }).argument, 'request.flags.nowait');
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(fs.readFileSync(path), before, 'nothing written');
    assert.equal(client.inflight, 0);
  });

/** An O_DIRECT-like device that declares `nowait` (its memory must be aligned). */
class NowaitDirectDevice extends DirectDevice {
  readonly nowait = true;
}

test('nowait: devices that do not declare it, bounce pages and split regions are refused untouched',
  async (t) => {
    const client = dmIoClientCreate();
    const data = pattern(8192, 13);
    const refused = (result: { errorBits: bigint; errors: readonly unknown[] }): boolean =>
      result.errorBits === 1n && result.errors[0] instanceof WouldBlockError;
    // A file on the default engine, and an O_DIRECT one: they declare nothing.
    const ringOnly = await image(t, 'ring.img');
    assert.equal(ringOnly.device.nowait, false);
    // A fault device does not declare it either (its delays and faults are asynchronous).
    const { dev: fault } = faultyRam(64);
    assert.ok(refused(dmIoBlocking({ op: 'write', flags: { nowait: true }, client,
      mem: { type: 'kmem', data } }, [{ device: fault, sector: 0, count: 16 }])));
    assert.equal(fault.trace.length, 0, 'never called');
    // A device that declares it, but whose region needs bounce pages: refused before bouncing.
    const ram = createRamDevice({ sizeBytes: 64 * 512 });
    const direct = new NowaitDirectDevice(ram);
    assert.ok(refused(dmIoBlocking({ op: 'write', flags: { nowait: true }, client,
      mem: { type: 'kmem', data } }, [{ device: direct, sector: 0, count: 16 }])));
    assert.equal(direct.seen, 0, 'never called');
    assert.equal(client.freePages, client.reservedPages, 'no pool page taken');
    const aligned = allocAligned(8192);
    aligned.set(data);
    assert.equal(dmIoBlocking({ op: 'write', flags: { nowait: true }, client,
      mem: { type: 'kmem', data: aligned } }, [{ device: direct, sector: 0, count: 16 }]).errorBits,
    0n, 'aligned memory needs no bounce');
    assert.deepEqual(peek(ram, 0, 16), data);
    // A 2 MiB region of a file comes to two 1 MiB requests, each of which could be written
    // inline: refused whole, so that no half of it is written.
    const { device, path, before } = await image(t, 'split.img', inlineEngine(t));
    const twoMiB = pattern(2 * 1024 * 1024, 14);
    const big = new Uint8Array(4 * 1024 * 1024);
    fs.writeFileSync(path, big);
    const large = await openFileDevice(path, { engine: inlineEngine(t) });
    t.after(() => large.close());
    assert.ok(refused(dmIoBlocking({ op: 'write', flags: { nowait: true }, client,
      mem: { type: 'kmem', data: twoMiB } }, [{ device: large, sector: 0, count: 4096 }])));
    assert.deepEqual(fs.readFileSync(path), Buffer.from(big), 'neither half written');
    assert.equal(large.stats.inlineWrites, 0);
    assert.equal(device.stats.inlineWrites, 0);
    assert.equal(before.length, IMAGE_BYTES);
  });
