// One dm-io write mirrored to a real image file, a RAM disk and an nbdkit export (plus a
// second export that fails every write), checked byte-exact: the export is read back by the
// real `nbdcopy` client into a file, the image file with plain `fs`, the RAM disk through dm-io.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import {
  dmIo, dmIoClientCreate, dmIoClientDestroy, openDevice, type BlockDevice, type IoError,
} from '../src/index.js';
import { pattern } from './helpers/device-io.js';
import { requireTools, startNbdkit } from './helpers/nbdkit.js';
import { tempDir } from './helpers/tmp.js';

const MiB = 1024 * 1024;

test('a mirrored write to file, RAM and NBD regions lands byte-exact on each', async (t) => {
  if (!requireTools(t, 'nbdkit', 'nbdcopy')) return;
  const directory = await tempDir(t);
  const good = await startNbdkit(['memory', '8M']);
  const bad = await startNbdkit(['--filter=error', 'memory', '8M', 'error=EIO',
    'error-pwrite-rate=100%']);
  t.after(() => Promise.all([good.stop(), bad.stop()]));
  const image = await openDevice(join(directory, 'leg.img'), { create: { sizeBytes: 8 * MiB } });
  const ram = await openDevice('mem:8M');
  const nbd = await openDevice(good.uri);
  const nbdBad = await openDevice(bad.uri);
  const devices: BlockDevice[] = [image, ram, nbd, nbdBad];
  const client = dmIoClientCreate();
  t.after(async () => {
    await dmIoClientDestroy(client);
    await Promise.all(devices.map((device) => device.close()));
  });

  // 3 MiB from sector 2048 (1 MiB in) on every leg: several requests per region.
  const data = Buffer.from(pattern(0, 3 * MiB, 7));
  const regions = devices.map((device) => ({ device, sector: 2048, count: data.length / 512 }));
  const result = await dmIo({ op: 'write', mem: { type: 'vm', data }, client,
    flags: { fua: true } }, regions);
  assert.equal(result.errorBits, 0b1000n, 'only the failing export has its bit');
  assert.equal((result.errors[3] as IoError).syscall, 'NBD_CMD_WRITE');

  const fromImage = await readFile(join(directory, 'leg.img'));
  assert.equal(fromImage.length, 8 * MiB);
  assert.ok(fromImage.subarray(MiB, 4 * MiB).equals(data), 'image file holds the data');
  assert.ok(fromImage.subarray(0, MiB).equals(Buffer.alloc(MiB)), 'nothing before the region');

  const copied = join(directory, 'export.raw');
  const nbdcopy = spawnSync('nbdcopy', [good.uri, copied], { encoding: 'utf8' });
  assert.equal(nbdcopy.status, 0, nbdcopy.stderr);
  const fromExport = await readFile(copied);
  assert.ok(fromExport.subarray(MiB, 4 * MiB).equals(data), 'nbdcopy reads the data back');
  assert.ok(fromExport.subarray(4 * MiB).equals(Buffer.alloc(4 * MiB)), 'nothing after it');

  const back = Buffer.alloc(data.length);
  const read = await dmIo({ op: 'read', mem: { type: 'vm', data: back }, client },
    [{ device: ram, sector: 2048, count: data.length / 512 }]);
  assert.equal(read.errorBits, 0n);
  assert.ok(back.equals(data), 'the RAM disk holds the data');
});
