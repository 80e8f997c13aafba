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
import { dmKcopydCopy } from '../src/kcopyd/submit.js';
import type { KcopydJobOptions } from '../src/kcopyd/validate-job.js';
import { hashOf, patternDevice, ramDevice } from './kcopyd-helpers.js';
import { tempDir } from './helpers/tmp.js';

const SUB_JOB_SECTORS = 256; // 128 KiB chunks
const COPY_SECTORS = 20 * SUB_JOB_SECTORS + 64; // 20 full chunks and a short one

interface Fixture {
  readonly directory: string;
  readonly sourceBytes: Buffer;
  readonly source: FileDevice;
}

async function fixture(t: TestContext, sectors = COPY_SECTORS): Promise<Fixture> {
  const directory = await tempDir(t);
  const sourceBytes = randomBytes(sectors * 512);
  await writeFile(join(directory, 'source.img'), sourceBytes);
  const source = await openFileDevice(join(directory, 'source.img'), { readOnly: true });
  t.after(() => source.close());
  return { directory, sourceBytes, source };
}

async function destFile(
  t: TestContext, directory: string, name: string, direct = false, sectors = COPY_SECTORS,
): Promise<FileDevice> {
  const device = await openFileDevice(join(directory, name),
    { create: { sizeBytes: sectors * 512 }, direct });
  t.after(() => device.close());
  return device;
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

  it('reports a source that shrank under the copy exactly as the copy through pages does', async (t) => {
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
      outcomes.push({ readErr: result.readErr, writeErr: result.writeErr,
        errno: result.readError === undefined ? undefined : Reflect.get(result.readError, 'errno') });
    }
    assert.equal(outcomes[0]?.readErr, true);
    assert.deepEqual(outcomes[0], outcomes[1]);
  });

  it('is not used with writeSeq, with onChunkRead, or with a destination without copyFrom', async (t) => {
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
    assert.equal(dest.copyFrom(patternDevice(64, 1), 0, 0, 8, never), false, 'RAM source');
    assert.equal(direct.copyFrom(source, 0, 0, 8, never), false, 'O_DIRECT destination');
    assert.equal(dest.copyFrom(direct, 0, 0, 8, never), false, 'O_DIRECT source');
    assert.equal(readOnly.copyFrom(source, 0, 0, 8, never), false, 'read-only destination');
    assert.equal(dest.copyFrom(source, COPY_SECTORS - 4, 0, 8, never), false, 'past the source');
    assert.equal(dest.copyFrom(source, 0, COPY_SECTORS - 4, 8, never), false, 'past the dest');
    assert.equal(dest.copyFrom(source, 0, 0, 0, never), false, 'empty');
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
});
