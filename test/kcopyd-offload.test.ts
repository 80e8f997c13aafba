// Copy offload: kcopyd jobs with `copyOffload` between real files go through copy_file_range
// (FileDevice.copyFrom) and nothing passes through the client's pages; every case where the
// kernel cannot (O_DIRECT, overlapping ranges in one file, devices without copyFrom, WRITE_SEQ,
// onChunkRead) falls back to reading and writing with the same bytes and the same error
// report as a copy without offload. Also FileDevice.copyFrom on its own: what it refuses, and
// that close() waits for a copy in flight.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFile, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import type { DmIoRegion } from '../src/core/request.js';
import { openFileDevice, type FileDevice } from '../src/devices/file-device.js';
import { dmKcopydClientCreate, dmKcopydClientDestroy } from '../src/kcopyd/kcopyd.js';
import { dmKcopydCopy, dmKcopydZero } from '../src/kcopyd/submit.js';
import { dmKcopydThrottleCreate } from '../src/kcopyd/throttle.js';
import type { BlockDevice, DeviceDone, DeviceRequest } from '../src/devices/block-device.js';
import { createFaultDevice } from '../src/devices/fault-device.js';
import { createRamDevice, type RamDevice } from '../src/devices/ram-device.js';
import { IoError } from '../src/errors.js';
import { COPY_SLOTS_MAX, copySlotsInUse } from '../src/devices/copy-slots.js';
import type { KcopydJobOptions } from '../src/kcopyd/validate-job.js';
import {
  destFile as destFileOf, hashOf, patternDevice, ramDevice, readBytes, request, sourceFile,
  type SourceFile,
} from './kcopyd-helpers.js';

const SUB_JOB_SECTORS = 256; // 128 KiB chunks
const COPY_SECTORS = 20 * SUB_JOB_SECTORS + 64; // 20 full chunks and a short one

function fixture(t: TestContext, sectors = COPY_SECTORS): Promise<SourceFile> {
  return sourceFile(t, sectors);
}

function destFile(
  t: TestContext, directory: string, name: string, direct = false, sectors = COPY_SECTORS,
): Promise<FileDevice> {
  return destFileOf(t, directory, name, sectors, direct);
}

function wholeRegion(device: FileDevice, count = COPY_SECTORS): DmIoRegion {
  return { device, sector: 0, count };
}

async function copy(
  source: DmIoRegion, dests: DmIoRegion[], options: KcopydJobOptions,
): ReturnType<typeof dmKcopydCopy> {
  const kc = dmKcopydClientCreate({ subJobSectors: SUB_JOB_SECTORS });
  try {
    return await dmKcopydCopy(kc, source, dests, options);
  } finally {
    await dmKcopydClientDestroy(kc);
  }
}

