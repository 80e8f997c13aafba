// Tests regular files' extents: the SEEK_DATA/SEEK_HOLE walk against a fake lseek (byte runs
// that no filesystem makes, to pin the conservative rounding, the unsupported and failing
// seeks) answering later or inside the call (a blocking lseek, the walk of `extentsSync`),
// then FileDevice on real sparse files on ext4 (the tmp directory) and tmpfs (/dev/shm):
// scattered writes into a truncated file, holes punched with fallocate into a written one, the
// EXTENTS_PER_QUERY_MAX bound and its continuation, O_DIRECT, `extentsSync` against
// `extents`, and a closed device. Layouts are 64 KiB-aligned, above either filesystem's block
// size, so the kernel's answer is exactly the written runs.

import assert from 'node:assert/strict';
import { closeSync, openSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test, type TestContext } from 'node:test';
import { errnoNumber } from '../sys/errno-name.js';
import { FALLOC_FL, fallocateSync, SysError } from '../sys/libc.js';
import { type DeviceExtent, EXTENTS_PER_QUERY_MAX } from './block-device.js';
import { openFileDevice } from './file-device.js';
import { type SeekFunction, walkFileExtents } from './file-extents.js';
import { tempDir } from '../../test/helpers/tmp.js';
import {
  assertContract, type DataRun, extentsOf, modelExtents, queryExtents, writeSparseFile,
} from '../../test/helpers/extents.js';

const KIB = 1024;
const MIB = 1024 * KIB;
const FILESYSTEMS: ReadonlyArray<readonly [string, string | undefined]> = [
  ['ext4 (tmp directory)', undefined], ['tmpfs', '/dev/shm'],
];

function sysError(name: string): SysError {
  return new SysError(errnoNumber(name) ?? 5, `lseek ${name}`);
}

/**
 * lseek over a file of `sizeBytes` whose data is `runs` (sorted, apart), answering on a later
 * turn (or inside the call, as a blocking lseek does, when `inside`); `fail` overrides the
 * answer for chosen calls. Counts the calls.
 */
function fakeSeek(
  sizeBytes: number, runs: readonly DataRun[],
  fail: (whence: string, offsetBytes: number) => string | null = () => null, inside = false,
): { seek: SeekFunction; calls: () => number } {
  let callCount = 0;
  const answer = (offsetBytes: number, whence: string): number | string => {
    const failure = fail(whence, offsetBytes);
    if (failure !== null) return failure;
    if (offsetBytes >= sizeBytes) return 'ENXIO';
    const run = runs.find((candidate) =>
      candidate.offsetBytes + candidate.lengthBytes > offsetBytes);
    if (whence === 'SEEK_DATA') {
      return run === undefined ? 'ENXIO' : Math.max(run.offsetBytes, offsetBytes);
    }
    if (run === undefined || run.offsetBytes > offsetBytes) return offsetBytes;
    return Math.min(run.offsetBytes + run.lengthBytes, sizeBytes);
  };
  const seek: SeekFunction = (offsetBytes, whence, callback) => {
    callCount += 1;
    const found = answer(offsetBytes, whence);
    const reply = (): void => {
      if (typeof found === 'string') callback(sysError(found), 0);
      else callback(null, found);
    };
    if (inside) reply();
    else setImmediate(reply);
  };
  return { seek, calls: () => callCount };
}

function walk(
  seek: SeekFunction, sector: number, countSectors: number,
): Promise<{ error: SysError | null; extents: readonly DeviceExtent[] }> {
  return new Promise((resolve) => {
    walkFileExtents(seek, sector, countSectors, (error, extents) => resolve({ error, extents }));
  });
}

const hole = (sector: number, countSectors: number): DeviceExtent =>
  ({ sector, countSectors, hole: true, zero: true });
const data = (sector: number, countSectors: number): DeviceExtent =>
  ({ sector, countSectors, hole: false, zero: false });

