// The NBD server's BLOCK_STATUS, in process, over exported devices that report extents (a
// test device that tracks which 4 KiB pages were written, zeroed or discarded): nbdinfo --map
// and dmio's own client both see exactly the device's map after writes through the server;
// REQ_ONE gets one descriptor no longer than the request; byte ranges inside sectors are
// clipped; a device answering 3 extents at a time is asked again until the reply is full; more
// than 1024 runs give a 1024-descriptor prefix and clients walk on; a device without extents
// is all data; a device whose extents fail gets an ERROR chunk and the client an EIO.

import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createRamDevice } from '../src/index.js';
import { createNbdServer, type NbdServer } from '../src/server.js';
import { openNbdDevice } from '../src/nbd/open-nbd.js';
import type { NbdDevice } from '../src/nbd/nbd-device.js';
import {
  NBD_CMD_BLOCK_STATUS, NBD_CMD_FLAG_REQ_ONE, NBD_META_BASE_ALLOCATION, NBD_REPLY_FLAG_DONE,
  NBD_REPLY_TYPE_BLOCK_STATUS, NBD_REPLY_TYPE_ERROR,
} from '../src/nbd/protocol.js';
import type { RamDevice } from '../src/devices/ram-device.js';
import type { BlockDevice } from '../src/devices/block-device.js';
import { pattern, request, submit } from './helpers/device-io.js';
import { ExtentRamDevice, PAGE_SECTORS } from './helpers/extent-ram-device.js';
import {
  byteRuns, mergeRuns, nbdinfoMap, queryExtents, walkExtents, type ByteRun,
} from './helpers/nbd-extents.js';
import { makeTempDir, requireTools, unixUri } from './helpers/nbdkit.js';
import { RawClient } from './helpers/raw-nbd-client.js';

const MiB = 1024 * 1024;

/** The map a device holds, page by page, as merged byte runs. */
function deviceRuns(device: ExtentRamDevice): ByteRun[] {
  const runs: ByteRun[] = [];
  for (let sector = 0; sector < device.sizeSectors; sector += PAGE_SECTORS) {
    runs.push({ offset: sector * 512, length: PAGE_SECTORS * 512, type: device.pageState(sector) });
  }
  return mergeRuns(runs);
}

/** One BLOCK_STATUS over a raw connection: the status chunk's descriptors, or the error. */
async function rawBlockStatus(
  client: RawClient, offsetBytes: number, lengthBytes: number, flags = 0,
): Promise<{ contextId: number; descriptors: Array<[number, number]> } | { errorNumber: number }> {
  client.request(NBD_CMD_BLOCK_STATUS, BigInt(offsetBytes), lengthBytes, flags, 9n);
  const reply = await client.chunk();
  assert.equal(reply.cookie, 9n);
  assert.equal(reply.flags & NBD_REPLY_FLAG_DONE, NBD_REPLY_FLAG_DONE, 'one chunk, with DONE');
  if (reply.type === NBD_REPLY_TYPE_ERROR) return { errorNumber: reply.payload.readUInt32BE(0) };
  assert.equal(reply.type, NBD_REPLY_TYPE_BLOCK_STATUS);
  const descriptors: Array<[number, number]> = [];
  for (let at = 4; at < reply.payload.length; at += 8) {
    descriptors.push([reply.payload.readUInt32BE(at), reply.payload.readUInt32BE(at + 4)]);
  }
  return { contextId: reply.payload.readUInt32BE(0), descriptors };
}

/** Writes one page's worth of pattern at each page index through `device`. */
async function writePages(device: NbdDevice, pages: readonly number[]): Promise<void> {
  const errors = await Promise.all(pages.map((page) => submit(device,
    request('write', page * PAGE_SECTORS, PAGE_SECTORS, [pattern(page * 4096, 4096, 3)]))));
  assert.deepEqual(errors.filter((error) => error !== null), []);
}