describe('kcopyd copy offload between files', () => {
  it('copies to 3 files with copy_file_range only: no reads, no writes, same bytes', async (t) => {
    const { directory, sourceBytes, source } = await fixture(t);
    const dests = [await destFile(t, directory, 'a.img'), await destFile(t, directory, 'b.img'),
      await destFile(t, directory, 'c.img')];
    const progress: number[] = [];
    const result = await copy(wholeRegion(source), dests.map((d) => wholeRegion(d)),
      { copyOffload: true, onProgress: (doneBytes) => progress.push(doneBytes) });
    assert.equal(result.readErr, false);
    assert.equal(result.writeErr, 0n);
    assert.equal(source.stats.reads + source.stats.inlineReads, 0, 'the source was never read');
    for (const dest of dests) {
      assert.ok(dest.stats.copyRanges >= 21, `${dest.stats.copyRanges} copy_file_range calls`);
      assert.equal(dest.stats.writes, 0);
      assert.ok(sourceBytes.equals(await readFile(dest.name)));
    }
    assert.equal(progress.length, 21);
    assert.equal(progress.at(-1), COPY_SECTORS * 512);
  });

  it('is off by default: the same copy reads and writes through pages', async (t) => {
    const { directory, sourceBytes, source } = await fixture(t);
    const dest = await destFile(t, directory, 'a.img');
    const result = await copy(wholeRegion(source), [wholeRegion(dest)], {});
    assert.equal(result.readErr || result.writeErr !== 0n, false);
    assert.equal(dest.stats.copyRanges, 0);
    assert.ok(dest.stats.writes >= 21);
    assert.ok(sourceBytes.equals(await readFile(dest.name)));
  });

  it('copies a region at an offset to a different offset', async (t) => {
    const { directory, sourceBytes, source } = await fixture(t);
    const dest = await destFile(t, directory, 'a.img', false, COPY_SECTORS + 1000);
    const count = COPY_SECTORS - 512;
    const result = await copy({ device: source, sector: 512, count },
      [{ device: dest, sector: 1000, count }], { copyOffload: true });
    assert.equal(result.writeErr, 0n);
    assert.ok(dest.stats.copyRanges > 0);
    const written = await readFile(dest.name);
    assert.ok(written.subarray(1000 * 512, (1000 + count) * 512)
      .equals(sourceBytes.subarray(512 * 512, (512 + count) * 512)));
    assert.ok(written.subarray(0, 1000 * 512).every((byte) => byte === 0));
  });

  it('falls back for an O_DIRECT destination and turns offload off after one try', async (t) => {
    const { directory, sourceBytes, source } = await fixture(t);
    const buffered = await destFile(t, directory, 'a.img');
    const direct = await destFile(t, directory, 'b.img', true);
    const result = await copy(wholeRegion(source), [wholeRegion(buffered), wholeRegion(direct)],
      { copyOffload: true });
    assert.equal(result.readErr, false);
    assert.equal(result.writeErr, 0n);
    assert.equal(direct.stats.copyRanges, 0);
    // Only the first chunk was tried by the buffered file before offload went off; every
    // chunk, that one too, was then written through pages.
    assert.ok(buffered.stats.copyRanges <= 2, `${buffered.stats.copyRanges} calls`);
    assert.ok(buffered.stats.writes >= 21);
    for (const dest of [buffered, direct]) {
      assert.ok(sourceBytes.equals(await readFile(dest.name)));
    }
  });

  it('falls back when the kernel refuses overlapping ranges in one file (EINVAL)', async (t) => {
    const { directory } = await fixture(t);
    const bytes = randomBytes(2 * COPY_SECTORS * 512);
    await writeFile(join(directory, 'one.img'), bytes);
    const device = await openFileDevice(join(directory, 'one.img'));
    t.after(() => device.close());
    // Copy the first chunk onto the range that starts half a chunk later: the two overlap.
    const count = SUB_JOB_SECTORS;
    const result = await copy({ device, sector: 0, count },
      [{ device, sector: count / 2, count }], { copyOffload: true });
    assert.equal(result.writeErr, 0n);
    assert.equal(device.stats.copyRanges, 0);
    const after = await readFile(device.name);
    assert.ok(after.subarray(count / 2 * 512, (count / 2 + count) * 512)
      .equals(bytes.subarray(0, count * 512)));
  });

  it('reports a source that shrank under it exactly as the copy through pages', async (t) => {
    const outcomes = [];
    for (const copyOffload of [true, false]) {
      const { directory, sourceBytes, source } = await fixture(t);
      const dest = await destFile(t, directory, 'a.img');
      // The file loses its tail after the device was opened and sized.
      const keptSectors = 5 * SUB_JOB_SECTORS;
      await truncate(source.name, keptSectors * 512);
      const result = await copy(wholeRegion(source), [wholeRegion(dest)], { copyOffload });
      const written = await readFile(dest.name);
      assert.ok(written.subarray(0, keptSectors * 512)
        .equals(sourceBytes.subarray(0, keptSectors * 512)), `offload ${copyOffload}`);
      const errno = result.readError === undefined ? undefined :
        Reflect.get(result.readError, 'errno');
      outcomes.push({ readErr: result.readErr, writeErr: result.writeErr, errno });
    }
    assert.equal(outcomes[0]?.readErr, true);
    assert.deepEqual(outcomes[0], outcomes[1]);
  });

  it('is not used with writeSeq, onChunkRead, or a destination without copyFrom', async (t) => {
    const { directory, sourceBytes, source } = await fixture(t);
    const cases: Array<[string, KcopydJobOptions]> = [
      ['seq.img', { copyOffload: true, writeSeq: true }],
      ['hashed.img', { copyOffload: true, onChunkRead: () => undefined }],
    ];
    for (const [name, options] of cases) {
      const dest = await destFile(t, directory, name);
      const result = await copy(wholeRegion(source), [wholeRegion(dest)], options);
      assert.equal(result.writeErr, 0n, name);
      assert.equal(dest.stats.copyRanges, 0, name);
      assert.ok(sourceBytes.equals(await readFile(dest.name)), name);
    }
    const file = await destFile(t, directory, 'with-ram.img');
    const ram = ramDevice(COPY_SECTORS, 'ram');
    const result = await copy(wholeRegion(source), [wholeRegion(file), { device: ram, sector: 0,
      count: COPY_SECTORS }], { copyOffload: true });
    assert.equal(result.writeErr, 0n);
    assert.equal(file.stats.copyRanges, 0);
    assert.ok(sourceBytes.equals(await readFile(file.name)));
    assert.equal(hashOf(ram, 0, COPY_SECTORS), hashOf(file, 0, COPY_SECTORS));
  });

  it('refuses a non-boolean copyOffload with a typed error', async () => {
    const kc = dmKcopydClientCreate();
    const source = patternDevice(64, 1);
    assert.throws(() => dmKcopydCopy(kc, { device: source, sector: 0, count: 8 },
      [{ device: ramDevice(64, 'd'), sector: 0, count: 8 }],
      { copyOffload: 'yes' as unknown as boolean }),
    (error: unknown) => Reflect.get(error as object, 'code') === 'DMIO_ERR_INVALID_ARG_TYPE');
    assert.equal(kc.jobs, 0);
    await dmKcopydClientDestroy(kc);
  });
});