describe('the SEEK_DATA/SEEK_HOLE walk (fake lseek)', () => {
  test('a sector partly data is data: data rounds outward, holes inward', async () => {
    // Data at bytes 1000-1999: sectors 1-3 (bytes 512-2047) are data.
    const { seek } = fakeSeek(8192, [{ offsetBytes: 1000, lengthBytes: 1000 }]);
    const { error, extents } = await walk(seek, 0, 16);
    assert.equal(error, null);
    assert.deepEqual(extents, [hole(0, 1), data(1, 3), hole(4, 12)]);
  });

  test('two data runs a sub-sector hole apart make one data extent', async () => {
    const { seek } = fakeSeek(4096, [{ offsetBytes: 0, lengthBytes: 100 },
      { offsetBytes: 600, lengthBytes: 100 }, { offsetBytes: 1024, lengthBytes: 512 }]);
    const { extents } = await walk(seek, 0, 8);
    assert.deepEqual(extents, [data(0, 3), hole(3, 5)]);
  });

  test('a query inside a run starts at its sector and ends at the range end', async () => {
    const runs = [{ offsetBytes: 64 * KIB, lengthBytes: 64 * KIB }];
    const { seek } = fakeSeek(MIB, runs);
    assert.deepEqual((await walk(seek, 130, 10)).extents, [data(130, 10)]);
    assert.deepEqual((await walk(seek, 100, 40)).extents, [hole(100, 28), data(128, 12)]);
    assert.deepEqual((await walk(seek, 250, 100)).extents, [data(250, 6), hole(256, 94)]);
  });

  test('ENXIO from SEEK_DATA is a hole to the end, found with one call', async () => {
    const { seek, calls } = fakeSeek(MIB, [{ offsetBytes: 0, lengthBytes: 4096 }]);
    assert.deepEqual((await walk(seek, 8, 2040)).extents, [hole(8, 2040)]);
    assert.equal(calls(), 1);
  });

  test('a filesystem that cannot seek data reports the rest of the range as data', async () => {
    for (const errno of ['EINVAL', 'EOPNOTSUPP']) {
      const { seek } = fakeSeek(MIB, [], () => errno);
      const { error, extents } = await walk(seek, 0, 2048);
      assert.equal(error, null, errno);
      assert.deepEqual(extents, [data(0, 2048)], errno);
    }
    const late = fakeSeek(MIB, [{ offsetBytes: 64 * KIB, lengthBytes: 4096 }],
      (whence) => (whence === 'SEEK_HOLE' ? 'EINVAL' : null));
    assert.deepEqual((await walk(late.seek, 0, 2048)).extents, [hole(0, 128), data(128, 1920)]);
  });

  test('SEEK_HOLE failing with ENXIO (the file shrank) leaves data, the safe answer', async () => {
    const { seek } = fakeSeek(MIB, [{ offsetBytes: 0, lengthBytes: 4096 }],
      (whence) => (whence === 'SEEK_HOLE' ? 'ENXIO' : null));
    assert.deepEqual((await walk(seek, 0, 64)).extents, [data(0, 64)]);
  });

  test('any other error fails the query with the system error and no extents', async () => {
    const { seek } = fakeSeek(MIB, [{ offsetBytes: 0, lengthBytes: 4096 }],
      (whence) => (whence === 'SEEK_HOLE' ? 'EIO' : null));
    const { error, extents } = await walk(seek, 0, 64);
    assert.equal(error?.code, 'EIO');
    assert.deepEqual(extents, []);
  });

  test('stops after EXTENTS_PER_QUERY_MAX extents, at most two calls each', async () => {
    const runs = Array.from({ length: 700 }, (_, index) =>
      ({ offsetBytes: index * 2048 + 1024, lengthBytes: 1024 }));
    const { seek, calls } = fakeSeek(700 * 2048, runs);
    const { extents } = await walk(seek, 0, 700 * 4);
    assert.equal(extents.length, EXTENTS_PER_QUERY_MAX);
    assert.ok(calls() <= 2 * EXTENTS_PER_QUERY_MAX, `${calls()} calls`);
    assert.deepEqual(extents, modelExtents(runs, 0, 700 * 4).slice(0, EXTENTS_PER_QUERY_MAX));
  });
});

