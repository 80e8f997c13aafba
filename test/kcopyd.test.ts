// kcopyd behaviour, item by item from the spec's §7 checklist: sizes and splitting, error
// handling with and without ignoreError, WRITE_SEQ ordering, zeroing, page exhaustion,
// callback discipline, prepared callbacks, destroy, and validation at the boundary.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { PAGE_SIZE, SECTOR_SIZE } from '../src/constants.js';
import { createFaultDevice } from '../src/devices/fault-device.js';
import { isDmIoError } from '../src/errors.js';
import {
  DM_KCOPYD_MAX_REGIONS, KCOPYD_WRITE_ERR_ALL,
} from '../src/kcopyd/constants.js';
import { dmKcopydClientCreate, dmKcopydClientDestroy } from '../src/kcopyd/kcopyd.js';
import { PageReserve, type KcopydPageSource } from '../src/kcopyd/page-reserve.js';
import {
  dmKcopydCopy, dmKcopydDoCallback, dmKcopydPrepareCallback, dmKcopydZero,
} from '../src/kcopyd/submit.js';
import {
  completionState, hashOf, patternDevice, ProbeDevice, ramDevice, readBytes,
} from './kcopyd-helpers.js';
import type { DmIoRegion } from '../src/core/request.js';
import type { BlockDevice } from '../src/devices/block-device.js';

function regions(devices: readonly BlockDevice[], sector: number, count: number): DmIoRegion[] {
  return devices.map((device) => ({ device, sector, count }));
}

function failingSource(): KcopydPageSource {
  return { tryTake: () => null, give: () => assert.fail('nothing was taken') };
}

