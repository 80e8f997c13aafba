// kcopyd failures told truthfully: writtenBytes per destination in every mode (the kernel's
// default stop at the first error, ignoreError, writeSeq, dropFailedDestinations, offload,
// zero jobs, cancellation), dropFailedDestinations finishing every healthy destination byte for
// byte, cancellation by an AbortSignal or a throwing onProgress/onChunkRead. Destinations are
// real files or RAM devices behind fault devices, whose traces say what was really written.

import assert from 'node:assert/strict';
import { getEventListeners } from 'node:events';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import type { DmIoRegion } from '../src/core/request.js';
import type { BlockDevice, DeviceDone, DeviceRequest } from '../src/devices/block-device.js';
import { createFaultDevice, type FaultDevice } from '../src/devices/fault-device.js';
import type { FileDevice } from '../src/devices/file-device.js';
import { IoError, isDmIoError } from '../src/errors.js';
import { KCOPYD_SPLIT_COUNT } from '../src/kcopyd/constants.js';
import type { KcopydResult } from '../src/kcopyd/job.js';
import { dmKcopydClientCreate, dmKcopydClientDestroy } from '../src/kcopyd/kcopyd.js';
import {
  dmKcopydCopy, dmKcopydDoCallback, dmKcopydPrepareCallback, dmKcopydZero,
} from '../src/kcopyd/submit.js';
import type { KcopydJobOptions } from '../src/kcopyd/validate-job.js';
import {
  destFile as destFileOf, hashOf, patternDevice, ProbeDevice, ramDevice, readBytes, sourceFile,
  type SourceFile,
} from './kcopyd-helpers.js';

const SUB = 64; // sectors per chunk (32 KiB)
const CHUNKS = 40;
const COUNT = SUB * CHUNKS;
const TOTAL_BYTES = COUNT * 512;

function files(t: TestContext, sectors = COUNT): Promise<SourceFile> {
  return sourceFile(t, sectors);
}

function destFile(
  t: TestContext, directory: string, name: string, sectors = COUNT,
): Promise<FileDevice> {
  return destFileOf(t, directory, name, sectors);
}

/** A fault device that fails writes (and write-zeroes) from chunk `fromChunk` on. */
function failingFrom(inner: BlockDevice, fromChunk: number): FaultDevice {
  return createFaultDevice(inner, { ranges: [{ sector: fromChunk * SUB,
    countSectors: COUNT, ops: ['write', 'write-zeroes'] }] });
}

/** A fault device that fails writes to chunk `chunk` only. */
function failingChunk(inner: BlockDevice, chunk: number): FaultDevice {
  return createFaultDevice(inner, { ranges: [{ sector: chunk * SUB + 8, countSectors: 8,
    ops: ['write', 'write-zeroes'] }] });
}

function whole(devices: readonly BlockDevice[], count = COUNT): DmIoRegion[] {
  return devices.map((device) => ({ device, sector: 0, count }));
}

/** Bytes the fault device let through to its device in successful write requests. */
function tracedWriteBytes(device: FaultDevice): number {
  return device.trace.filter((entry) => (entry.op === 'write' || entry.op === 'write-zeroes') &&
    entry.injected === null).reduce((sum, entry) => sum + entry.countSectors * 512, 0);
}

async function run(
  from: DmIoRegion, dests: DmIoRegion[], options: KcopydJobOptions,
): Promise<KcopydResult> {
  const kc = dmKcopydClientCreate({ subJobSectors: SUB });
  const result = await dmKcopydCopy(kc, from, dests, options);
  await dmKcopydClientDestroy(kc); // asserts every page came back
  return result;
}

/** Every successfully written request of `fault` holds the source's bytes at that place. */
function assertWrittenMatches(fault: FaultDevice, fileBytes: Buffer, sourceBytes: Buffer): void {
  for (const entry of fault.trace) {
    if (entry.op !== 'write' || entry.injected !== null) continue;
    const start = entry.sector * 512;
    const end = start + entry.countSectors * 512;
    assert.ok(fileBytes.subarray(start, end).equals(sourceBytes.subarray(start, end)),
      `${fault.name} sectors ${entry.sector}+${entry.countSectors}`);
  }
}