describe('the walk with a seek answering inside its call (a blocking lseek)', () => {
  /** The walk's answer, which must come before walkFileExtents returns. */
  function walkInside(
    seek: SeekFunction, sector: number, countSectors: number,
  ): { error: SysError | null; extents: readonly DeviceExtent[] } {
    let answer: { error: SysError | null; extents: readonly DeviceExtent[] } | undefined;
    walkFileExtents(seek, sector, countSectors, (error, extents) => {
      assert.equal(answer, undefined, 'done runs once');
      answer = { error, extents };
    });
    assert.ok(answer !== undefined, 'done ran inside the call');
    return answer;
  }

  test('answers inside the call, as the later-answering seek does', async () => {
    const runs = [{ offsetBytes: 1000, lengthBytes: 1000 }, { offsetBytes: 64 * KIB,
      lengthBytes: 64 * KIB }];
    const failures: Array<(whence: string) => string | null> = [() => null,
      (whence) => (whence === 'SEEK_HOLE' ? 'EINVAL' : null),
      (whence) => (whence === 'SEEK_HOLE' ? 'EIO' : null)];
    for (const fail of failures) {
      for (const [sector, countSectors] of [[0, 2048], [3, 300], [130, 10], [256, 1792]]) {
        const later = await walk(fakeSeek(MIB, runs, fail).seek, sector as number,
          countSectors as number);
        const inside = walkInside(fakeSeek(MIB, runs, fail, true).seek, sector as number,
          countSectors as number);
        assert.equal(inside.error?.code, later.error?.code);
        assert.deepEqual(inside.extents, later.extents, `${sector}+${countSectors}`);
      }
    }
  });

  test(`${EXTENTS_PER_QUERY_MAX} extents in a loop, without deepening the stack`, () => {
    const runs = Array.from({ length: 700 }, (_, index) =>
      ({ offsetBytes: index * 2048 + 1024, lengthBytes: 1024 }));
    const depths: number[] = [];
    const { seek: inner } = fakeSeek(700 * 2048, runs, () => null, true);
    const seek: SeekFunction = (offsetBytes, whence, callback) => {
      depths.push(new Error().stack?.split('\n').length ?? 0);
      inner(offsetBytes, whence, callback);
    };
    const stackTraceLimit = Error.stackTraceLimit;
    Error.stackTraceLimit = Infinity; // Count every frame, not the default first ten.
    let extents: readonly DeviceExtent[];
    try {
      extents = walkInside(seek, 0, 700 * 4).extents;
    } finally {
      Error.stackTraceLimit = stackTraceLimit;
    }
    assert.deepEqual(extents, modelExtents(runs, 0, 700 * 4).slice(0, EXTENTS_PER_QUERY_MAX));
    assert.equal(Math.max(...depths), Math.min(...depths), 'every seek from the same depth');
  });

  test('a seek that answers inside some calls and later in others', async () => {
    const runs = Array.from({ length: 20 }, (_, index) =>
      ({ offsetBytes: index * 8192, lengthBytes: 4096 }));
    const inside = fakeSeek(20 * 8192, runs, () => null, true).seek;
    const later = fakeSeek(20 * 8192, runs).seek;
    let call = 0;
    const mixed: SeekFunction = (offsetBytes, whence, callback) => {
      call += 1;
      (call % 3 === 0 ? later : inside)(offsetBytes, whence, callback);
    };
    const { error, extents } = await walk(mixed, 0, 320);
    assert.equal(error, null);
    assert.deepEqual(extents, modelExtents(runs, 0, 320));
  });
});

async function sparseDevice(
  t: TestContext, parent: string | undefined, sizeBytes: number, runs: readonly DataRun[],
  direct = false,
): Promise<{ device: Awaited<ReturnType<typeof openFileDevice>>; path: string }> {
  const path = join(await tempDir(t, parent === undefined ? {} : { parent }), 'sparse.img');
  writeSparseFile(path, sizeBytes, runs);
  const device = await openFileDevice(path, { readOnly: true, direct });
  t.after(() => device.close());
  return { device, path };
}