describe('kcopyd: sizes, destinations and splitting', () => {
  it('copies a job of at most one sub-job to 1 and to 8 destinations, byte for byte', async () => {
    const kc = dmKcopydClientCreate();
    const source = patternDevice(1024, 1);
    for (const destCount of [1, DM_KCOPYD_MAX_REGIONS]) {
      const dests = Array.from({ length: destCount }, (_, i) => ramDevice(2048, `d${i}`));
      const result = await dmKcopydCopy(kc, { device: source, sector: 0, count: 1024 },
        regions(dests, 512, 1024), {});
      assert.equal(result.readErr, false);
      assert.equal(result.writeErr, 0n);
      for (const dest of dests) assert.equal(hashOf(dest, 512, 1024), hashOf(source, 0, 1024));
      for (const dest of dests) assert.ok(readBytes(dest, 0, 512).every((b) => b === 0));
    }
    await dmKcopydClientDestroy(kc);
  });

  it('refuses more than 8 destinations with a typed error and submits nothing', async () => {
    const kc = dmKcopydClientCreate();
    const source = createFaultDevice(patternDevice(64, 2));
    const dests = Array.from({ length: 9 }, (_, i) => createFaultDevice(ramDevice(64, `d${i}`)));
    assert.throws(() => dmKcopydCopy(kc, { device: source, sector: 0, count: 8 },
      regions(dests, 0, 8), {}), (error) => isDmIoError(error, 'DMIO_ERR_TOO_MANY_REGIONS'));
    assert.throws(() => dmKcopydZero(kc, regions(dests, 0, 8), {}),
      (error) => isDmIoError(error, 'DMIO_ERR_TOO_MANY_REGIONS'));
    await new Promise((resolve) => setTimeout(resolve, 5));
    assert.equal(source.trace.length, 0);
    for (const dest of dests) assert.equal(dest.trace.length, 0);
    assert.equal(kc.jobs, 0);
    await dmKcopydClientDestroy(kc);
  });

  it('splits sub-job + 1 sectors into two chunks (sub-job, then 1), a sub-job exactly not', async () => {
    const kc = dmKcopydClientCreate({ subJobSectors: 64 });
    const source = createFaultDevice(patternDevice(256, 3));
    const dest = ramDevice(256, 'dest');
    await dmKcopydCopy(kc, { device: source, sector: 0, count: 64 }, regions([dest], 0, 64), {});
    assert.deepEqual(source.trace.map((t) => [t.sector, t.countSectors]), [[0, 64]]);
    source.clearTrace();
    await dmKcopydCopy(kc, { device: source, sector: 100, count: 65 }, regions([dest], 0, 65), {});
    assert.deepEqual(source.trace.map((t) => [t.sector, t.countSectors]), [[100, 64], [164, 1]]);
    assert.equal(hashOf(dest, 0, 65), hashOf(source, 100, 65));
    await dmKcopydClientDestroy(kc);
  });

  it('keeps at most 8 chunks in flight for 10 sub-jobs, taken in offset order', async () => {
    const kc = dmKcopydClientCreate({ subJobSectors: 16 });
    const source = new ProbeDevice(patternDevice(160, 4), () => 3);
    const dest = new ProbeDevice(ramDevice(160, 'dest'), () => 3);
    let inFlightChunks = 0;
    let inFlightMax = 0;
    const started = new Set<number>();
    const origSubmit = source.submit.bind(source);
    source.submit = (req, done) => {
      if (!started.has(req.sector)) {
        started.add(req.sector);
        inFlightChunks += 1;
        inFlightMax = Math.max(inFlightMax, inFlightChunks);
      }
      origSubmit(req, done);
    };
    const destSubmit = dest.submit.bind(dest);
    dest.submit = (req, done) => destSubmit(req, (error) => {
      inFlightChunks -= 1;
      done(error);
    });
    const result = await dmKcopydCopy(kc, { device: source, sector: 0, count: 160 },
      regions([dest], 0, 160), {});
    assert.equal(result.writeErr, 0n);
    assert.equal(inFlightMax, 8, 'eight chunks overlap, never more');
    assert.deepEqual(source.log.map((e) => e.sector), Array.from({ length: 10 }, (_, i) => i * 16));
    assert.equal(hashOf(dest, 0, 160), hashOf(source, 0, 160));
    await dmKcopydClientDestroy(kc);
  });

  it('completes a zero-length copy with (false, 0n) from the worker and issues no I/O', async () => {
    const kc = dmKcopydClientCreate();
    const source = createFaultDevice(patternDevice(8, 5));
    const dest = createFaultDevice(ramDevice(8, 'dest'));
    let calledInside = true;
    let inCall = true;
    const done = new Promise<[boolean, bigint, string]>((resolve) => {
      dmKcopydCopy(kc, { device: source, sector: 0, count: 0 }, regions([dest], 0, 0), {},
        (readErr, writeErr, context: string) => {
          calledInside = inCall;
          resolve([readErr, writeErr, context]);
        }, 'ctx');
    });
    inCall = false;
    assert.deepEqual(await done, [false, 0n, 'ctx']);
    assert.equal(calledInside, false, 'the callback never runs inside dmKcopydCopy');
    assert.equal(source.trace.length + dest.trace.length, 0);
    await dmKcopydClientDestroy(kc);
  });

  it('reports progress in bytes, increasing to the total', async () => {
    const kc = dmKcopydClientCreate({ subJobSectors: 8 });
    const source = patternDevice(80, 6);
    const seen: number[] = [];
    await dmKcopydCopy(kc, { device: source, sector: 0, count: 80 },
      regions([ramDevice(80, 'd')], 0, 80), {
        onProgress: (doneBytes, totalBytes) => {
          assert.equal(totalBytes, 80 * 512);
          seen.push(doneBytes);
        },
      });
    assert.equal(seen.length, 10);
    assert.deepEqual(seen, [...seen].sort((a, b) => a - b));
    assert.equal(seen.at(-1), 80 * 512);
    await dmKcopydClientDestroy(kc);
  });

  it('hands each chunk\'s source bytes to onChunkRead before writing them', async () => {
    const kc = dmKcopydClientCreate({ subJobSectors: 16 });
    const source = patternDevice(100, 7);
    const chunks = new Map<number, Buffer>();
    await dmKcopydCopy(kc, { device: source, sector: 0, count: 100 },
      regions([ramDevice(100, 'd')], 0, 100), {
        onChunkRead: (sector, countSectors, pages) => {
          chunks.set(sector, Buffer.concat(pages).subarray(0, countSectors * 512));
        },
      });
    const joined = Buffer.concat([...chunks.entries()].sort((a, b) => a[0] - b[0])
      .map(([, bytes]) => bytes));
    assert.ok(joined.equals(Buffer.from(readBytes(source, 0, 100))));
    await dmKcopydClientDestroy(kc);
  });
});