/** `device` seen through a BlockDevice that has no `extents` (RAM devices have them). */
function withoutExtents(device: RamDevice): BlockDevice {
  return {
    name: device.name, kind: device.kind, sizeSectors: device.sizeSectors,
    readOnly: device.readOnly, limits: device.limits, canBlock: device.canBlock,
    get closed() { return device.closed; },
    submit: (request, done) => device.submit(request, done),
    submitSync: (request) => device.submitSync(request),
    close: () => device.close(),
  };
}

describe('NBD server: BLOCK_STATUS from device extents', () => {
  let dir = '';
  let socketPath = '';
  let server: NbdServer | null = null;
  const disk = new ExtentRamDevice({ sizeBytes: 64 * MiB, name: 'disk' });
  const short = new ExtentRamDevice({ sizeBytes: 8 * MiB, name: 'short', extentsPerAnswerMax: 3 });
  const many = new ExtentRamDevice({ sizeBytes: 16 * MiB, name: 'many' });
  const failing = new ExtentRamDevice({ sizeBytes: MiB, name: 'failing' });
  let plain: BlockDevice | null = null;
  const uri = (name: string): string => unixUri(socketPath, name);

  before(async () => {
    dir = makeTempDir('dmio-serve-status-');
    socketPath = path.join(dir, 's.sock');
    plain = withoutExtents(createRamDevice({ sizeBytes: 4 * MiB, name: 'plain' }));
    failing.failExtents = 'EIO';
    server = createNbdServer({ exports: [{ name: 'disk', device: disk },
      { name: 'short', device: short }, { name: 'many', device: many },
      { name: 'failing', device: failing }, { name: 'plain', device: plain }] });
    await server.listen({ socketPath });
  });

  after(async () => {
    await server?.close();
    await Promise.all([disk, short, many, failing].map((device) => device.close()));
    await plain?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('writes, write-zeroes and a discard through the server show in nbdinfo --map and dmio', async (t) => {
    if (!requireTools(t, 'nbdinfo')) return;
    const device = await openNbdDevice(uri('disk'));
    assert.equal(device.blockStatus, true);
    const before = await walkExtents(device);
    assert.deepEqual(byteRuns(before.extents), [{ offset: 0, length: 64 * MiB, type: 3 }]);
    const writes: Array<[number, number]> = [[0, 8], [2051, 2], [20480, 2048], [131064, 8]];
    for (const [sector, countSectors] of writes) {
      const data = pattern(sector * 512, countSectors * 512, 1);
      assert.equal(await submit(device, request('write', sector, countSectors, [data])), null);
    }
    assert.equal(await submit(device, request('write-zeroes', 40960, 1024)), null);
    assert.equal(await submit(device, request('discard', 21504, 512)), null);
    const expected = deviceRuns(disk);
    assert.deepEqual(expected.map((run) => run.type), [0, 3, 0, 3, 0, 3, 0, 3, 2, 3, 0]);
    const { extents, queries } = await walkExtents(device);
    assert.equal(queries, 1);
    assert.deepEqual(byteRuns(extents), expected);
    assert.deepEqual(await nbdinfoMap(uri('disk')), expected);
    await device.close();
  });

  test('REQ_ONE gets one descriptor, never longer than the request', async () => {
    const client = await RawClient.transmitting(socketPath, 'disk', [NBD_META_BASE_ALLOCATION]);
    const contextId = client.metaContexts.get(NBD_META_BASE_ALLOCATION);
    assert.ok(contextId !== undefined);
    const one = await rawBlockStatus(client, 0, 64 * MiB, NBD_CMD_FLAG_REQ_ONE);
    assert.deepEqual(one, { contextId, descriptors: [[4096, 0]] });
    const clipped = await rawBlockStatus(client, 4096, 100, NBD_CMD_FLAG_REQ_ONE);
    assert.deepEqual(clipped, { contextId, descriptors: [[100, 3]] });
    const all = await rawBlockStatus(client, 0, 64 * MiB);
    assert.ok('descriptors' in all && all.descriptors.length > 1);
    client.destroy();
  });

  test('a byte range inside sectors clips the first and last descriptor', async () => {
    const client = await RawClient.transmitting(socketPath, 'disk', [NBD_META_BASE_ALLOCATION]);
    // Page 0 is data, page 1 never written: 300 bytes of one and 700 of the other.
    const answer = await rawBlockStatus(client, 4096 - 300, 1000);
    assert.ok('descriptors' in answer);
    assert.deepEqual(answer.descriptors, [[300, 0], [700, 3]]);
    client.destroy();
  });

  test('a device answering 3 extents at a time is asked again until the reply is full', async (t) => {
    if (!requireTools(t, 'nbdinfo')) return;
    const device = await openNbdDevice(uri('short'));
    await writePages(device, Array.from({ length: 100 }, (_, index) => index * 2));
    const client = await RawClient.transmitting(socketPath, 'short', [NBD_META_BASE_ALLOCATION]);
    const queriesBefore = short.queries;
    const answer = await rawBlockStatus(client, 0, 8 * MiB);
    client.destroy();
    assert.equal(short.queries - queriesBefore, 16, 'SERVER_STATUS_QUERIES_MAX queries');
    assert.ok('descriptors' in answer);
    assert.equal(answer.descriptors.length, 16 * 3);
    const expected = deviceRuns(short);
    assert.deepEqual(answer.descriptors, expected.slice(0, 48).map((run) => [run.length, run.type]));
    const { extents } = await walkExtents(device);
    assert.deepEqual(byteRuns(extents), expected);
    assert.deepEqual(await nbdinfoMap(uri('short')), expected);
    await device.close();
  });

  test('2200 runs: a 1024-descriptor prefix, and both clients walk on to the end', async (t) => {
    if (!requireTools(t, 'nbdinfo')) return;
    const device = await openNbdDevice(uri('many'));
    await writePages(device, Array.from({ length: 1100 }, (_, index) => index * 2));
    const client = await RawClient.transmitting(socketPath, 'many', [NBD_META_BASE_ALLOCATION]);
    const answer = await rawBlockStatus(client, 0, 16 * MiB);
    client.destroy();
    assert.ok('descriptors' in answer);
    assert.equal(answer.descriptors.length, 1024);
    const expected = deviceRuns(many);
    assert.equal(expected.length, 2200);
    const walk = await walkExtents(device);
    assert.equal(walk.largestAnswer, 1024);
    assert.deepEqual(byteRuns(walk.extents), expected);
    assert.deepEqual(await nbdinfoMap(uri('many')), expected);
    await device.close();
  });

  test('a device without extents is all data', async (t) => {
    if (!requireTools(t, 'nbdinfo')) return;
    assert.deepEqual(await nbdinfoMap(uri('plain')), [{ offset: 0, length: 4 * MiB, type: 0 }]);
    const device = await openNbdDevice(uri('plain'));
    assert.equal(device.blockStatus, true);
    const answer = await queryExtents(device, 17, 100);
    assert.deepEqual(answer.extents, [{ sector: 17, countSectors: 100, hole: false, zero: false }]);
    await device.close();
  });

  test('failing extents: an ERROR chunk, an EIO for the client, and the export still works', async () => {
    const client = await RawClient.transmitting(socketPath, 'failing', [NBD_META_BASE_ALLOCATION]);
    assert.deepEqual(await rawBlockStatus(client, 0, 4096), { errorNumber: 5 });
    client.destroy();
    const device = await openNbdDevice(uri('failing'));
    const answer = await queryExtents(device, 0, 8);
    assert.equal(answer.error?.errno, 'EIO');
    assert.equal(answer.error?.syscall, 'NBD_CMD_BLOCK_STATUS');
    const data = new Uint8Array(4096);
    assert.equal(await submit(device, request('read', 0, 8, [data])), null);
    assert.equal(device.broken, false);
    await device.close();
  });
});
