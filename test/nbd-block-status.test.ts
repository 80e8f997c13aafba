// NbdDevice.extents against real servers: nbdkit's sparse-random and data plugins and its
// memory plugin after writes agree with `nbdinfo --map --json` of the same export; a data
// export of 2200 runs answers at most 1024 extents a query and the walk goes on to the end;
// ranges that start and end inside runs and a 4096-byte minimum block (the request widened to
// whole blocks, the answer still from the first sector asked); server errors become IoErrors
// and the device stays usable; qemu-nbd (context id 0). Servers without base:allocation (no
// structured replies) answer one data extent, and copies from them still work.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { execFileSync } from 'node:child_process';
import { dmKcopydClientCreate, dmKcopydClientDestroy, dmKcopydCopy } from '../src/index.js';
import { createRamDevice } from '../src/devices/ram-device.js';
import { isDmIoError, IoError } from '../src/errors.js';
import { EXTENTS_PER_QUERY_MAX } from '../src/devices/block-device.js';
import { openNbdDevice } from '../src/nbd/open-nbd.js';
import type { NbdDevice } from '../src/nbd/nbd-device.js';
import { pattern, request, submit } from './helpers/device-io.js';
import { byteRuns, nbdinfoMap, queryExtents, walkExtents } from './helpers/nbd-extents.js';
import {
  makeTempDir, requireTools, startNbdkit, startQemuNbd, type NbdServer,
} from './helpers/nbdkit.js';

const MiB = 1024 * 1024;

/** Runs `body` with an nbdkit started with `args` and a device opened on it. */
async function withExport(
  args: readonly string[] | ((dir: string) => readonly string[]),
  body: (device: NbdDevice, server: NbdServer) => Promise<void>,
): Promise<void> {
  const dir = makeTempDir();
  const server = await startNbdkit(typeof args === 'function' ? args(dir) : args, { dir });
  let device: NbdDevice | null = null;
  try {
    device = await openNbdDevice(server.uri);
    await body(device, server);
  } finally {
    await device?.close();
    await server.stop();
  }
}

