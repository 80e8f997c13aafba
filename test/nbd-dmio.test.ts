// dm-io requests whose regions mix RAM devices and NBD devices opened through `openDevice`:
// a mirrored write where one NBD region fails (only its bit set), per-region read-back, an
// unsupported write-zeroes on one NBD export, a pure flush across every kind, and a server
// killed between requests.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { dmIo } from '../src/core/dm-io.js';
import { dmIoClientCreate, dmIoClientDestroy } from '../src/core/client.js';
import type { BlockDevice } from '../src/devices/block-device.js';
import { openDevice } from '../src/open/open-device.js';
import { isDmIoError, type IoError } from '../src/errors.js';
import { pattern } from './helpers/device-io.js';
import { requireTools, startNbdkit, type NbdServer } from './helpers/nbdkit.js';

const MiB = 1024 * 1024;

async function readRegion(device: BlockDevice, sector: number, count: number): Promise<Buffer> {
  const client = dmIoClientCreate();
  const data = Buffer.alloc(count * 512, 0xee);
  const result = await dmIo({ op: 'read', mem: { type: 'kmem', data }, client },
    [{ device, sector, count }]);
  await dmIoClientDestroy(client);
  assert.equal(result.errorBits, 0n, String(result.errors[0]));
  return data;
}

async function withServers(
  argsList: ReadonlyArray<readonly string[]>,
  body: (servers: NbdServer[]) => Promise<void>,
): Promise<void> {
  const servers: NbdServer[] = [];
  try {
    for (const args of argsList) servers.push(await startNbdkit(args));
    await body(servers);
  } finally {
    await Promise.all(servers.map((server) => server.stop()));
  }
}

test('dmIo over RAM and NBD regions: per-region error bits, byte-exact read-back', async (t) => {
  if (!requireTools(t, 'nbdkit')) return;
  await withServers([
    ['memory', '16M'],
    ['--filter=error', 'memory', '16M', 'error=ENOSPC', 'error-pwrite-rate=100%'],
    ['--filter=nozero', 'memory', '16M', 'zeromode=none'],
  ], async ([good, failing, noZero]) => {
    assert.ok(good !== undefined && failing !== undefined && noZero !== undefined);
    const ram = await openDevice('mem:16M');
    const nbdGood = await openDevice(good.uri);
    const nbdFailing = await openDevice(failing.uri);
    const nbdNoZero = await openDevice(noZero.uri);
    assert.equal(nbdGood.kind, 'nbd');
    const client = dmIoClientCreate({ reservedPages: 512 });
    try {
      const data = Buffer.from(pattern(0, 2 * MiB, 42));
      const write = await dmIo({ op: 'write', mem: { type: 'kmem', data }, client, flags: { fua: true } }, [
        { device: ram, sector: 2048, count: 4096 },
        { device: nbdGood, sector: 0, count: 4096 },
        { device: nbdFailing, sector: 0, count: 4096 },
        { device: nbdNoZero, sector: 8192, count: 4096 },
      ]);
      assert.equal(write.errorBits, 1n << 2n);
      const failure = write.errors[2] as IoError;
      assert.equal(failure.errno, 'ENOSPC');
      assert.equal(failure.syscall, 'NBD_CMD_WRITE');
      assert.equal(failure.regionIndex, 2);
      assert.ok(data.equals(await readRegion(ram, 2048, 4096)));
      assert.ok(data.equals(await readRegion(nbdGood, 0, 4096)));
      assert.ok(data.equals(await readRegion(nbdNoZero, 8192, 4096)));

      const zero = await dmIo({ op: 'write-zeroes', client }, [
        { device: ram, sector: 2048, count: 8 },
        { device: nbdGood, sector: 0, count: 8 },
        { device: nbdNoZero, sector: 8192, count: 8 },
      ]);
      assert.equal(zero.errorBits, 1n << 2n, 'only the export without WRITE_ZEROES fails');
      assert.ok(isDmIoError(zero.errors[2], 'DMIO_ERR_NOT_SUPPORTED'));
      assert.ok((await readRegion(nbdGood, 0, 8)).equals(Buffer.alloc(4096)));

      const flush = await dmIo({ op: 'write', client, flags: { preflush: true },
        mem: { type: 'kmem', data: Buffer.alloc(0) } }, [
        { device: ram, sector: 0, count: 0 },
        { device: nbdGood, sector: 0, count: 0 },
        { device: nbdFailing, sector: 0, count: 0 },
      ]);
      assert.equal(flush.errorBits, 0n);

      await good.stop('SIGKILL');
      const afterKill = await dmIo({ op: 'write', mem: { type: 'kmem', data }, client }, [
        { device: ram, sector: 0, count: 4096 },
        { device: nbdGood, sector: 0, count: 4096 },
      ]);
      assert.equal(afterKill.errorBits, 1n << 1n);
      assert.equal((afterKill.errors[1] as IoError).errno, 'EIO');
    } finally {
      await dmIoClientDestroy(client);
      await Promise.all([ram, nbdGood, nbdFailing, nbdNoZero].map((device) => device.close()));
    }
  });
});