describe('FileDevice.copyFrom', () => {
  it('answers false and starts nothing where copy_file_range cannot serve', async (t) => {
    const { directory, source } = await fixture(t);
    const dest = await destFile(t, directory, 'a.img');
    const direct = await destFile(t, directory, 'b.img', true);
    const readOnly = await openFileDevice(dest.name, { readOnly: true });
    t.after(() => readOnly.close());
    const never = (): void => assert.fail('done must not run for a refused copy');
    assert.deepEqual([dest.copyOffload, direct.copyOffload, source.copyOffload],
      [true, false, true]);
    assert.equal(dest.copyFrom(patternDevice(64, 1), 0, 0, 8, never), false, 'RAM source');
    assert.equal(direct.copyFrom(source, 0, 0, 8, never), false, 'O_DIRECT destination');
    assert.equal(dest.copyFrom(direct, 0, 0, 8, never), false, 'O_DIRECT source');
    assert.equal(readOnly.copyFrom(source, 0, 0, 8, never), false, 'read-only destination');
    assert.equal(dest.copyFrom(source, COPY_SECTORS - 4, 0, 8, never), false, 'past the source');
    assert.equal(dest.copyFrom(source, 0, COPY_SECTORS - 4, 8, never), false, 'past the dest');
    assert.equal(dest.copyFrom(source, 0, 0, 0, never), false, 'empty');
    assert.equal(dest.copyFrom(source, -8, 0, 8, never), false, 'negative sector');
    assert.equal(dest.copyFrom(source, 0.5, 0, 8, never), false, 'fractional sector');
    await new Promise((resolve) => setTimeout(resolve, 10));
    assert.equal(dest.stats.copyRanges, 0);
  });

  it('keeps both descriptors open until a copy in flight has finished', async (t) => {
    const { directory, sourceBytes, source } = await fixture(t);
    const dest = await destFile(t, directory, 'a.img');
    const events: string[] = [];
    const copied = new Promise<unknown>((resolve) => {
      assert.equal(dest.copyFrom(source, 0, 0, COPY_SECTORS, (error) => {
        events.push('done');
        resolve(error);
      }), true);
    });
    events.push('started');
    const closed = Promise.all([source.close(), dest.close()]).then(() => events.push('closed'));
    assert.equal(await copied, null);
    await closed;
    assert.deepEqual(events, ['started', 'done', 'closed']);
    assert.ok(sourceBytes.equals(await readFile(dest.name)));
  });

  it('runs at most COPY_SLOTS_MAX copies at once; the others wait and all finish', async (t) => {
    const { directory, sourceBytes, source } = await fixture(t);
    const dests = await Promise.all(['a.img', 'b.img', 'c.img']
      .map((name) => destFile(t, directory, name)));
    const chunkSectors = SUB_JOB_SECTORS;
    const chunks = Math.floor(COPY_SECTORS / chunkSectors);
    let mostRunning = 0;
    const copies: Promise<IoError | null>[] = [];
    for (let chunk = 0; chunk < chunks; chunk += 1) {
      for (const dest of dests) {
        copies.push(new Promise((resolve) => {
          assert.equal(dest.copyFrom(source, chunk * chunkSectors, chunk * chunkSectors,
            chunkSectors, resolve), true);
        }));
        mostRunning = Math.max(mostRunning, copySlotsInUse().running);
      }
    }
    const submitted = chunks * dests.length;
    assert.ok(submitted > COPY_SLOTS_MAX);
    assert.deepEqual(copySlotsInUse(),
      { running: COPY_SLOTS_MAX, waiting: submitted - COPY_SLOTS_MAX });
    assert.deepEqual(await Promise.all(copies), copies.map(() => null));
    assert.equal(mostRunning, COPY_SLOTS_MAX);
    assert.deepEqual(copySlotsInUse(), { running: 0, waiting: 0 });
    const copiedBytes = chunks * chunkSectors * 512;
    for (const dest of dests) {
      const bytes = await readFile(dest.name);
      assert.ok(sourceBytes.subarray(0, copiedBytes).equals(bytes.subarray(0, copiedBytes)),
        dest.name);
    }
  });
});