describe('extents against nbdkit, checked with nbdinfo --map', () => {
  test('sparse-random: every run agrees', async (t) => {
    if (!requireTools(t, 'nbdkit', 'nbdinfo')) return;
    await withExport(['sparse-random', '64M', 'runlength=262144', 'percent=30', 'seed=17'],
      async (device, server) => {
        assert.equal(device.blockStatus, true);
        const { extents } = await walkExtents(device);
        const runs = byteRuns(extents);
        assert.ok(runs.length > 20, `${runs.length} runs: the export is really sparse`);
        assert.deepEqual(runs, await nbdinfoMap(server.uri));
        assert.ok(device.replies.statusChunks >= 1);
      });
  });

  test('data plugin with holes between small writes', async (t) => {
    if (!requireTools(t, 'nbdkit', 'nbdinfo')) return;
    await withExport(['data', '1 @1048576 2 @3000000 3', 'size=4M'], async (device, server) => {
      const { extents, queries } = await walkExtents(device);
      assert.equal(queries, 1);
      const runs = byteRuns(extents);
      assert.deepEqual(runs, await nbdinfoMap(server.uri));
      assert.deepEqual(runs.map((run) => run.type), [0, 3, 0, 3, 0, 3]);
    });
  });

  test('memory plugin after writes, a write-zeroes and a trim', async (t) => {
    if (!requireTools(t, 'nbdkit', 'nbdinfo')) return;
    await withExport(['memory', '64M'], async (device, server) => {
      const before = await walkExtents(device);
      assert.deepEqual(byteRuns(before.extents), [{ offset: 0, length: 64 * MiB, type: 3 }]);
      const writes: Array<[number, number]> = [[0, 8], [10241, 3], [81920, 2048], [131064, 8]];
      for (const [sector, countSectors] of writes) {
        const data = pattern(sector * 512, countSectors * 512, 5);
        assert.equal(await submit(device, request('write', sector, countSectors, [data])), null);
      }
      assert.equal(await submit(device, request('write-zeroes', 81920 + 256, 512)), null);
      assert.equal(await submit(device, request('discard', 81920 + 1024, 512)), null);
      const { extents } = await walkExtents(device);
      const runs = byteRuns(extents);
      assert.deepEqual(runs, await nbdinfoMap(server.uri));
      for (const [sector] of writes) {
        const holding = runs.find((run) => run.offset <= sector * 512 &&
          sector * 512 < run.offset + run.length);
        assert.equal(holding?.type, 0, `sector ${sector} is data`);
      }
    });
  });

  test('2200 runs: at most 1024 extents a query, and the walk continues to the end', async (t) => {
    if (!requireTools(t, 'nbdkit', 'nbdinfo')) return;
    // One byte every 64 KiB: nbdkit's 32 KiB pages alternate data and hole, 2200 runs, all
    // in one BLOCK_STATUS chunk.
    await withExport(['data', '( 1 @+65535 )*1100'], async (device, server) => {
      const first = await queryExtents(device, 0, device.sizeSectors);
      assert.equal(first.error, null);
      assert.equal(first.extents.length, EXTENTS_PER_QUERY_MAX);
      const { extents, queries, largestAnswer } = await walkExtents(device);
      assert.equal(largestAnswer, EXTENTS_PER_QUERY_MAX);
      assert.equal(queries, 3);
      const runs = byteRuns(extents);
      assert.equal(runs.length, 2200);
      assert.deepEqual(runs, await nbdinfoMap(server.uri));
    });
  });

  test('a range inside runs is clipped at both ends', async (t) => {
    if (!requireTools(t, 'nbdkit')) return;
    await withExport(['data', '1 @1048576 2', 'size=4M'], async (device) => {
      // Sectors 10-2099: inside the first data page, across the hole, into the second page.
      // nbdkit reports an allocated page's part that holds only zeros as zero.
      const answer = await queryExtents(device, 10, 2090);
      assert.equal(answer.error, null);
      assert.deepEqual(answer.extents, [
        { sector: 10, countSectors: 54, hole: false, zero: true },
        { sector: 64, countSectors: 1984, hole: true, zero: true },
        { sector: 2048, countSectors: 52, hole: false, zero: false },
      ]);
      const one = await queryExtents(device, 100, 1);
      assert.deepEqual(one.extents, [{ sector: 100, countSectors: 1, hole: true, zero: true }]);
    });
  });

  test('a 4096-byte minimum block: requests widened to blocks, answers from the sector', async (t) => {
    if (!requireTools(t, 'nbdkit')) return;
    await withExport((dir) => ['--filter=log', '--filter=blocksize-policy', 'data',
      '1 @1048576 2', 'size=4M', 'blocksize-minimum=4096', 'blocksize-maximum=65536',
      'blocksize-error-policy=error', `logfile=${path.join(dir, 'log')}`],
    async (device, server) => {
      assert.equal(device.limits.logicalBlockBytes, 4096);
      const answer = await queryExtents(device, 9, 2048);
      assert.equal(answer.error, null);
      assert.deepEqual(answer.extents, [
        { sector: 9, countSectors: 55, hole: false, zero: true },
        { sector: 64, countSectors: 1984, hole: true, zero: true },
        { sector: 2048, countSectors: 9, hole: false, zero: false },
      ]);
      // Longer than the 64 KiB maximum: BLOCK_STATUS is not bound by it.
      const whole = await walkExtents(device);
      assert.equal(whole.queries, 1);
      const log = readFileSync(path.join(server.dir, 'log'), 'utf8');
      assert.match(log, /Extents id=\d+ offset=0x1000 count=0x101000 req_one=0/);
    });
  });

  test('a server error fails the query with a typed IoError; the device stays usable', async (t) => {
    if (!requireTools(t, 'nbdkit')) return;
    await withExport((dir) => ['--filter=error', 'memory', '1M', 'error=EINVAL',
      'error-extents-rate=100%', `error-extents-file=${path.join(dir, 'fail')}`],
    async (device, server) => {
      execFileSync('touch', [path.join(server.dir, 'fail')]);
      const failed = await queryExtents(device, 8, 16);
      assert.ok(failed.error instanceof IoError);
      assert.equal(failed.error.errno, 'EINVAL');
      assert.equal(failed.error.syscall, 'NBD_CMD_BLOCK_STATUS');
      assert.equal(failed.error.sector, 8);
      assert.equal(failed.error.countSectors, 16);
      assert.ok(isDmIoError(failed.error.cause, 'DMIO_ERR_NBD_SERVER'));
      assert.deepEqual(failed.extents, []);
      execFileSync('rm', [path.join(server.dir, 'fail')]);
      const fine = await queryExtents(device, 8, 16);
      assert.deepEqual(fine.extents, [{ sector: 8, countSectors: 16, hole: true, zero: true }]);
      assert.equal(device.broken, false);
    });
  });

  test('queries of a closed device fail at once', async (t) => {
    if (!requireTools(t, 'nbdkit')) return;
    await withExport(['memory', '1M'], async (device) => {
      const invalid = await queryExtents(device, 0, 0);
      assert.equal(invalid.error?.errno, 'EINVAL');
      const pastEnd = await queryExtents(device, 2047, 2);
      assert.equal(pastEnd.error?.errno, 'EIO');
      const pending = queryExtents(device, 0, 2048);
      const closing = device.close();
      const closed = await queryExtents(device, 0, 8);
      assert.ok(isDmIoError(closed.error?.cause, 'DMIO_ERR_DEVICE_CLOSED'));
      assert.equal((await pending).error, null, 'close waits for the query in flight');
      await closing;
    });
  });
});

