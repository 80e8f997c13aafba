// Table devices' extents: an answer comes from the segment holding the query's first sector and
// ends at that segment's end; `zero` is a hole reading zeros, `linear` is its device's extents
// shifted by its offset (a RAM disk, a real sparse file), a linear device without extents and
// every other target are data. Walking a whole table in queries keeps the contract; a closed
// table answers EBADF; close waits for a query in flight; an inner device's error names the
// table and keeps the errno.

import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import {
  createRamDevice, deviceExtents, openFileDevice, openTableText, type BlockDevice,
  type DeviceExtent, type RamDevice,
} from '../src/index.js';
import { KeptDevice } from './stacks-helpers.js';
import { deviceRequest } from './helpers/requests.js';
import { extentsOf, queryExtents, writeSparseFile } from './helpers/extents.js';
import { tempDir } from './helpers/tmp.js';

const KIB = 1024;

const data = (sector: number, countSectors: number): DeviceExtent =>
  ({ sector, countSectors, hole: false, zero: false });
const holeZero = (sector: number, countSectors: number): DeviceExtent =>
  ({ sector, countSectors, hole: true, zero: true });

/** Opens `ram` (a RAM disk, chunk 1 written), `kept` (no extents) and any path as a file. */
function opener(): { open: (spec: string) => Promise<BlockDevice>; ram: () => RamDevice } {
  let ramDevice: RamDevice | undefined;
  const open = async (spec: string): Promise<BlockDevice> => {
    if (spec === 'ram') {
      ramDevice = createRamDevice({ sizeBytes: 1024 * 512, name: 'ram' });
      const written = ramDevice.submitSync(deviceRequest('write', 128, 128,
        [new Uint8Array(64 * KIB).fill(1)]));
      assert.equal(written, null);
      return ramDevice;
    }
    if (spec === 'kept') return new KeptDevice(createRamDevice({ sizeBytes: 512 * 512 }));
    return openFileDevice(spec, { readOnly: true });
  };
  return { open, ram: () => ramDevice as RamDevice };
}

/** Every answer of a walk over the whole device, from sector 0. */
async function walk(device: BlockDevice): Promise<DeviceExtent[][]> {
  const answers: DeviceExtent[][] = [];
  let sector = 0;
  while (sector < device.sizeSectors) {
    const extents = await deviceExtents(device, sector, device.sizeSectors - sector);
    answers.push(extents);
    const last = extents[extents.length - 1] as DeviceExtent;
    sector = last.sector + last.countSectors;
  }
  return answers;
}

describe('table device extents', () => {
  test('each segment answers for itself: linear shifted, zero a hole, others data',
    async (t) => {
      const path = join(await tempDir(t), 'sparse.img');
      // File sectors 256-383 are data; the table maps file sector 128 onwards.
      writeSparseFile(path, 512 * KIB, [{ offsetBytes: 128 * KIB, lengthBytes: 64 * KIB }]);
      const { open } = opener();
      const table = await openTableText([
        '0 256 linear ram 64',
        '256 128 zero',
        '384 64 error',
        '448 64 linear kept 0',
        `512 512 linear ${path} 128`,
      ].join('\n'), open);
      t.after(() => table.close());
      // RAM sectors 64-319 through the table: 64-127 hole, 128-255 data, 256-319 hole.
      assert.deepEqual(await extentsOf(table, 0, table.sizeSectors),
        [holeZero(0, 64), data(64, 128), holeZero(192, 64)], 'stops at the segment end');
      assert.deepEqual(await extentsOf(table, 100, 20), [data(100, 20)]);
      assert.deepEqual(await extentsOf(table, 300, 700), [holeZero(300, 84)]);
      assert.deepEqual(await extentsOf(table, 400, 600), [data(400, 48)], 'error: data');
      assert.deepEqual(await extentsOf(table, 450, 10), [data(450, 10)], 'no extents: data');
      assert.deepEqual(await extentsOf(table, 512, 512),
        [holeZero(512, 128), data(640, 128), holeZero(768, 256)]);
      const answers = await walk(table);
      assert.deepEqual(answers.map((answer) => answer[0]?.sector), [0, 256, 384, 448, 512]);
      assert.deepEqual(answers.flat(), [holeZero(0, 64), data(64, 128), holeZero(192, 64),
        holeZero(256, 128), data(384, 64), data(448, 64), holeZero(512, 128), data(640, 128),
        holeZero(768, 256)]);
    });

  test('a closed table answers EBADF; close waits for a query in flight', async (t) => {
    const path = join(await tempDir(t), 'sparse.img');
    const runs = Array.from({ length: 200 }, (_, index) =>
      ({ offsetBytes: index * 128 * KIB, lengthBytes: 64 * KIB }));
    writeSparseFile(path, 200 * 128 * KIB, runs);
    const table = await openTableText(`0 51200 linear ${path} 0`, opener().open);
    const events: string[] = [];
    const query = queryExtents(table, 0, table.sizeSectors).then((answer) => {
      events.push('answered');
      return answer;
    });
    const closing = table.close().then(() => events.push('closed'));
    const [answer] = await Promise.all([query, closing]);
    assert.deepEqual(events, ['answered', 'closed']);
    assert.equal(answer.error, null);
    assert.equal(answer.extents.length, 400);
    const refused = await queryExtents(table, 0, 8);
    assert.equal(refused.error?.errno, 'EBADF');
    assert.equal(refused.error?.device, table.name);
    assert.deepEqual(refused.extents, []);
  });

  test('an inner device\'s error names the table and keeps the errno', async () => {
    const { open, ram } = opener();
    const table = await openTableText('0 512 linear ram 0', open);
    await ram().close();
    const { error, extents } = await queryExtents(table, 8, 16);
    assert.equal(error?.errno, 'EBADF');
    assert.equal(error?.device, table.name);
    assert.equal(error?.sector, 8);
    assert.equal((error?.cause as { device?: string } | undefined)?.device, 'ram');
    assert.deepEqual(extents, []);
    await table.close();
  });
});