/**
 * A RAM device with a scripted `copyFrom`: it copies by reading the source and writing itself
 * (both blocking), or fails the next `failures` calls with `errno`, or refuses every call.
 */
class OffloadRam implements BlockDevice {
  readonly inner: RamDevice;
  readonly kind = 'ram' as const;
  readonly canBlock = true;
  copyCalls = 0;
  failures = 0;
  errno = 'EIO';
  refuse = false;

  constructor(name: string, sectors: number) {
    this.inner = createRamDevice({ sizeBytes: sectors * 512, name });
  }

  get name(): string { return this.inner.name; }
  get sizeSectors(): number { return this.inner.sizeSectors; }
  get readOnly(): boolean { return this.inner.readOnly; }
  get limits(): BlockDevice['limits'] { return this.inner.limits; }
  get closed(): boolean { return this.inner.closed; }
  submit(deviceRequest: DeviceRequest, done: DeviceDone): void {
    this.inner.submit(deviceRequest, done);
  }
  submitSync(deviceRequest: DeviceRequest): IoError | null {
    return this.inner.submitSync(deviceRequest);
  }
  close(): Promise<void> { return this.inner.close(); }

  copyFrom(
    source: BlockDevice, sourceSector: number, sector: number, countSectors: number,
    done: DeviceDone,
  ): boolean {
    if (this.refuse) return false;
    this.copyCalls += 1;
    let error: IoError | null = null;
    if (this.failures > 0) {
      this.failures -= 1;
      error = new IoError({ errno: this.errno, syscall: 'copy_file_range', device: this.name,
        sector, countSectors });
    } else {
      const bytes = new Uint8Array(countSectors * 512);
      assert.ok(source.submitSync !== undefined);
      error = source.submitSync(request('read', sourceSector, countSectors, [bytes])) ??
        this.inner.submitSync(request('write', sector, countSectors, [bytes]));
    }
    setImmediate(() => done(error));
    return true;
  }
}