describe('kcopyd writtenBytes: the truth in every mode', () => {
  it('default mode: the job stops early and writtenBytes says what each got', async (t) => {
    const { directory, sourceBytes, source } = await files(t);
    const a = createFaultDevice(await destFile(t, directory, 'a.img'));
    const b = failingChunk(await destFile(t, directory, 'b.img'), 10);
    const c = createFaultDevice(await destFile(t, directory, 'c.img'));
    const result = await run({ device: source, sector: 0, count: COUNT }, whole([a, b, c]), {});
    assert.equal(result.readErr, false);
    assert.equal(result.writeErr, 0b010n);
    assert.equal(result.aborted, false);
    assert.ok(isDmIoError(result.writeErrors[1], 'DMIO_ERR_IO'));
    [a, b, c].forEach((fault, index) => {
      assert.equal(result.writtenBytes[index], tracedWriteBytes(fault), fault.name);
    });
    const aBytes = result.writtenBytes[0]!;
    assert.ok(aBytes < TOTAL_BYTES, 'no new chunk after the error: a is not complete');
    assert.ok(aBytes > 10 * SUB * 512, 'the chunks before and in flight were written');
    assert.equal(result.writtenBytes[1], aBytes - SUB * 512, 'b lacks exactly its failed chunk');
    assert.equal(result.writtenBytes[2], aBytes);
    for (const [fault, name] of [[a, 'a.img'], [c, 'c.img']] as const) {
      assertWrittenMatches(fault, await readFile(join(directory, name)), sourceBytes);
    }
  });

  it('ignoreError: every chunk runs; only the failed chunk is missing', async (t) => {
    const { directory, sourceBytes, source } = await files(t);
    const a = createFaultDevice(await destFile(t, directory, 'a.img'));
    const b = failingChunk(await destFile(t, directory, 'b.img'), 7);
    const result = await run({ device: source, sector: 0, count: COUNT }, whole([a, b]),
      { ignoreError: true });
    assert.equal(result.writeErr, 0b10n);
    assert.deepEqual(result.writtenBytes, [TOTAL_BYTES, TOTAL_BYTES - SUB * 512]);
    assert.equal(result.writtenBytes[1], tracedWriteBytes(b));
    assert.ok((await readFile(join(directory, 'a.img'))).equals(sourceBytes));
  });

  it('an unsplit job and a zero-length job report writtenBytes too', async () => {
    const source = patternDevice(SUB, 3);
    const good = ramDevice(SUB, 'good');
    const bad = failingFrom(ramDevice(SUB, 'bad'), 0);
    const result = await run({ device: source, sector: 0, count: SUB },
      whole([good, bad], SUB), {});
    assert.deepEqual(result.writtenBytes, [SUB * 512, 0]);
    assert.equal(result.writeErr, 0b10n);
    const empty = await run({ device: source, sector: 0, count: 0 }, whole([good], 0), {});
    assert.deepEqual(empty.writtenBytes, [0]);
    assert.equal(empty.aborted, false);
  });

  it('a prepared callback reports an empty writtenBytes and aborted false', async () => {
    const kc = dmKcopydClientCreate();
    const results: KcopydResult[] = [];
    const token = dmKcopydPrepareCallback(kc, (_r, _w, _c, result) => results.push(result));
    dmKcopydDoCallback(token, false, 0n);
    await dmKcopydClientDestroy(kc);
    assert.equal(results.length, 1);
    assert.deepEqual(results[0]?.writtenBytes, []);
    assert.equal(results[0]?.aborted, false);
  });
});