/** Every query of the whole device, from sector 0, each from where the last one ended. */
async function walkDevice(
  device: Awaited<ReturnType<typeof openFileDevice>>,
): Promise<DeviceExtent[][]> {
  const answers: DeviceExtent[][] = [];
  let sector = 0;
  while (sector < device.sizeSectors) {
    const extents = await extentsOf(device, sector, device.sizeSectors - sector);
    answers.push([...extents]);
    const last = extents[extents.length - 1] as DeviceExtent;
    sector = last.sector + last.countSectors;
  }
  return answers;
}

/** Data runs scattered over a 4 MiB file, its first and last 64 KiB among them. */
const SCATTERED_RUNS = [
  { offsetBytes: 0, lengthBytes: 64 * KIB },
  { offsetBytes: 256 * KIB, lengthBytes: 128 * KIB },
  { offsetBytes: 1024 * KIB, lengthBytes: 64 * KIB },
  { offsetBytes: 4 * MIB - 64 * KIB, lengthBytes: 64 * KIB },
];

for (const [fsName, parent] of FILESYSTEMS) {
  describe(`file device extents on ${fsName}`, () => {
    test('a truncated file with scattered writes: exactly the written runs are data',
      async (t) => {
        const { device } = await sparseDevice(t, parent, 4 * MIB, SCATTERED_RUNS);
        const extents = await extentsOf(device, 0, device.sizeSectors);
        assert.deepEqual(extents, [data(0, 128), hole(128, 384), data(512, 256),
          hole(768, 1280), data(2048, 128), hole(2176, 5888), data(8064, 128)]);
        assert.deepEqual(extents, modelExtents(SCATTERED_RUNS, 0, device.sizeSectors));
        assert.deepEqual(await extentsOf(device, 600, 2000), modelExtents(SCATTERED_RUNS, 600, 2000));
      });

    test('a file ending in a hole, and one with no data at all', async (t) => {
      const { device } = await sparseDevice(t, parent, 2 * MIB,
        [{ offsetBytes: 128 * KIB, lengthBytes: 64 * KIB }]);
      assert.deepEqual(await extentsOf(device, 0, device.sizeSectors),
        [hole(0, 256), data(256, 128), hole(384, 3712)]);
      const empty = await sparseDevice(t, parent, MIB, []);
      assert.deepEqual(await extentsOf(empty.device, 0, 2048), [hole(0, 2048)]);
    });

    test('holes punched with fallocate into a written file', async (t) => {
      const path = join(await tempDir(t, parent === undefined ? {} : { parent }), 'punched.img');
      writeFileSync(path, Buffer.alloc(2 * MIB, 0x5a));
      const fd = openSync(path, 'r+');
      try {
        const punches = [[64 * KIB, 64 * KIB], [512 * KIB, 256 * KIB],
          [2 * MIB - 64 * KIB, 64 * KIB]];
        for (const [offsetBytes, lengthBytes] of punches) {
          assert.equal(fallocateSync(fd, FALLOC_FL.PUNCH_HOLE | FALLOC_FL.KEEP_SIZE,
            offsetBytes as number, lengthBytes as number), null);
        }
      } finally {
        closeSync(fd);
      }
      const device = await openFileDevice(path, { readOnly: true });
      t.after(() => device.close());
      assert.deepEqual(await extentsOf(device, 0, device.sizeSectors), [data(0, 128),
        hole(128, 128), data(256, 768), hole(1024, 512), data(1536, 2432), hole(3968, 128)]);
    });

    test(`more than ${EXTENTS_PER_QUERY_MAX} runs: exactly ${EXTENTS_PER_QUERY_MAX} extents, ` +
      'the next query continuing from their end', async (t) => {
      // 600 runs of 64 KiB data then 64 KiB hole: 1200 extents.
      const runs = Array.from({ length: 600 }, (_, index) =>
        ({ offsetBytes: index * 128 * KIB, lengthBytes: 64 * KIB }));
      const sizeBytes = 600 * 128 * KIB;
      const { device } = await sparseDevice(t, parent, sizeBytes, runs);
      const answers = await walkDevice(device);
      assert.equal(answers.length, 2);
      const [first, second] = answers as [DeviceExtent[], DeviceExtent[]];
      assert.equal(first.length, EXTENTS_PER_QUERY_MAX);
      const model = modelExtents(runs, 0, device.sizeSectors);
      assert.equal(model.length, 1200);
      assert.deepEqual(first, model.slice(0, EXTENTS_PER_QUERY_MAX));
      assert.equal(second[0]?.sector, EXTENTS_PER_QUERY_MAX * 128);
      assert.deepEqual(second, model.slice(EXTENTS_PER_QUERY_MAX));
    });

    test('extentsSync returns what extents answers, range by range', async (t) => {
      const { device } = await sparseDevice(t, parent, 4 * MIB, SCATTERED_RUNS);
      const ranges = [[0, device.sizeSectors], [600, 2000], [128, 1], [130, 300],
        [8000, device.sizeSectors - 8000], [2047, 2]] as const;
      for (const [sector, countSectors] of ranges) {
        const answer = device.extentsSync(sector, countSectors);
        assert.equal(answer.error, null);
        assertContract(answer.extents, sector, countSectors);
        assert.deepEqual(answer.extents, await extentsOf(device, sector, countSectors),
          `${sector}+${countSectors}`);
        assert.deepEqual(answer.extents, modelExtents(SCATTERED_RUNS, sector, countSectors));
      }
    });

    test(`extentsSync stops at ${EXTENTS_PER_QUERY_MAX} extents, as extents does`, async (t) => {
      const runs = Array.from({ length: 600 }, (_, index) =>
        ({ offsetBytes: index * 128 * KIB, lengthBytes: 64 * KIB }));
      const { device } = await sparseDevice(t, parent, 600 * 128 * KIB, runs);
      const first = device.extentsSync(0, device.sizeSectors);
      assert.equal(first.extents.length, EXTENTS_PER_QUERY_MAX);
      assert.deepEqual(first.extents, await extentsOf(device, 0, device.sizeSectors));
      const from = EXTENTS_PER_QUERY_MAX * 128;
      assert.deepEqual(device.extentsSync(from, device.sizeSectors - from).extents,
        modelExtents(runs, from, device.sizeSectors - from));
    });

    test('a device opened with O_DIRECT answers the same', async (t) => {
      const runs = [{ offsetBytes: 192 * KIB, lengthBytes: 64 * KIB }];
      const { device } = await sparseDevice(t, parent, MIB, runs, true);
      assert.equal(device.direct, true);
      assert.deepEqual(await extentsOf(device, 0, 2048), modelExtents(runs, 0, 2048));
    });
  });
}