describe('kcopyd: read and write failures', () => {
  it('without ignoreError, a failed read writes nothing for its chunk and starts no new chunk', async () => {
    const kc = dmKcopydClientCreate({ subJobSectors: 8 });
    const inner = patternDevice(200, 8);
    const source = createFaultDevice(inner,
      { ranges: [{ sector: 16, countSectors: 8, ops: ['read'] }] });
    const dest = createFaultDevice(ramDevice(200, 'dest'));
    const result = await dmKcopydCopy(kc, { device: source, sector: 0, count: 200 },
      regions([dest], 0, 200), {});
    assert.equal(result.readErr, true);
    assert.equal(result.writeErr, 0n);
    assert.ok(result.readError !== undefined && isDmIoError(result.readError, 'DMIO_ERR_IO'));
    const reads = source.trace.map((t) => t.sector);
    assert.deepEqual(reads, [0, 8, 16, 24, 32, 40, 48, 56], 'the first 8 chunks only');
    const writes = dest.trace.map((t) => t.sector).sort((a, b) => a - b);
    assert.deepEqual(writes, [0, 8, 24, 32, 40, 48, 56], 'in-flight chunks finish, 16 is not written');
    assert.ok(readBytes(dest, 16, 8).every((b) => b === 0));
    assert.equal(hashOf(dest, 24, 40), hashOf(inner, 24, 40));
    await dmKcopydClientDestroy(kc);
  });

  it('with ignoreError, writes zeros where the read failed and processes every chunk', async () => {
    const kc = dmKcopydClientCreate({ subJobSectors: 32 });
    const inner = patternDevice(256, 9);
    const source = createFaultDevice(inner, {
      ranges: [{ sector: 40, countSectors: 8, ops: ['read'] }],
      limits: { maxSectorsPerRequest: 8 },
    });
    const dest = ramDevice(256, 'dest');
    const result = await dmKcopydCopy(kc, { device: source, sector: 0, count: 256 },
      regions([dest], 0, 256), { ignoreError: true });
    assert.equal(result.readErr, true);
    assert.equal(result.writeErr, 0n);
    assert.ok(readBytes(dest, 40, 8).every((b) => b === 0), 'zeros for the failed request');
    assert.equal(hashOf(dest, 0, 40), hashOf(inner, 0, 40));
    assert.equal(hashOf(dest, 48, 208), hashOf(inner, 48, 208));
    await dmKcopydClientDestroy(kc);
  });

  it('a write failing on destination 1 of 3 still writes 0 and 2: writeErr 0b010', async () => {
    const kc = dmKcopydClientCreate();
    const source = patternDevice(64, 10);
    const dests = [ramDevice(64, 'a'), createFaultDevice(ramDevice(64, 'b'),
      { ranges: [{ sector: 0, countSectors: 64, ops: ['write'] }] }), ramDevice(64, 'c')];
    const result = await dmKcopydCopy(kc, { device: source, sector: 0, count: 64 },
      regions(dests, 0, 64), {});
    assert.equal(result.readErr, false);
    assert.equal(result.writeErr, 0b010n);
    assert.equal(result.writeErrors[0], undefined);
    assert.ok(result.writeErrors[1] !== undefined);
    assert.equal(hashOf(dests[0]!, 0, 64), hashOf(source, 0, 64));
    assert.equal(hashOf(dests[2]!, 0, 64), hashOf(source, 0, 64));
    await dmKcopydClientDestroy(kc);
  });

  it('ORs write errors across the chunks of a split job', async () => {
    const kc = dmKcopydClientCreate({ subJobSectors: 8 });
    const source = patternDevice(64, 11);
    const dests = [
      ramDevice(64, 'a'),
      createFaultDevice(ramDevice(64, 'b'), { ranges: [{ sector: 8, countSectors: 8 }] }),
      createFaultDevice(ramDevice(64, 'c'), { ranges: [{ sector: 40, countSectors: 8 }] }),
    ];
    const result = await dmKcopydCopy(kc, { device: source, sector: 0, count: 64 },
      regions(dests, 0, 64), { ignoreError: true });
    assert.equal(result.writeErr, 0b110n);
    assert.equal(hashOf(dests[0]!, 0, 64), hashOf(source, 0, 64));
    await dmKcopydClientDestroy(kc);
  });

  it('takes named flags only: a kernel flag mask (2) or an unknown key is refused', async () => {
    const kc = dmKcopydClientCreate();
    const source = patternDevice(8, 12);
    const dest = ramDevice(8, 'd');
    const from = { device: source, sector: 0, count: 8 };
    assert.throws(() => dmKcopydCopy(kc, from, regions([dest], 0, 8), 2 as never),
      (error) => isDmIoError(error, 'DMIO_ERR_INVALID_ARG_TYPE'));
    assert.throws(() => dmKcopydCopy(kc, from, regions([dest], 0, 8), { flags: 2 } as never),
      (error) => isDmIoError(error, 'DMIO_ERR_INVALID_ARG_VALUE'));
    assert.throws(() => dmKcopydCopy(kc, from, regions([dest], 0, 8),
      { ignoreError: 1 } as never), (error) => isDmIoError(error, 'DMIO_ERR_INVALID_ARG_TYPE'));
    assert.equal(kc.jobs, 0);
    await dmKcopydClientDestroy(kc);
  });

  it('rejects mismatched source and destination counts before anything is submitted', async () => {
    const kc = dmKcopydClientCreate();
    const source = createFaultDevice(patternDevice(64, 13));
    const dest = createFaultDevice(ramDevice(64, 'd'));
    assert.throws(() => dmKcopydCopy(kc, { device: source, sector: 0, count: 16 },
      [{ device: dest, sector: 0, count: 8 }], {}),
    (error) => isDmIoError(error, 'DMIO_ERR_INVALID_ARG_VALUE') && /dests\[0\]\.count/.test(
      (error as Error).message));
    assert.throws(() => dmKcopydZero(kc, [{ device: dest, sector: 0, count: 8 },
      { device: dest, sector: 8, count: 16 }], {}),
    (error) => isDmIoError(error, 'DMIO_ERR_INVALID_ARG_VALUE'));
    await new Promise((resolve) => setTimeout(resolve, 5));
    assert.equal(source.trace.length + dest.trace.length, 0);
    await dmKcopydClientDestroy(kc);
  });
});