describe('extents without base:allocation', () => {
  test('nbdkit --no-sr: one data extent, nothing sent, and copies still work', async (t) => {
    if (!requireTools(t, 'nbdkit')) return;
    await withExport(['--no-sr', '--filter=log', 'data', '1 @1048576 2', 'size=4M',
      'logfile=/dev/null'], async (device) => {
      assert.equal(device.structuredReplies, false);
      assert.equal(device.blockStatus, false);
      const answer = await queryExtents(device, 5, 1000);
      assert.deepEqual(answer.extents, [{ sector: 5, countSectors: 1000, hole: false, zero: false }]);
      const kc = dmKcopydClientCreate();
      const dest = createRamDevice({ sizeBytes: 4 * MiB });
      const result = await dmKcopydCopy(kc, { device, sector: 0, count: device.sizeSectors },
        [{ device: dest, sector: 0, count: device.sizeSectors }], {});
      await dmKcopydClientDestroy(kc);
      assert.equal(result.readErr, false);
      assert.equal(result.writeErr, 0n);
      const copied = new Uint8Array(512);
      assert.equal(await submit(dest, request('read', 2048, 1, [copied])), null);
      assert.equal(copied[0], 2);
      await dest.close();
    });
  });
});

describe('extents against qemu-nbd', () => {
  test('context id 0, exact 4 KiB runs, agreeing with nbdinfo', async (t) => {
    if (!requireTools(t, 'qemu-nbd', 'qemu-img', 'qemu-io', 'nbdinfo')) return;
    const dir = makeTempDir();
    const image = path.join(dir, 'q.img');
    execFileSync('qemu-img', ['create', '-f', 'raw', image, '8M'], { stdio: 'ignore' });
    execFileSync('qemu-io', ['-f', 'raw', '-c', 'write 1M 64k', '-c', 'write 5000k 4k', image],
      { stdio: 'ignore' });
    const server = await startQemuNbd(['-f', 'raw', '--shared=4', '--persistent', image], { dir });
    try {
      const device = await openNbdDevice(server.uri);
      assert.equal(device.blockStatus, true);
      const runs = byteRuns((await walkExtents(device)).extents);
      await device.close();
      assert.deepEqual(runs, await nbdinfoMap(server.uri));
      assert.ok(runs.some((run) => run.offset === MiB && run.length === 64 * 1024 && run.type === 0));
    } finally {
      await server.stop();
    }
  });
});
