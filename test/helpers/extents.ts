// Owns what the extent tests share: asking a device's `extents` directly while checking that
// the answer comes after the call returned, checking an answer against every rule of the
// contract, a reference model (per-sector kinds from known byte runs of data, merged), and
// sparse files with known data runs written through the filesystem.

import assert from 'node:assert/strict';
import { closeSync, ftruncateSync, openSync, writeSync } from 'node:fs';
import {
  type BlockDevice, type DeviceExtent, EXTENTS_PER_QUERY_MAX,
} from '../../src/devices/block-device.js';
import type { IoError } from '../../src/errors.js';

/** One byte run of data: `[offsetBytes, offsetBytes + lengthBytes)`. */
export interface DataRun {
  readonly offsetBytes: number;
  readonly lengthBytes: number;
}

/** What `extents` answered, having checked it came once and never inside the call. */
export function queryExtents(
  device: BlockDevice, sector: number, countSectors: number,
): Promise<{ error: IoError | null; extents: readonly DeviceExtent[] }> {
  const extents = device.extents;
  assert.ok(extents !== undefined, `${device.name} has extents`);
  return new Promise((resolve) => {
    let returned = false;
    let answers = 0;
    extents.call(device, sector, countSectors, (error, answer) => {
      answers += 1;
      assert.equal(answers, 1, 'done runs once');
      assert.ok(returned, 'done never runs inside extents');
      resolve({ error, extents: answer });
    });
    returned = true;
  });
}

/** The extents, failing the test on an error. */
export async function extentsOf(
  device: BlockDevice, sector: number, countSectors: number,
): Promise<readonly DeviceExtent[]> {
  const { error, extents } = await queryExtents(device, sector, countSectors);
  assert.equal(error, null);
  assertContract(extents, sector, countSectors);
  return extents;
}

/**
 * Checks every rule of `BlockDevice.extents` for an answer to `[sector, sector + count)`: in
 * order and contiguous from `sector`, at least the first sector, at most the range, at most
 * EXTENTS_PER_QUERY_MAX, each at least one sector, and no two neighbours of the same kind.
 */
export function assertContract(
  extents: readonly DeviceExtent[], sector: number, countSectors: number,
): void {
  assert.ok(extents.length >= 1, 'covers at least the first sector');
  assert.ok(extents.length <= EXTENTS_PER_QUERY_MAX, `${extents.length} extents`);
  let nextSector = sector;
  let previous: DeviceExtent | undefined;
  for (const extent of extents) {
    assert.equal(extent.sector, nextSector, 'contiguous and in order');
    assert.ok(Number.isSafeInteger(extent.countSectors) && extent.countSectors >= 1);
    if (previous !== undefined) {
      assert.ok(previous.hole !== extent.hole || previous.zero !== extent.zero,
        `neighbours at ${extent.sector} differ in kind`);
    }
    nextSector += extent.countSectors;
    previous = extent;
  }
  assert.ok(nextSector <= sector + countSectors, 'within the range');
}

/**
 * The reference answer: each sector of `[sector, sector + countSectors)` is data when any
 * byte of it lies in a data run, else a hole reading zeros; neighbours of one kind merged.
 * Unbounded (no EXTENTS_PER_QUERY_MAX): compare with a prefix when the device stops early.
 */
export function modelExtents(
  dataRuns: readonly DataRun[], sector: number, countSectors: number,
): DeviceExtent[] {
  const dataSectors = new Set<number>();
  for (const run of dataRuns) {
    if (run.lengthBytes === 0) continue;
    const last = Math.floor((run.offsetBytes + run.lengthBytes - 1) / 512);
    for (let index = Math.floor(run.offsetBytes / 512); index <= last; index += 1) {
      dataSectors.add(index);
    }
  }
  const extents: DeviceExtent[] = [];
  for (let index = sector; index < sector + countSectors; index += 1) {
    const hole = !dataSectors.has(index);
    const last = extents[extents.length - 1];
    if (last !== undefined && last.hole === hole) {
      extents[extents.length - 1] = { ...last, countSectors: last.countSectors + 1 };
    } else {
      extents.push({ sector: index, countSectors: 1, hole, zero: hole });
    }
  }
  return extents;
}

/** Creates a sparse file of `sizeBytes` at `path` holding non-zero bytes only in `dataRuns`. */
export function writeSparseFile(
  path: string, sizeBytes: number, dataRuns: readonly DataRun[],
): void {
  const fd = openSync(path, 'w');
  try {
    ftruncateSync(fd, sizeBytes);
    for (const run of dataRuns) {
      writeSync(fd, Buffer.alloc(run.lengthBytes, 0xa5), 0, run.lengthBytes, run.offsetBytes);
    }
  } finally {
    closeSync(fd);
  }
}