describe('kcopyd copy offload: fallbacks through pages', () => {
  const SECTORS = 8 * SUB_JOB_SECTORS;

  it('a destination that fails one chunk gets it through pages; offload goes on', async () => {
    const source = patternDevice(SECTORS, 3);
    const good = new OffloadRam('good', SECTORS);
    const flaky = new OffloadRam('flaky', SECTORS);
    flaky.failures = 1;
    const result = await copy({ device: source, sector: 0, count: SECTORS },
      [{ device: good, sector: 0, count: SECTORS }, { device: flaky, sector: 0, count: SECTORS }],
      { copyOffload: true });
    assert.equal(result.readErr, false);
    assert.equal(result.writeErr, 0n, 'the chunk written through pages succeeded everywhere');
    assert.equal(good.copyCalls, 8);
    assert.equal(flaky.copyCalls, 8, 'EIO is not "cannot offload": later chunks still offload');
    for (const dest of [good, flaky]) {
      assert.equal(hashOf(dest.inner, 0, SECTORS), hashOf(source, 0, SECTORS), dest.name);
    }
  });

  it('"not for this pair" (EXDEV) or a refusal turns offload off for the job', async () => {
    for (const mode of ['exdev', 'refuse'] as const) {
      const source = patternDevice(SECTORS, 4);
      const first = new OffloadRam('first', SECTORS);
      const second = new OffloadRam('second', SECTORS);
      if (mode === 'exdev') {
        second.failures = 100;
        second.errno = 'EXDEV';
      } else {
        second.refuse = true;
      }
      const result = await copy({ device: source, sector: 0, count: SECTORS },
        [first, second].map((device) => ({ device, sector: 0, count: SECTORS })),
        { copyOffload: true });
      assert.equal(result.writeErr, 0n, mode);
      // At most the two chunks in flight together were tried before offload went off.
      assert.ok(first.copyCalls <= 2, `${mode}: ${first.copyCalls} offloads`);
      for (const dest of [first, second]) {
        assert.equal(hashOf(dest.inner, 0, SECTORS), hashOf(source, 0, SECTORS),
          `${mode} ${dest.name}`);
      }
    }
  });

  it('ignoreError and a bad source sector: the result and bytes of the page path', async () => {
    type Outcome = { readErr: boolean; writeErr: bigint; hash: string; zeros: boolean };
    const outcomes: Outcome[] = [];
    for (const copyOffload of [true, false]) {
      const source = createFaultDevice(patternDevice(SECTORS, 5),
        { ranges: [{ sector: 3 * SUB_JOB_SECTORS + 8, countSectors: 8, ops: ['read'] }] });
      const dest = new OffloadRam('dest', SECTORS);
      const result = await copy({ device: source, sector: 0, count: SECTORS },
        [{ device: dest, sector: 0, count: SECTORS }], { copyOffload, ignoreError: true });
      const failed = readBytes(dest.inner, 3 * SUB_JOB_SECTORS + 8, 8);
      outcomes.push({ readErr: result.readErr, writeErr: result.writeErr,
        hash: hashOf(dest.inner, 0, SECTORS), zeros: failed.every((byte) => byte === 0) });
      if (copyOffload) assert.ok(dest.copyCalls > 0);
    }
    assert.deepEqual(outcomes[0], outcomes[1]);
    assert.equal(outcomes[0]?.readErr, true);
    assert.equal(outcomes[0]?.zeros, true, 'the unreadable sectors were written as zeros');
  });

  it('a throttled offload copy balances the throttle and completes', async () => {
    const throttle = dmKcopydThrottleCreate(90);
    const kc = dmKcopydClientCreate({ subJobSectors: SUB_JOB_SECTORS, throttle });
    const source = patternDevice(SECTORS, 6);
    const dest = new OffloadRam('dest', SECTORS);
    dest.failures = 2;
    const result = await dmKcopydCopy(kc, { device: source, sector: 0, count: SECTORS },
      [{ device: dest, sector: 0, count: SECTORS }], { copyOffload: true });
    await dmKcopydClientDestroy(kc);
    assert.equal(result.writeErr, 0n);
    assert.equal(throttle.ioJobs, 0, 'every I/O the throttle counted was finished');
    assert.equal(hashOf(dest.inner, 0, SECTORS), hashOf(source, 0, SECTORS));
  });

  it('dmKcopydZero refuses copyOffload: a zero job copies nothing', async () => {
    const kc = dmKcopydClientCreate();
    assert.throws(() => dmKcopydZero(kc, [{ device: ramDevice(64, 'z'), sector: 0, count: 8 }],
      { copyOffload: true }),
    (error: unknown) => Reflect.get(error as object, 'code') === 'DMIO_ERR_INVALID_ARG_VALUE');
    await dmKcopydClientDestroy(kc);
  });
});
