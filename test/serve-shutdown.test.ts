// SIGTERM while clients write to `dmio serve`: nbdcopy streams a file into one half of the
// export while dmio's own client writes numbered 64 KiB blocks into the other half and records
// which writes were acknowledged. After the signal the server must exit 0, nbdcopy must end
// (not hang), and every acknowledged block must be in the image file.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { dmIo, dmIoClientCreate, dmIoClientDestroy, openDevice } from '../src/index.js';
import { runTool, startDmioServe } from './helpers/dmio-serve.js';
import { makeTempDir, requireTools } from './helpers/nbdkit.js';

const MiB = 1024 * 1024;
const HALF_BYTES = 32 * MiB;
const BLOCK_BYTES = 64 * 1024;

function blockPattern(index: number): Buffer {
  const data = Buffer.alloc(BLOCK_BYTES, index % 251 + 1);
  data.writeUInt32BE(index, 0);
  return data;
}

test('SIGTERM while nbdcopy writes: everything acknowledged is on the device', async (t) => {
  if (!requireTools(t, 'nbdcopy')) return;
  const dir = makeTempDir('dmio-serve-term-');
  try {
    const image = path.join(dir, 'disk.img');
    writeFileSync(image, Buffer.alloc(2 * HALF_BYTES));
    const source = path.join(dir, 'source.img');
    const sourceBytes = randomBytes(HALF_BYTES);
    writeFileSync(source, sourceBytes);
    const served = await startDmioServe([image, '--socket', path.join(dir, 's.sock')]);
    const copying = runTool('nbdcopy', ['--connections=4', '--flush', '--request-size=262144',
      source, served.uri], 30_000);

    const device = await openDevice(served.uri, { nbd: { connections: 1 } });
    const client = dmIoClientCreate();
    const acknowledged: number[] = [];
    let stopped: Promise<number | null> | null = null;
    const writer = async (lane: number): Promise<void> => {
      for (let index = lane; index < HALF_BYTES / BLOCK_BYTES; index += 8) {
        const result = await dmIo({ op: 'write', mem: { type: 'vm', data: blockPattern(index) }, client },
          [{ device, sector: (HALF_BYTES + index * BLOCK_BYTES) / 512, count: BLOCK_BYTES / 512 }]);
        if (result.errorBits !== 0n) return;
        acknowledged.push(index);
        if (acknowledged.length === 40) stopped ??= served.stop('SIGTERM');
      }
    };
    await Promise.all(Array.from({ length: 8 }, (_, lane) => writer(lane)));
    assert.equal(await (stopped ?? served.stop('SIGTERM')), 0, served.stderr());
    await dmIoClientDestroy(client);
    await device.close();
    const copied = await copying;
    assert.notEqual(copied.status, null, 'nbdcopy ended');

    const bytes = readFileSync(image);
    assert.ok(acknowledged.length >= 40);
    for (const index of acknowledged) {
      const at = HALF_BYTES + index * BLOCK_BYTES;
      assert.ok(bytes.subarray(at, at + BLOCK_BYTES).equals(blockPattern(index)),
        `acknowledged block ${index} is on the device`);
    }
    if (copied.status === 0) {
      assert.ok(bytes.subarray(0, HALF_BYTES).equals(sourceBytes), 'a finished nbdcopy is whole');
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