describe('kcopyd: WRITE_SEQ', () => {
  const slowFirst = (sector: number): number => Math.max(1, 30 - sector / 4);

  it('writes in ascending offset order even when reads complete out of order', async () => {
    for (const writeSeq of [false, true]) {
      const kc = dmKcopydClientCreate({ subJobSectors: 8 });
      const inner = patternDevice(64, 14);
      const source = new ProbeDevice(inner, (req) => slowFirst(req.sector));
      const dest = new ProbeDevice(ramDevice(64, 'dest'));
      const result = await dmKcopydCopy(kc, { device: source, sector: 0, count: 64 },
        regions([dest], 0, 64), { writeSeq });
      assert.equal(result.writeErr, 0n);
      const order = dest.log.map((e) => e.sector);
      const sorted = [...order].sort((a, b) => a - b);
      if (writeSeq) assert.deepEqual(order, sorted);
      else assert.notDeepEqual(order, sorted, 'without writeSeq the reversed reads show');
      assert.equal(hashOf(dest, 0, 64), hashOf(inner, 0, 64));
      await dmKcopydClientDestroy(kc);
    }
  });

  it('turns ignoreError off: a failed read stops the job and its chunk is not written', async () => {
    const kc = dmKcopydClientCreate({ subJobSectors: 8 });
    const source = createFaultDevice(patternDevice(128, 15),
      { ranges: [{ sector: 24, countSectors: 8, ops: ['read'] }] });
    const dest = createFaultDevice(ramDevice(128, 'dest'));
    const result = await dmKcopydCopy(kc, { device: source, sector: 0, count: 128 },
      regions([dest], 0, 128), { writeSeq: true, ignoreError: true });
    assert.equal(result.readErr, true);
    assert.equal(source.trace.length, 8, 'no chunk after the first eight');
    const written = dest.trace.map((t) => t.sector);
    assert.deepEqual(written, [0, 8, 16], 'nothing at or after the failed chunk is written');
    assert.equal(result.writeErr, KCOPYD_WRITE_ERR_ALL,
      'writes waiting behind the failed chunk are cancelled');
    await dmKcopydClientDestroy(kc);
  });

  it('after a write error, the remaining writes fail with writeErr all ones', async () => {
    const kc = dmKcopydClientCreate({ subJobSectors: 8 });
    // Reads finish one after another, so later writes are issued after the failure arrives.
    const source = new ProbeDevice(patternDevice(64, 16), (req) => 5 + req.sector);
    const dest = createFaultDevice(ramDevice(64, 'dest'), {
      ranges: [{ sector: 16, countSectors: 8, ops: ['write'] }],
    });
    const result = await dmKcopydCopy(kc, { device: source, sector: 0, count: 64 },
      regions([dest], 0, 64), { writeSeq: true });
    assert.equal(result.writeErr, KCOPYD_WRITE_ERR_ALL);
    assert.deepEqual(dest.trace.map((t) => t.sector), [0, 8, 16], 'no write after the failure');
    assert.equal(source.log.length, 8, 'no chunk starts after the failure');
    await dmKcopydClientDestroy(kc);
  });
});

