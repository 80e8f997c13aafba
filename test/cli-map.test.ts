// `dmio info DEVICE --map`, in-process through `main(argv, deps)`: a sparse file's map in
// nbdinfo --map's layout and as a JSON array, the same text nbdinfo prints for the file served
// by nbdkit, a file of more runs than one query holds (every run, in order), answers merged
// across queries (an empty 64 GiB RAM disk and two zero segments each print one line),
// zero:, random: and an empty file; a query failing midway (exit 1, its error named, the lines
// before it printed).

import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { type BlockDevice, EXTENTS_PER_QUERY_MAX, IoError } from '../src/index.js';
import { runDmio } from './cli-helpers.js';
import { runToolOk } from './helpers/dmio-serve.js';
import { writeSparseFile } from './helpers/extents.js';
import { requireTools } from './helpers/nbdkit.js';
import { tempDir } from './helpers/tmp.js';

const KIB = 1024;
const MIB = 1024 * KIB;

/** A 1 MiB file with data at 256-320 KiB and 768-832 KiB. */
const RUNS = [{ offsetBytes: 256 * KIB, lengthBytes: 64 * KIB },
  { offsetBytes: 768 * KIB, lengthBytes: 64 * KIB }];

const EXPECTED_TEXT = [
  '         0      262144    3  hole,zero',
  '    262144       65536    0  data',
  '    327680      458752    3  hole,zero',
  '    786432       65536    0  data',
  '    851968      196608    3  hole,zero',
  '',
].join('\n');

describe('dmio info --map', () => {
  it('prints a sparse file\'s map as nbdinfo --map does, and as a JSON array', async (t) => {
    const image = join(await tempDir(t), 'sparse.img');
    writeSparseFile(image, MIB, RUNS);
    const text = await runDmio(['info', image, '--map']);
    assert.equal(text.status, 0, text.stderr);
    assert.equal(text.stdout, EXPECTED_TEXT);
    const json = await runDmio(['info', image, '--map', '--json']);
    assert.equal(json.status, 0, json.stderr);
    assert.deepEqual(JSON.parse(json.stdout), [
      { offsetBytes: 0, lengthBytes: 262144, hole: true, zero: true },
      { offsetBytes: 262144, lengthBytes: 65536, hole: false, zero: false },
      { offsetBytes: 327680, lengthBytes: 458752, hole: true, zero: true },
      { offsetBytes: 786432, lengthBytes: 65536, hole: false, zero: false },
      { offsetBytes: 851968, lengthBytes: 196608, hole: true, zero: true },
    ]);
  });

  it('agrees with nbdinfo --map of the same file served by nbdkit', async (t) => {
    if (!requireTools(t, 'nbdkit', 'nbdinfo')) return;
    const image = join(await tempDir(t), 'sparse.img');
    writeSparseFile(image, MIB, RUNS);
    const nbdinfo = await runToolOk('nbdkit',
      ['-U', '-', 'file', image, '--run', 'nbdinfo --map "$uri"']);
    assert.equal(nbdinfo.stdout, EXPECTED_TEXT);
    assert.equal((await runDmio(['info', image, '--map'])).stdout, nbdinfo.stdout);
  });

  it(`maps a file of more runs than one query holds (${EXTENTS_PER_QUERY_MAX})`, async (t) => {
    const image = join(await tempDir(t), 'many.img');
    const runs = Array.from({ length: 700 }, (_, index) =>
      ({ offsetBytes: index * 128 * KIB + 64 * KIB, lengthBytes: 64 * KIB }));
    writeSparseFile(image, 700 * 128 * KIB, runs);
    const run = await runDmio(['info', image, '--map', '--json']);
    assert.equal(run.status, 0, run.stderr);
    const map = JSON.parse(run.stdout) as Array<{ offsetBytes: number; hole: boolean }>;
    assert.equal(map.length, 1400);
    map.forEach((extent, index) => {
      assert.equal(extent.offsetBytes, index * 64 * KIB);
      assert.equal(extent.hole, index % 2 === 0);
    });
  });

  it('merges neighbours of one kind across answers: RAM bounds, table segments', async (t) => {
    const ram = await runDmio(['info', 'mem:64G', '--map']);
    assert.equal(ram.status, 0, ram.stderr);
    assert.equal(ram.stdout, '         0  68719476736    3  hole,zero\n');
    const table = join(await tempDir(t), 'zeros.table');
    writeFileSync(table, '0 2048 zero\n2048 2048 zero\n4096 2048 error\n');
    const tabled = await runDmio(['info', `table:${table}`, '--map']);
    assert.equal(tabled.status, 0, tabled.stderr);
    assert.equal(tabled.stdout, '         0     2097152    3  hole,zero\n' +
      '   2097152     1048576    0  data\n');
  });

  it('zero: is one hole, random: is data, an empty file maps to nothing', async (t) => {
    assert.equal((await runDmio(['info', 'zero:1M', '--map'])).stdout,
      '         0     1048576    3  hole,zero\n');
    assert.deepEqual(JSON.parse((await runDmio(['info', 'random:1M', '--map', '--json'])).stdout),
      [{ offsetBytes: 0, lengthBytes: MIB, hole: false, zero: false }]);
    const empty = join(await tempDir(t), 'empty.img');
    writeFileSync(empty, '');
    const text = await runDmio(['info', empty, '--map']);
    assert.equal(text.status, 0, text.stderr);
    assert.equal(text.stdout, '');
    assert.deepEqual(JSON.parse((await runDmio(['info', empty, '--map', '--json'])).stdout), []);
  });

  it('a query failing midway is exit 1 with its error, after the lines before it', async (t) => {
    const image = join(await tempDir(t), 'many.img');
    const runs = Array.from({ length: 700 }, (_, index) =>
      ({ offsetBytes: index * 128 * KIB, lengthBytes: 64 * KIB }));
    writeSparseFile(image, 700 * 128 * KIB, runs);
    const run = await runDmio(['info', image, '--map'],
      { wrapDevice: (device) => failSecondQuery(device) });
    assert.equal(run.status, 1);
    const lines = run.stdout.split('\n').filter((line) => line !== '');
    assert.equal(lines.length, EXTENTS_PER_QUERY_MAX - 1, 'the last extent waited for a merge');
    assert.match(run.stderr, /^dmio: DMIO_ERR_IO: EIO, lseek /);
  });
});

/** `device` with `extents` failing (EIO) from its second query on. */
function failSecondQuery(device: BlockDevice): BlockDevice {
  let queries = 0;
  const extents = device.extents?.bind(device);
  assert.ok(extents !== undefined);
  return {
    name: device.name, kind: device.kind, sizeSectors: device.sizeSectors,
    readOnly: device.readOnly, limits: device.limits, canBlock: false,
    get closed() {
      return device.closed;
    },
    submit: (request, done) => device.submit(request, done),
    close: () => device.close(),
    extents: (sector, countSectors, done) => {
      queries += 1;
      if (queries === 1) {
        extents(sector, countSectors, done);
        return;
      }
      const error = new IoError({ errno: 'EIO', syscall: 'lseek', device: device.name, sector,
        countSectors });
      queueMicrotask(() => done(error, []));
    },
  };
}
