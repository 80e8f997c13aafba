// kcopyd's `flush: true` and dmKcopydClientFlush. Without the option a job never flushes (the
// kernel's semantics); with it, each destination that was written to gets one pure flush
// after its last write (seen in the trace of a recording device over a real file), a failed
// flush fails that destination alone (its bit, its error, writtenBytes 0), and destinations
// that got nothing are not flushed. dmKcopydClientFlush resolves once the worker has run what
// was queued, without waiting for I/O in flight.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { createFaultDevice, type FaultDevice, type TraceEntry } from '../src/devices/fault-device.js';
import { openFileDevice, type FileDevice } from '../src/devices/file-device.js';
import {
  dmKcopydClientCreate, dmKcopydClientDestroy, dmKcopydClientFlush,
} from '../src/kcopyd/kcopyd.js';
import {
  dmKcopydCopy, dmKcopydDoCallback, dmKcopydPrepareCallback, dmKcopydZero,
} from '../src/kcopyd/submit.js';
import { patternDevice } from './kcopyd-helpers.js';
import { tempDir } from './helpers/tmp.js';

const SUB = 64; // sectors per chunk (32 KiB)
const COUNT = SUB * 12;
const TOTAL_BYTES = COUNT * 512;

function isFlush(entry: TraceEntry): boolean {
  return entry.countSectors === 0 && entry.flags.preflush;
}

/** A real image file behind a recording (and, when asked, failing) fault device. */
async function recordedFile(
  t: TestContext, directory: string, name: string, faults: Parameters<typeof createFaultDevice>[1] = {},
): Promise<{ device: FaultDevice; file: FileDevice; path: string }> {
  const path = join(directory, name);
  const file = await openFileDevice(path, { create: { sizeBytes: TOTAL_BYTES } });
  t.after(() => file.close());
  return { device: createFaultDevice(file, { name, ...faults }), file, path };
}

function regions(devices: readonly FaultDevice[]): Array<{ device: FaultDevice; sector: number;
  count: number; }> {
  return devices.map((device) => ({ device, sector: 0, count: COUNT }));
}