describe('kcopyd: zeroing', () => {
  it('uses write-zeroes when every destination supports it and takes no pages', async () => {
    let taken = 0;
    const kc = dmKcopydClientCreate({
      subJobSectors: 16,
      pageSource: { tryTake: () => { taken += 1; return null; }, give: () => assert.fail() },
    });
    const dests = [createFaultDevice(patternDevice(64, 17)), createFaultDevice(patternDevice(64, 18))];
    const pagesOut: number[] = [];
    const probes = dests.map((dest) => new ProbeDevice(dest, () => {
      pagesOut.push(kc.pagesOut);
      return 0;
    }));
    const result = await dmKcopydZero(kc, regions(probes, 8, 48), {});
    assert.deepEqual([result.readErr, result.writeErr], [false, 0n]);
    for (const dest of dests) {
      assert.ok(dest.trace.every((t) => t.op === 'write-zeroes'));
      assert.ok(readBytes(dest, 8, 48).every((b) => b === 0));
      assert.ok(readBytes(dest, 0, 8).some((b) => b !== 0), 'outside the range untouched');
    }
    assert.equal(taken, 0);
    assert.ok(pagesOut.length >= 6, 'every chunk reached both destinations');
    assert.ok(pagesOut.every((pages) => pages === 0), 'no page held while zeroing');
    await dmKcopydClientDestroy(kc);
  });

  it('writes from the shared zero page when one destination lacks write-zeroes', async () => {
    let taken = 0;
    const kc = dmKcopydClientCreate({
      subJobSectors: 16,
      pageSource: { tryTake: () => { taken += 1; return null; }, give: () => assert.fail() },
    });
    const dests = [
      createFaultDevice(patternDevice(64, 19)),
      createFaultDevice(patternDevice(64, 20), { limits: { maxWriteZeroesSectors: 0 } }),
    ];
    const pagesOut: number[] = [];
    const probes = dests.map((dest) => new ProbeDevice(dest, () => {
      pagesOut.push(kc.pagesOut);
      return 0;
    }));
    const result = await dmKcopydZero(kc, regions(probes, 0, 64), {});
    assert.equal(result.writeErr, 0n);
    assert.deepEqual(result.writtenBytes, [64 * SECTOR_SIZE, 64 * SECTOR_SIZE]);
    for (const dest of dests) {
      assert.ok(dest.trace.length > 0 && dest.trace.every((t) => t.op === 'write'));
      assert.ok(readBytes(dest, 0, 64).every((b) => b === 0));
    }
    assert.equal(taken, 0, 'zeroing never asks for pages');
    assert.ok(pagesOut.length > 0 && pagesOut.every((pages) => pages === 0),
      'the writes come from the shared zero page, not from the reserve');
    await dmKcopydClientDestroy(kc);
  });
});