describe('kcopyd dropFailedDestinations', () => {
  it('finishes every healthy destination byte for byte; the failed one gets no later chunk', async (t) => {
    const { directory, sourceBytes, source } = await files(t);
    const a = createFaultDevice(await destFile(t, directory, 'a.img'));
    const b = failingChunk(await destFile(t, directory, 'b.img'), 10);
    const c = createFaultDevice(await destFile(t, directory, 'c.img'));
    const result = await run({ device: source, sector: 0, count: COUNT }, whole([a, b, c]),
      { dropFailedDestinations: true });
    assert.equal(result.readErr, false);
    assert.equal(result.writeErr, 0b010n);
    assert.equal(result.aborted, false);
    assert.deepEqual([result.writtenBytes[0], result.writtenBytes[2]], [TOTAL_BYTES, TOTAL_BYTES]);
    assert.equal(result.writtenBytes[1], tracedWriteBytes(b));
    for (const name of ['a.img', 'c.img']) {
      assert.ok((await readFile(join(directory, name))).equals(sourceBytes), name);
    }
    const failedAt = b.trace.findIndex((entry) => entry.injected !== null);
    const after = b.trace.length - failedAt - 1;
    assert.ok(after < KCOPYD_SPLIT_COUNT, `${after} writes to b after its failure: only those in flight`);
    assert.ok(b.trace.length < CHUNKS, 'b was dropped');
    assertWrittenMatches(b, await readFile(join(directory, 'b.img')), sourceBytes);
  });

  it('ends the job when every destination has failed', async (t) => {
    const { directory, source } = await files(t);
    const traced = createFaultDevice(source);
    const a = failingFrom(await destFile(t, directory, 'a.img'), 5);
    const b = failingFrom(await destFile(t, directory, 'b.img'), 12);
    const result = await run({ device: traced, sector: 0, count: COUNT }, whole([a, b]),
      { dropFailedDestinations: true });
    assert.equal(result.writeErr, 0b11n);
    assert.equal(result.readErr, false);
    assert.deepEqual(result.writtenBytes, [tracedWriteBytes(a), tracedWriteBytes(b)]);
    assert.ok(result.writtenBytes[1]! >= 12 * SUB * 512, 'b went on after a failed');
    assert.ok(traced.trace.length < CHUNKS, `${traced.trace.length} reads: the job ended early`);
  });

  it('a failed read still ends the job; with ignoreError it does not', async () => {
    for (const ignoreError of [false, true]) {
      const inner = patternDevice(COUNT, 5);
      const source = createFaultDevice(inner,
        { ranges: [{ sector: 6 * SUB, countSectors: 8, ops: ['read'] }] });
      const good = ramDevice(COUNT, 'good');
      const bad = failingChunk(ramDevice(COUNT, 'bad'), 3);
      const result = await run({ device: source, sector: 0, count: COUNT }, whole([good, bad]),
        { dropFailedDestinations: true, ignoreError });
      assert.equal(result.readErr, true);
      assert.equal(result.writeErr, 0b10n);
      if (ignoreError) {
        assert.equal(result.writtenBytes[0], TOTAL_BYTES, 'zeros were written where the read failed');
        assert.ok(readBytes(good, 6 * SUB, 8).every((byte) => byte === 0));
        assert.equal(hashOf(good, 7 * SUB, COUNT - 7 * SUB), hashOf(inner, 7 * SUB, COUNT - 7 * SUB));
      } else {
        assert.ok(result.writtenBytes[0]! < TOTAL_BYTES);
        assert.ok(source.trace.length < CHUNKS, 'no new chunk after the read error');
      }
      assert.equal(result.writtenBytes[1], tracedWriteBytes(bad));
    }
  });

  it('writeSeq: the other destinations keep going, still in ascending order', async () => {
    for (const drop of [false, true]) {
      const inner = patternDevice(COUNT, 6);
      // Later chunks read faster, so writes would come out of order without writeSeq.
      const source = new ProbeDevice(inner, (req) => Math.max(1, 12 - req.sector / SUB));
      const good = createFaultDevice(ramDevice(COUNT, 'good'));
      const bad = failingChunk(ramDevice(COUNT, 'bad'), 3);
      const result = await run({ device: source, sector: 0, count: COUNT }, whole([good, bad]),
        { writeSeq: true, dropFailedDestinations: drop });
      assert.deepEqual(result.writtenBytes, [tracedWriteBytes(good), tracedWriteBytes(bad)]);
      const order = good.trace.map((entry) => entry.sector);
      assert.deepEqual(order, [...order].sort((x, y) => x - y), 'ascending offsets');
      if (drop) {
        assert.equal(result.writeErr, 0b10n);
        assert.equal(result.writtenBytes[0], TOTAL_BYTES);
        assert.equal(hashOf(good, 0, COUNT), hashOf(inner, 0, COUNT));
        assert.ok(bad.trace.length < CHUNKS, 'bad was dropped');
      } else {
        assert.ok((result.writeErr & 0b10n) !== 0n);
        assert.ok(result.writtenBytes[0]! < TOTAL_BYTES, 'the kernel rule: no new chunk');
      }
    }
  });

  it('copy offload between real files: a destination too short is dropped, the others complete', async (t) => {
    const { directory, sourceBytes, source } = await files(t);
    const a = await destFile(t, directory, 'a.img');
    const b = await destFile(t, directory, 'b.img');
    const short = await destFile(t, directory, 'short.img', 10 * SUB);
    const result = await run({ device: source, sector: 0, count: COUNT }, whole([a, b, short]),
      { copyOffload: true, dropFailedDestinations: true });
    assert.equal(result.writeErr, 0b100n);
    assert.deepEqual(result.writtenBytes, [TOTAL_BYTES, TOTAL_BYTES, 10 * SUB * 512]);
    assert.ok(a.stats.copyRanges > 0, 'the chunks before the failure were offloaded');
    for (const name of ['a.img', 'b.img']) {
      assert.ok((await readFile(join(directory, name))).equals(sourceBytes), name);
    }
    assert.ok((await readFile(join(directory, 'short.img')))
      .equals(sourceBytes.subarray(0, 10 * SUB * 512)));
  });

  it('copy offload: a failed destination is left out of the offloaded copies that follow', async (t) => {
    const { directory, sourceBytes, source } = await files(t);
    const a = await destFile(t, directory, 'a.img');
    const b = await destFile(t, directory, 'b.img');
    const bad = new FailingCopyFile(await destFile(t, directory, 'bad.img'), 6 * SUB);
    const result = await run({ device: source, sector: 0, count: COUNT }, whole([a, b, bad]),
      { copyOffload: true, dropFailedDestinations: true });
    assert.equal(result.writeErr, 0b100n);
    assert.deepEqual(result.writtenBytes, [TOTAL_BYTES, TOTAL_BYTES, 6 * SUB * 512]);
    assert.equal(tracedWriteBytes(bad.fault), 0, 'bad got its 6 chunks by offload only');
    // An offload failure only sends its chunk back through pages; bad is dropped when such a
    // page write fails. Until then each of the 8 slots may try one more chunk on it.
    assert.ok(bad.copyCalls <= 6 + KCOPYD_SPLIT_COUNT, `${bad.copyCalls} offloads tried on bad`);
    assert.ok(a.stats.writes <= KCOPYD_SPLIT_COUNT,
      `${a.stats.writes} writes on a: only chunks that fell back; the rest was offloaded`);
    for (const name of ['a.img', 'b.img']) {
      assert.ok((await readFile(join(directory, name))).equals(sourceBytes), name);
    }
  });

  it('zero jobs, with write-zeroes and with plain writes from the zero page', async () => {
    for (const writeZeroes of [true, false]) {
      const limits = writeZeroes ? {} : { maxWriteZeroesSectors: 0 };
      const good = createFaultDevice(patternDevice(COUNT, 7), { limits });
      const bad = failingChunk(patternDevice(COUNT, 8), 4);
      const kc = dmKcopydClientCreate({ subJobSectors: SUB });
      const result = await dmKcopydZero(kc, whole([good, bad]), { dropFailedDestinations: true });
      await dmKcopydClientDestroy(kc);
      const op = writeZeroes ? 'write-zeroes' : 'write';
      assert.ok(good.trace.every((entry) => entry.op === op), op);
      assert.equal(result.writeErr, 0b10n);
      assert.deepEqual(result.writtenBytes, [TOTAL_BYTES, tracedWriteBytes(bad)]);
      assert.ok(readBytes(good, 0, COUNT).every((byte) => byte === 0), 'good is all zeros');
      assert.ok(bad.trace.length < CHUNKS, 'bad was dropped');
    }
  });

  it('is refused when not a boolean', async () => {
    const kc = dmKcopydClientCreate();
    const dest = ramDevice(8, 'd');
    assert.throws(() => dmKcopydZero(kc, whole([dest], 8), { dropFailedDestinations: 1 } as never),
      (error) => isDmIoError(error, 'DMIO_ERR_INVALID_ARG_TYPE'));
    assert.throws(() => dmKcopydZero(kc, whole([dest], 8), { signal: {} } as never),
      (error) => isDmIoError(error, 'DMIO_ERR_INVALID_ARG_TYPE'));
    await dmKcopydClientDestroy(kc);
  });
});