describe('file device extents and closing', () => {
  test('a closed device answers EBADF with no extents', async (t) => {
    const { device } = await sparseDevice(t, undefined, MIB, []);
    await device.close();
    const { error, extents } = await queryExtents(device, 0, 8);
    assert.equal(error?.errno, 'EBADF');
    assert.equal(error?.code, 'DMIO_ERR_IO');
    assert.equal(error?.device, device.name);
    assert.deepEqual(extents, []);
  });

  test('a closed device gives EBADF from extentsSync, with no extents', async (t) => {
    const { device } = await sparseDevice(t, undefined, MIB,
      [{ offsetBytes: 0, lengthBytes: 64 * KIB }]);
    await device.close();
    const { error, extents } = device.extentsSync(0, 8);
    assert.equal(error?.errno, 'EBADF');
    assert.equal(error?.code, 'DMIO_ERR_IO');
    assert.equal(error?.device, device.name);
    assert.deepEqual(extents, []);
  });

  test('close() waits for a query in flight, which still answers', async (t) => {
    const runs = Array.from({ length: 300 }, (_, index) =>
      ({ offsetBytes: index * 128 * KIB, lengthBytes: 64 * KIB }));
    const { device } = await sparseDevice(t, undefined, 300 * 128 * KIB, runs);
    const events: string[] = [];
    const query = queryExtents(device, 0, device.sizeSectors).then((answer) => {
      events.push('answered');
      return answer;
    });
    const closing = device.close().then(() => events.push('closed'));
    assert.equal(device.closed, true);
    const [answer] = await Promise.all([query, closing]);
    assert.deepEqual(events, ['answered', 'closed']);
    assert.equal(answer.error, null);
    assert.equal(answer.extents.length, 600);
  });
});