describe('kcopyd: pages', () => {
  it('with the reserve empty and fresh pages failing, jobs wait in FIFO order and resume', async () => {
    const kc = dmKcopydClientCreate({ subJobSectors: 8, pageSource: failingSource() });
    let maxOut = 0;
    // Sampled as each read starts: the reading job holds its page then.
    const source = new ProbeDevice(patternDevice(64, 21), () => {
      maxOut = Math.max(maxOut, kc.pagesOut);
      return 2;
    });
    const dest = ramDevice(64, 'dest');
    const order: number[] = [];
    const jobs = [5, 1, 3, 0, 7, 2].map((chunk) => dmKcopydCopy(kc,
      { device: source, sector: chunk * 8, count: 8 }, regions([dest], chunk * 8, 8), {
        onProgress: () => { order.push(chunk); },
      }));
    const results = await Promise.all(jobs);
    assert.ok(results.every((r) => !r.readErr && r.writeErr === 0n));
    assert.deepEqual(source.log.map((e) => e.sector / 8), [5, 1, 3, 0, 7, 2], 'FIFO');
    assert.deepEqual(order, [5, 1, 3, 0, 7, 2]);
    assert.equal(source.inflightMax, 1, 'one sub-job of pages: one job at a time');
    assert.equal(maxOut, 1, 'the reserve holds one sub-job: one 8-sector page');
    assert.equal(kc.pagesOut, 0);
    assert.equal(hashOf(dest, 0, 64).length, 64);
    await dmKcopydClientDestroy(kc);
  });

  it('uses fresh pages when they come, and gives every page back to its source', async () => {
    let out = 0;
    let calls = 0;
    const pool: KcopydPageSource = {
      tryTake: (n) => {
        calls += 1;
        if (calls % 2 === 0) return null;
        out += n;
        return Array.from({ length: n }, () => new Uint8Array(PAGE_SIZE));
      },
      give: (pages) => { out -= pages.length; },
    };
    const kc = dmKcopydClientCreate({ subJobSectors: 8, pageSource: pool });
    const source = patternDevice(128, 22);
    const dest = ramDevice(128, 'd');
    await dmKcopydCopy(kc, { device: source, sector: 0, count: 128 }, regions([dest], 0, 128), {});
    assert.equal(out, 0);
    assert.ok(calls > 0);
    assert.equal(hashOf(dest, 0, 128), hashOf(source, 0, 128));
    await dmKcopydClientDestroy(kc);
  });
});

