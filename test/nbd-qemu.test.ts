// NBD device against qemu-nbd serving a raw image: advertised block sizes, reads qemu splits
// into several data and hole chunks, multi-conn with --shared, and writes of every kind checked
// byte-exact in the image file itself, and qemu's error messages.

import assert from 'node:assert/strict';
import { closeSync, openSync, readFileSync, truncateSync, writeSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { connectNbd } from '../src/nbd/connect.js';
import type { CommandOutcome } from '../src/nbd/connection.js';
import { openNbdDevice } from '../src/nbd/open-nbd.js';
import { NBD_CMD_READ } from '../src/nbd/protocol.js';
import { newReplyCounters } from '../src/nbd/reply-parser.js';
import { parseNbdUri } from '../src/nbd/uri.js';
import { flushRequest, pattern, request, split, submit } from './helpers/device-io.js';
import { makeTempDir, requireTools, startQemuNbd, type NbdServer } from './helpers/nbdkit.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const IMAGE_BYTES = 64 * MiB;

/** A sparse raw image with data at [0, 8 KiB) and [12 KiB, 16 KiB) and at 5 MiB. */
function makeImage(dir: string): { image: string; model: Buffer } {
  const image = path.join(dir, 'disk.raw');
  truncateSync(openAndClose(image), IMAGE_BYTES);
  const model = Buffer.alloc(IMAGE_BYTES);
  const fd = openSync(image, 'r+');
  for (const [offset, lengthBytes] of [[0, 8 * KiB], [12 * KiB, 4 * KiB], [5 * MiB, 3 * MiB]] as const) {
    const data = Buffer.from(pattern(offset, lengthBytes, 77));
    writeSync(fd, data, 0, lengthBytes, offset);
    data.copy(model, offset);
  }
  closeSync(fd);
  return { image, model };
}

function openAndClose(file: string): string {
  closeSync(openSync(file, 'w'));
  return file;
}

async function withQemu(body: (server: NbdServer, image: string, model: Buffer) => Promise<void>): Promise<void> {
  const dir = makeTempDir();
  const { image, model } = makeImage(dir);
  const server = await startQemuNbd(['-f', 'raw', '-x', 'disk0', '--shared=4', '--persistent',
    '--discard=unmap', image], { dir, exportName: 'disk0' });
  try {
    await body(server, image, model);
  } finally {
    await server.stop();
  }
}

test('qemu-nbd: block sizes, multi-chunk reads with holes, byte-exact', async (t) => {
  if (!requireTools(t, 'qemu-nbd')) return;
  await withQemu(async (server, _image, model) => {
    const device = await openNbdDevice(server.uri);
    assert.deepEqual(device.blockSizes, { minimumBytes: 1, preferredBytes: 4096, maximumBytes: 32 * MiB });
    assert.equal(device.limits.logicalBlockBytes, 512);
    assert.equal(device.limits.maxSectorsPerRequest, 65536);
    assert.equal(device.sizeSectors, IMAGE_BYTES / 512);
    const small = new Uint8Array(16 * KiB).fill(0xee);
    assert.equal(await submit(device, request('read', 0, 32, split(small, 3000 + 72, 4096))), null);
    assert.ok(Buffer.from(small).equals(model.subarray(0, 16 * KiB)));
    assert.ok(device.replies.holeChunks >= 1, JSON.stringify(device.replies));
    assert.ok(device.replies.dataChunks >= 2, JSON.stringify(device.replies));
    const large = new Uint8Array(32 * MiB).fill(0xee);
    assert.equal(await submit(device, request('read', 0, 65536, [large])), null);
    assert.ok(Buffer.from(large).equals(model.subarray(0, 32 * MiB)));
    await device.close();
  });
});

test('qemu-nbd: writes, FUA, write-zeroes, discard, flush land in the image file', async (t) => {
  if (!requireTools(t, 'qemu-nbd')) return;
  await withQemu(async (server, image, model) => {
    const device = await openNbdDevice(server.uri, { connections: 2 });
    assert.equal(device.connectionCount, 2, 'qemu-nbd --shared=4 advertises CAN_MULTI_CONN');
    const jobs = [];
    for (let index = 0; index < 16; index += 1) {
      const offset = 20 * MiB + index * 256 * KiB;
      const data = pattern(offset, 256 * KiB, index);
      model.set(data, offset);
      jobs.push(submit(device, request('write', offset / 512, 512, split(data, 4096, 512),
        { fua: index % 2 === 0 })));
    }
    assert.deepEqual((await Promise.all(jobs)).filter((error) => error !== null), []);
    assert.equal(await submit(device, request('write-zeroes', (5 * MiB) / 512, 2048)), null);
    model.fill(0, 5 * MiB, 6 * MiB);
    assert.equal(await submit(device, request('discard', (6 * MiB) / 512, 2048)), null);
    model.fill(0, 6 * MiB, 7 * MiB);  // qemu punches the hole in the raw file: reads as zero
    assert.equal(await submit(device, flushRequest()), null);
    await device.close();
    assert.ok(readFileSync(image).equals(model), 'image file equals the model');
  });
});

test('qemu-nbd: a server error chunk carries qemu\'s message (raw connection, past EOF)', async (t) => {
  if (!requireTools(t, 'qemu-nbd')) return;
  await withQemu(async (server) => {
    const target = parseNbdUri(server.uri);
    const connection = await connectNbd(target, { uri: server.uri, connectTimeoutMs: 5000,
      requestTimeoutMs: 5000, structuredReplies: true, counters: newReplyCounters(),
      onDead: () => undefined });
    // The device refuses this locally; a raw connection lets the server judge it.
    const outcome = await new Promise<CommandOutcome>((resolve) => connection.send({
      type: NBD_CMD_READ, commandFlags: 0, offsetBytes: IMAGE_BYTES, lengthBytes: 4096,
      segments: [new Uint8Array(4096)], done: resolve }));
    assert.ok(outcome !== null && outcome.kind === 'server');
    assert.equal(outcome.error.errorNumber, 22);
    assert.match(outcome.error.message, /EOF/);
    await connection.disconnect();
  });
});