/**
 * A real file whose offloaded copies and writes fail (EIO, not "cannot offload") from
 * `failFromSector` on; earlier copies go to the file's own copy_file_range.
 */
class FailingCopyFile implements BlockDevice {
  readonly kind = 'fault' as const;
  readonly fault: FaultDevice;
  copyCalls = 0;
  readonly #file: FileDevice;
  readonly #failFromSector: number;

  constructor(file: FileDevice, failFromSector: number) {
    this.#file = file;
    this.#failFromSector = failFromSector;
    this.fault = createFaultDevice(file, { ranges: [{ sector: failFromSector,
      countSectors: file.sizeSectors, ops: ['write'] }] });
  }

  get name(): string { return `failing(${this.#file.name})`; }
  get sizeSectors(): number { return this.#file.sizeSectors; }
  get readOnly(): boolean { return false; }
  get limits(): BlockDevice['limits'] { return this.#file.limits; }
  get closed(): boolean { return this.#file.closed; }
  get canBlock(): boolean { return this.#file.canBlock; }
  submit(request: DeviceRequest, done: DeviceDone): void { this.fault.submit(request, done); }
  close(): Promise<void> { return Promise.resolve(); }

  copyFrom(
    source: BlockDevice, sourceSector: number, sector: number, countSectors: number,
    done: DeviceDone,
  ): boolean {
    this.copyCalls += 1;
    if (sector + countSectors > this.#failFromSector) {
      const error = new IoError({ errno: 'EIO', syscall: 'copy_file_range', device: this.name,
        sector, countSectors });
      setImmediate(() => done(error));
      return true;
    }
    return this.#file.copyFrom(source, sourceSector, sector, countSectors, done);
  }
}

/** Resolves after `ms` milliseconds. */
function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Fails the test if anything is thrown uncaught while `body` runs and shortly after. */
async function withoutUncaught<T>(body: () => Promise<T>): Promise<T> {
  const uncaught: unknown[] = [];
  const record = (error: unknown): void => {
    uncaught.push(error);
  };
  process.on('uncaughtException', record);
  try {
    const value = await body();
    await delay(20);
    assert.deepEqual(uncaught, [], 'nothing was thrown uncaught');
    return value;
  } finally {
    process.off('uncaughtException', record);
  }
}

/** The abort rule: bit clear ⇔ complete; the others carry DMIO_ERR_ABORTED or an I/O error. */
function assertAbortedTruth(result: KcopydResult, totalBytes: number, cause: unknown): void {
  assert.equal(result.aborted, true);
  result.writtenBytes.forEach((writtenBytes, index) => {
    const failed = ((result.writeErr >> BigInt(index)) & 1n) !== 0n;
    assert.equal(failed, writtenBytes < totalBytes, `destination ${index}: bit ⇔ incomplete`);
    const error = result.writeErrors[index];
    if (!failed) return;
    assert.ok(error !== undefined);
    if (isDmIoError(error, 'DMIO_ERR_ABORTED')) assert.equal(error.cause, cause);
  });
}

describe('kcopyd cancellation', () => {
  it('an already aborted signal throws DMIO_ERR_ABORTED and submits nothing', async () => {
    const kc = dmKcopydClientCreate({ subJobSectors: SUB });
    const source = createFaultDevice(patternDevice(COUNT, 9));
    const dest = createFaultDevice(ramDevice(COUNT, 'd'));
    const controller = new AbortController();
    controller.abort('stop');
    assert.throws(() => dmKcopydCopy(kc, { device: source, sector: 0, count: COUNT },
      whole([dest]), { signal: controller.signal }),
    (error) => isDmIoError(error, 'DMIO_ERR_ABORTED') && error.cause === 'stop' &&
      error.name === 'AbortedError');
    assert.throws(() => dmKcopydZero(kc, whole([dest]), { signal: controller.signal }),
      (error) => isDmIoError(error, 'DMIO_ERR_ABORTED'));
    assert.equal(kc.jobs, 0);
    assert.equal(getEventListeners(controller.signal, 'abort').length, 0);
    await delay(10);
    assert.equal(source.trace.length + dest.trace.length, 0);
    await dmKcopydClientDestroy(kc);
  });

  it('aborted while running: in-flight I/O settles, pages come back, nothing after', async (t) => {
    const { directory, sourceBytes, source } = await files(t);
    const slowSource = createFaultDevice(source, { delayMs: 5 });
    const a = createFaultDevice(await destFile(t, directory, 'a.img'));
    const b = failingChunk(await destFile(t, directory, 'b.img'), 1);
    const controller = new AbortController();
    const reason = new Error('user pressed ^C');
    const kc = dmKcopydClientCreate({ subJobSectors: SUB });
    const calls: KcopydResult[] = [];
    let aborting = false;
    const settled = new Promise<void>((resolve) => {
      // The abort comes from a timer, outside the worker, once a chunk is done and b's
      // failing write has been tried (waiting for only the first chunk let the abort overtake
      // that failure on a loaded machine, and the error to keep never happened).
      const onProgress = (): void => {
        if (aborting || !b.trace.some((entry) => entry.injected !== null)) return;
        setTimeout(() => controller.abort(reason), 1);
        aborting = true;
      };
      dmKcopydCopy(kc, { device: slowSource, sector: 0, count: COUNT }, whole([a, b]),
        { signal: controller.signal, ignoreError: true, onProgress }, (_r, _w, _c, result) => {
          calls.push(result);
          resolve();
        });
    });
    await settled;
    const traces = [slowSource.trace.length, a.trace.length, b.trace.length];
    await dmKcopydClientDestroy(kc); // every page back, every job done
    await delay(30);
    assert.deepEqual([slowSource.trace.length, a.trace.length, b.trace.length], traces,
      'no I/O after the job completed');
    assert.equal(calls.length, 1, 'the callback ran once');
    const result = calls[0]!;
    assertAbortedTruth(result, TOTAL_BYTES, reason);
    assert.ok(result.writtenBytes[0]! < TOTAL_BYTES, 'the abort cut the copy short');
    assert.ok(isDmIoError(result.writeErrors[0], 'DMIO_ERR_ABORTED'));
    assert.ok(isDmIoError(result.writeErrors[1], 'DMIO_ERR_IO'), 'an earlier error is kept');
    assert.deepEqual(result.writtenBytes, [tracedWriteBytes(a), tracedWriteBytes(b)]);
    assert.ok(slowSource.trace.length < CHUNKS);
    assert.equal(getEventListeners(controller.signal, 'abort').length, 0, 'listener removed');
    assertWrittenMatches(a, await readFile(join(directory, 'a.img')), sourceBytes);
  });

  it('aborting a writeSeq job, a zero job and an offloaded copy: each settles', async (t) => {
    const { directory, source } = await files(t);
    type Start = (options: KcopydJobOptions, kc: ReturnType<typeof dmKcopydClientCreate>) =>
      Promise<KcopydResult>;
    const cases: Array<[string, Start]> = [
      ['writeSeq', async (options, kc) => dmKcopydCopy(kc, { device: createFaultDevice(source,
        { delayMs: 2 }), sector: 0, count: COUNT }, whole([ramDevice(COUNT, 'w')]),
      { ...options, writeSeq: true })],
      ['zero', async (options, kc) => dmKcopydZero(kc, whole([createFaultDevice(
        ramDevice(COUNT, 'z'), { delayMs: 2 })]), options)],
      ['offload', async (options, kc) => dmKcopydCopy(kc,
        { device: source, sector: 0, count: COUNT },
        whole([await destFile(t, directory, 'o1.img'), await destFile(t, directory, 'o2.img')]),
        { ...options, copyOffload: true })],
    ];
    for (const [name, start] of cases) {
      const kc = dmKcopydClientCreate({ subJobSectors: SUB });
      const controller = new AbortController();
      // Aborted from the worker, by the first progress report.
      const result = await start({ signal: controller.signal,
        onProgress: () => controller.abort('stop') }, kc);
      await dmKcopydClientDestroy(kc);
      assertAbortedTruth(result, TOTAL_BYTES, 'stop');
      assert.equal(getEventListeners(controller.signal, 'abort').length, 0, name);
    }
  });

  it('one signal shared by many jobs in turn keeps no listener behind', async () => {
    const kc = dmKcopydClientCreate({ subJobSectors: SUB });
    const controller = new AbortController();
    const source = patternDevice(2 * SUB, 10);
    const dest = ramDevice(2 * SUB, 'd');
    for (let index = 0; index < 50; index += 1) {
      const result = await dmKcopydCopy(kc, { device: source, sector: 0, count: 2 * SUB },
        whole([dest], 2 * SUB), { signal: controller.signal });
      assert.equal(result.aborted, false);
      assert.deepEqual(result.writtenBytes, [2 * SUB * 512]);
    }
    assert.equal(getEventListeners(controller.signal, 'abort').length, 0);
    await dmKcopydClientDestroy(kc);
  });

  it('a throwing onProgress cancels its job instead of throwing uncaught', async () => {
    await withoutUncaught(async () => {
      const source = patternDevice(COUNT, 11);
      const a = createFaultDevice(ramDevice(COUNT, 'a'));
      const thrown = new Error('progress bar broke');
      let calls = 0;
      const result = await run({ device: source, sector: 0, count: COUNT }, whole([a]), {
        onProgress: () => {
          calls += 1;
          if (calls === 3) throw thrown;
        },
      });
      assert.equal(calls, 3, 'not called again once it threw');
      assertAbortedTruth(result, TOTAL_BYTES, thrown);
      assert.ok(isDmIoError(result.writeErrors[0], 'DMIO_ERR_ABORTED'));
      assert.equal(result.writtenBytes[0], tracedWriteBytes(a));
      // An unsplit job: its only chunk was written before onProgress threw.
      const whole1 = await run({ device: source, sector: 0, count: SUB }, whole([a], SUB), {
        onProgress: () => { throw thrown; },
      });
      assert.equal(whole1.aborted, true);
      assert.equal(whole1.writeErr, 0n, 'complete: no bit');
      assert.deepEqual(whole1.writtenBytes, [SUB * 512]);
    });
  });

  it('a throwing onChunkRead cancels its job; that chunk is not written', async () => {
    await withoutUncaught(async () => {
      const source = patternDevice(COUNT, 12);
      const a = createFaultDevice(ramDevice(COUNT, 'a'));
      const thrown = new Error('hash failed');
      const seen: number[] = [];
      const result = await run({ device: source, sector: 0, count: COUNT }, whole([a]), {
        onChunkRead: (sector) => {
          seen.push(sector);
          if (sector === 4 * SUB) throw thrown;
        },
      });
      assert.equal(seen.filter((sector) => sector === 4 * SUB).length, 1);
      assert.ok(!a.trace.some((entry) => entry.sector === 4 * SUB), 'chunk 4 was not written');
      assert.ok(seen.length < CHUNKS);
      assertAbortedTruth(result, TOTAL_BYTES, thrown);
      assert.equal(result.writtenBytes[0], tracedWriteBytes(a));
    });
  });
});