describe('kcopyd: callbacks, prepared callbacks and destroy', () => {
  it('runs every callback serially from the worker, never inside a device completion', async () => {
    const kc = dmKcopydClientCreate({ subJobSectors: 8 });
    const source = new ProbeDevice(patternDevice(256, 23), (req) => (req.sector % 3));
    const dest = new ProbeDevice(ramDevice(256, 'dest'));
    let active = 0;
    let calls = 0;
    const violations: string[] = [];
    const all: Array<Promise<void>> = [];
    for (let index = 0; index < 16; index += 1) {
      all.push(new Promise((resolve) => {
        dmKcopydCopy(kc, { device: source, sector: index * 16, count: 16 },
          regions([dest], index * 16, 16), {
            onProgress: () => {
              if (completionState.inside) violations.push('progress in completion');
            },
          }, () => {
            active += 1;
            calls += 1;
            if (active !== 1) violations.push('re-entered');
            if (completionState.inside) violations.push('inside a device completion');
            if (index % 4 === 0) {
              // Submitting from a callback must not run that job's callback here.
              dmKcopydCopy(kc, { device: source, sector: 0, count: 0 }, regions([dest], 0, 0), {},
                () => { if (active !== 0) violations.push('nested callback ran inside'); });
            }
            active -= 1;
            resolve();
          });
      }));
    }
    await Promise.all(all);
    await dmKcopydClientDestroy(kc);
    assert.equal(calls, 16);
    assert.deepEqual(violations, []);
  });

  it('fires a prepared callback from the worker with the given values; destroy waits for it', async () => {
    const kc = dmKcopydClientCreate();
    const calls: Array<[boolean, bigint, string]> = [];
    const token = dmKcopydPrepareCallback(kc, (readErr, writeErr, context: string) => {
      calls.push([readErr, writeErr, context]);
    }, 'snap');
    let destroyed = false;
    const destroying = dmKcopydClientDestroy(kc).then(() => { destroyed = true; });
    await new Promise((resolve) => setTimeout(resolve, 20));
    assert.equal(destroyed, false, 'an unfired prepared callback holds destroy');
    dmKcopydDoCallback(token, true, 0b101n);
    assert.deepEqual(calls, [], 'never inside dmKcopydDoCallback');
    await destroying;
    assert.deepEqual(calls, [[true, 0b101n, 'snap']]);
    assert.throws(() => dmKcopydDoCallback(token, false, 0n),
      (error) => isDmIoError(error, 'DMIO_ERR_INVALID_ARG_VALUE'));
  });

  it('destroy waits for outstanding jobs, then refuses new ones', async () => {
    const kc = dmKcopydClientCreate({ subJobSectors: 8 });
    const source = new ProbeDevice(patternDevice(64, 24), () => 10);
    const dest = ramDevice(64, 'dest');
    let copied = false;
    dmKcopydCopy(kc, { device: source, sector: 0, count: 64 }, regions([dest], 0, 64), {},
      () => { copied = true; });
    const destroying = dmKcopydClientDestroy(kc);
    assert.throws(() => dmKcopydCopy(kc, { device: source, sector: 0, count: 8 },
      regions([dest], 0, 8), {}), (error) => isDmIoError(error, 'DMIO_ERR_KCOPYD_DESTROYED'));
    assert.throws(() => dmKcopydPrepareCallback(kc, () => undefined),
      (error) => isDmIoError(error, 'DMIO_ERR_KCOPYD_DESTROYED'));
    await destroying;
    assert.equal(copied, true);
    assert.equal(kc.pagesOut, 0, 'destroy resolved with every page back');
    assert.equal(hashOf(dest, 0, 64), hashOf(source, 0, 64));
  });

  it('the leak check destroy runs catches a page that never came back', () => {
    // Jobs always give their pages back, so the check is shown on the reserve itself.
    const reserve = new PageReserve(2, failingSource(), 0);
    const grant = reserve.take(1);
    assert.ok(grant !== null);
    assert.throws(() => reserve.assertAllReturned(), /never returned/);
    reserve.give(grant);
    reserve.assertAllReturned();
  });
});