describe('kcopyd flush: true', () => {
  it('flushes each destination once, after its last write; without it, never', async (t) => {
    const directory = await tempDir(t);
    const sourceBytes = randomBytes(TOTAL_BYTES);
    await writeFile(join(directory, 'source.img'), sourceBytes);
    const source = await openFileDevice(join(directory, 'source.img'), { readOnly: true });
    t.after(() => source.close());
    const a = await recordedFile(t, directory, 'a.img');
    const b = await recordedFile(t, directory, 'b.img', { delayMs: (request) =>
      (request.countSectors > 0 ? 3 : 0) });
    const kc = dmKcopydClientCreate({ subJobSectors: SUB });
    t.after(() => dmKcopydClientDestroy(kc));
    const from = { device: source, sector: 0, count: COUNT };

    const plain = await dmKcopydCopy(kc, from, regions([a.device, b.device]), {});
    assert.equal(plain.writeErr, 0n);
    for (const { device } of [a, b]) {
      assert.equal(device.trace.filter(isFlush).length, 0, `${device.name} was flushed`);
      device.clearTrace();
    }

    const flushed = await dmKcopydCopy(kc, from, regions([a.device, b.device]), { flush: true });
    assert.equal(flushed.writeErr, 0n);
    assert.deepEqual(flushed.writtenBytes, [TOTAL_BYTES, TOTAL_BYTES]);
    for (const { device, path } of [a, b]) {
      const flushes = device.trace.filter(isFlush);
      assert.equal(flushes.length, 1, `${device.name}: one flush`);
      assert.ok(isFlush(device.trace.at(-1)!), `${device.name}: the flush comes last`);
      const writtenSectors = device.trace.filter((entry) => entry.op === 'write' &&
        entry.countSectors > 0).reduce((sum, entry) => sum + entry.countSectors, 0);
      assert.equal(writtenSectors, COUNT, `${device.name}: every chunk was written before`);
      assert.ok((await readFile(path)).equals(sourceBytes));
    }
  });

  it('a failed flush fails that destination alone: its bit, its error, writtenBytes 0',
    async (t) => {
      const directory = await tempDir(t);
      const source = patternDevice(COUNT, 3);
      const good = await recordedFile(t, directory, 'good.img');
      const bad = await recordedFile(t, directory, 'bad.img',
        { ranges: [{ sector: 0, countSectors: 1, ops: ['flush'] }] });
      const kc = dmKcopydClientCreate({ subJobSectors: SUB });
      t.after(() => dmKcopydClientDestroy(kc));
      const result = await dmKcopydCopy(kc, { device: source, sector: 0, count: COUNT },
        regions([good.device, bad.device]), { flush: true, dropFailedDestinations: true });
      assert.equal(result.writeErr, 0b10n);
      assert.equal(result.readErr, false);
      assert.equal(result.aborted, false);
      assert.deepEqual(result.writtenBytes, [TOTAL_BYTES, 0]);
      assert.equal(result.writeErrors[0], undefined);
      assert.equal((result.writeErrors[1] as { errno?: string } | undefined)?.errno, 'EIO');
      assert.equal(bad.device.trace.filter(isFlush).length, 1);
      assert.equal(bad.device.trace.at(-1)?.injected, 'EIO');
      assert.equal(good.device.trace.filter(isFlush).length, 1);

      // A zero job too.
      bad.device.clearTrace();
      const zeroed = await dmKcopydZero(kc, regions([good.device, bad.device]), { flush: true });
      assert.equal(zeroed.writeErr, 0b10n);
      assert.deepEqual(zeroed.writtenBytes, [TOTAL_BYTES, 0]);
      assert.ok(isFlush(bad.device.trace.at(-1)!));
    });

  it('flushes only destinations that got bytes; a failing one keeps its first error',
    async (t) => {
      const directory = await tempDir(t);
      const source = patternDevice(COUNT, 5);
      const good = await recordedFile(t, directory, 'good.img');
      // Fails every write: it never gets a byte, so it is not flushed.
      const dead = await recordedFile(t, directory, 'dead.img',
        { ranges: [{ sector: 0, countSectors: COUNT, ops: ['write'] }] });
      // Fails from the third chunk on and fails its flush: it keeps the write error.
      const late = await recordedFile(t, directory, 'late.img',
        { ranges: [{ sector: 2 * SUB, countSectors: COUNT, ops: ['write'] },
          { sector: 0, countSectors: 1, ops: ['flush'] }] });
      const kc = dmKcopydClientCreate({ subJobSectors: SUB });
      t.after(() => dmKcopydClientDestroy(kc));
      const result = await dmKcopydCopy(kc, { device: source, sector: 0, count: COUNT },
        regions([good.device, dead.device, late.device]),
        { flush: true, dropFailedDestinations: true });
      assert.equal(result.writeErr, 0b110n);
      assert.equal(result.writtenBytes[0], TOTAL_BYTES);
      assert.equal(result.writtenBytes[1], 0);
      assert.equal(dead.device.trace.filter(isFlush).length, 0, 'nothing written, no flush');
      // late.img got its first chunks, so it is flushed; its flush failed too: 0 bytes count.
      assert.equal(late.device.trace.filter(isFlush).length, 1, 'what it got is flushed');
      assert.equal(late.device.trace.filter(isFlush)[0]?.injected, 'EIO');
      assert.equal(result.writtenBytes[2], 0);
      assert.notEqual((result.writeErrors[2] as { countSectors?: number }).countSectors, 0,
        'the first error (the write) is kept');
    });

  it('a cancelled job still flushes what it wrote, and stays cancelled', async (t) => {
    const directory = await tempDir(t);
    const source = patternDevice(COUNT, 7);
    const a = await recordedFile(t, directory, 'a.img', { delayMs: 2 });
    const kc = dmKcopydClientCreate({ subJobSectors: SUB });
    t.after(() => dmKcopydClientDestroy(kc));
    const controller = new AbortController();
    const result = await dmKcopydCopy(kc, { device: source, sector: 0, count: COUNT },
      regions([a.device]), { flush: true, signal: controller.signal,
        onProgress: (doneBytes) => { if (doneBytes >= 3 * SUB * 512) controller.abort(); } });
    assert.equal(result.aborted, true);
    assert.equal(result.writeErr, 1n);
    assert.ok(result.writtenBytes[0]! > 0 && result.writtenBytes[0]! < TOTAL_BYTES);
    assert.ok(isFlush(a.device.trace.at(-1)!), 'the flush comes after the last write');
  });

  it('refuses a non-boolean flush', async (t) => {
    const kc = dmKcopydClientCreate();
    t.after(() => dmKcopydClientDestroy(kc));
    const device = patternDevice(8, 1);
    assert.throws(() => dmKcopydZero(kc, [{ device, sector: 0, count: 8 }],
      { flush: 1 as unknown as boolean }), { code: 'DMIO_ERR_INVALID_ARG_TYPE' });
  });
});

describe('dmKcopydClientFlush', () => {
  it('resolves once queued work ran, without waiting for I/O in flight', async (t) => {
    const kc = dmKcopydClientCreate({ subJobSectors: SUB });
    t.after(() => dmKcopydClientDestroy(kc));
    await dmKcopydClientFlush(kc); // idle: at once

    const ran: string[] = [];
    const token = dmKcopydPrepareCallback(kc, () => ran.push('callback'));
    dmKcopydDoCallback(token, false, 0n);
    assert.deepEqual(ran, []);
    await dmKcopydClientFlush(kc);
    assert.deepEqual(ran, ['callback'], 'the queued callback ran before flush resolved');

    // A copy whose writes take 200 ms: flush resolves while they are still in flight.
    const source = patternDevice(SUB, 9);
    const slow = createFaultDevice(patternDevice(SUB, 10), { delayMs: (request) =>
      (request.op === 'write' ? 200 : 0) });
    let done = false;
    const copied = dmKcopydCopy(kc, { device: source, sector: 0, count: SUB },
      [{ device: slow, sector: 0, count: SUB }], {}).then((result) => {
      done = true;
      return result;
    });
    await dmKcopydClientFlush(kc);
    assert.equal(done, false, 'flush does not wait for I/O in flight');
    assert.equal((await copied).writeErr, 0n);
    assert.throws(() => dmKcopydClientFlush({} as never), { code: 'DMIO_ERR_INVALID_ARG_TYPE' });
  });
});
