// `dmio serve` answers a READ over long runs of zeros with OFFSET_HOLE chunks when the client
// negotiated structured replies: dmio's own client counts them and reads the right bytes,
// nbdcopy and qemu-img read the export back equal to the device, and a client without
// structured replies gets plain data.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createRamDevice } from '../src/index.js';
import { createNbdServer, type NbdServer } from '../src/server.js';
import { openNbdDevice } from '../src/nbd/open-nbd.js';
import { pattern, request, submit } from './helpers/device-io.js';
import { makeTempDir, requireTools, unixUri } from './helpers/nbdkit.js';

const MiB = 1024 * 1024;
const SIZE_BYTES = 8 * MiB;
/** Data at these byte offsets, 64 KiB each; the rest of the disk reads as zeros. */
const DATA_AT = [0, 3 * MiB, 3 * MiB + 512 * 1024, 7 * MiB];
const DATA_BYTES = 64 * 1024;

describe('dmio serve: READ replies with holes', () => {
  let dir = '';
  let server: NbdServer | null = null;
  const disk = createRamDevice({ sizeBytes: SIZE_BYTES, name: 'disk' });
  const expected = new Uint8Array(SIZE_BYTES);
  const uri = (): string => unixUri(path.join(dir, 's.sock'), 'disk');

  before(async () => {
    dir = makeTempDir('dmio-serve-holes-');
    for (const at of DATA_AT) {
      const data = pattern(at, DATA_BYTES, 5);
      expected.set(data, at);
      assert.equal(disk.submitSync(request('write', at / 512, DATA_BYTES / 512, [data])), null);
    }
    server = createNbdServer({ exports: [{ name: 'disk', device: disk }] });
    await server.listen({ socketPath: path.join(dir, 's.sock') });
  });

  after(async () => {
    await server?.close();
    await disk.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test("dmio's client gets holes and the right bytes; without structured replies, plain data", async () => {
    for (const structuredReplies of [true, false]) {
      const device = await openNbdDevice(uri(), { structuredReplies });
      try {
        const bytes = new Uint8Array(SIZE_BYTES).fill(0xff);
        for (let at = 0; at < SIZE_BYTES; at += MiB) {
          assert.equal(await submit(device, request('read', at / 512, MiB / 512,
            [bytes.subarray(at, at + MiB)])), null);
        }
        assert.ok(Buffer.from(bytes).equals(expected), `structuredReplies ${structuredReplies}`);
        if (structuredReplies) assert.ok(device.replies.holeChunks >= 8, JSON.stringify(device.replies));
        else assert.equal(device.replies.holeChunks, 0);
      } finally {
        await device.close();
      }
    }
  });

  test('nbdcopy and qemu-img read the export back equal to the device', async (t) => {
    if (!requireTools(t, 'nbdcopy', 'qemu-img')) return;
    const viaNbdcopy = path.join(dir, 'nbdcopy.img');
    const viaQemu = path.join(dir, 'qemu.img');
    // Asynchronously: the server runs in this process.
    const run = promisify(execFile);
    await run('nbdcopy', [uri(), viaNbdcopy]);
    await run('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', uri(), viaQemu]);
    assert.ok(readFileSync(viaNbdcopy).equals(Buffer.from(expected)));
    assert.ok(readFileSync(viaQemu).equals(Buffer.from(expected)));
  });
});