describe('kcopyd: the job bound', () => {
  it('refuses a job beyond jobsMax with DMIO_ERR_KCOPYD_BUSY, submitting nothing', async () => {
    const kc = dmKcopydClientCreate({ jobsMax: 2 });
    const source = createFaultDevice(patternDevice(64, 5), { delayMs: 20 });
    const dest = createFaultDevice(ramDevice(64, 'dest'));
    const first = dmKcopydCopy(kc, { device: source, sector: 0, count: 8 }, regions([dest], 0, 8), {});
    const second = dmKcopydCopy(kc, { device: source, sector: 8, count: 8 }, regions([dest], 8, 8), {});
    const tracedBefore = source.trace.length + dest.trace.length;
    assert.throws(
      () => dmKcopydCopy(kc, { device: source, sector: 16, count: 8 }, regions([dest], 16, 8), {}),
      (error: unknown) => isDmIoError(error, 'DMIO_ERR_KCOPYD_BUSY'),
    );
    assert.throws(() => dmKcopydZero(kc, regions([dest], 32, 8), {}),
      (error: unknown) => isDmIoError(error, 'DMIO_ERR_KCOPYD_BUSY'));
    assert.equal(source.trace.length + dest.trace.length, tracedBefore);
    for (const done of [await first, await second]) {
      assert.equal(done.readErr, false);
      assert.equal(done.writeErr, 0n);
    }
    // Room again once the jobs completed.
    const third = await dmKcopydCopy(kc, { device: source, sector: 16, count: 8 },
      regions([dest], 16, 8), {});
    assert.equal(third.readErr, false);
    assert.equal(third.writeErr, 0n);
    assert.equal(hashOf(dest.inner, 0, 24), hashOf(source.inner, 0, 24));
    await dmKcopydClientDestroy(kc);
  });
});

describe('kcopyd: buffer shape', () => {
  it('a page list of contiguous pool pages reaches the device as one segment, scattered pages as eight', async () => {
    const source = patternDevice(512, 31);
    const contiguousDest = createFaultDevice(ramDevice(512, 'contiguous'));
    const kc = dmKcopydClientCreate({ subJobSectors: 64 });
    const plain = await dmKcopydCopy(kc, { device: source, sector: 0, count: 256 },
      regions([contiguousDest], 0, 256), {});
    assert.equal(plain.writeErr, 0n);
    assert.ok(contiguousDest.trace.every((entry) => entry.segmentCount === 1),
      'pool runs are contiguous: dm-io merges them into one segment per write');
    await dmKcopydClientDestroy(kc);

    // A page source whose pages are separate allocations (never contiguous).
    const scattered: KcopydPageSource = {
      tryTake: (pageCount) => Array.from({ length: pageCount }, () => new Uint8Array(PAGE_SIZE)),
      give: () => {},
    };
    const scatteredDest = createFaultDevice(ramDevice(512, 'scattered'));
    const kc2 = dmKcopydClientCreate({ subJobSectors: 64, pageSource: scattered });
    const viaList = await dmKcopydCopy(kc2, { device: source, sector: 0, count: 256 },
      regions([scatteredDest], 0, 256), {});
    assert.equal(viaList.writeErr, 0n);
    assert.ok(scatteredDest.trace.every((entry) => entry.segmentCount === 8),
      'eight separate pages per 64-sector chunk');
    assert.equal(hashOf(contiguousDest.inner, 0, 256), hashOf(source, 0, 256));
    assert.equal(hashOf(scatteredDest.inner, 0, 256), hashOf(source, 0, 256));
    await dmKcopydClientDestroy(kc2);
  });
});
