// Owns the extent helpers of the block-status tests (NBD client and server): one query as a
// promise that checks the contract (done once, never synchronously, extents in order,
// contiguous, from the first sector, within the range and the per-query bound), a walk of a whole range query after
// query, and the same map from `nbdinfo --map --json`, both as merged byte runs so they can be
// compared with deepEqual.

import assert from 'node:assert/strict';
import type { IoError } from '../../src/errors.js';
import {
  EXTENTS_PER_QUERY_MAX, type BlockDevice, type DeviceExtent,
} from '../../src/devices/block-device.js';
import { runToolOk } from './dmio-serve.js';

/** A run of bytes with NBD's base:allocation type (bit 0 hole, bit 1 zero). */
export interface ByteRun {
  readonly offset: number;
  readonly length: number;
  readonly type: number;
}

/** What one query answered. */
export type QueryAnswer =
  | { readonly error: null; readonly extents: readonly DeviceExtent[] }
  | { readonly error: IoError; readonly extents: readonly DeviceExtent[] };

/**
 * One `device.extents` query; rejects when `done` runs synchronously, twice or not within
 * `timeoutMs`, or when a successful answer breaks the contract.
 */
export function queryExtents(
  device: BlockDevice, sector: number, countSectors: number, timeoutMs = 10_000,
): Promise<QueryAnswer> {
  const extentsOf = device.extents?.bind(device);
  assert.ok(extentsOf !== undefined, `${device.name} has no extents`);
  return new Promise((resolve, reject) => {
    let returned = false;
    let calls = 0;
    const timer = setTimeout(() => reject(new Error(`extents not answered in ${timeoutMs} ms`)),
      timeoutMs);
    extentsOf(sector, countSectors, (error, extents) => {
      calls += 1;
      clearTimeout(timer);
      if (!returned) return reject(new Error('done ran synchronously'));
      if (calls > 1) return reject(new Error('done ran twice'));
      if (error !== null) return resolve({ error, extents });
      try {
        checkContract(sector, countSectors, extents);
      } catch (failure) {
        return reject(failure);
      }
      return resolve({ error: null, extents });
    });
    returned = true;
  });
}

function checkContract(sector: number, countSectors: number, extents: readonly DeviceExtent[]): void {
  assert.ok(extents.length >= 1, 'at least one extent');
  assert.ok(extents.length <= EXTENTS_PER_QUERY_MAX, `${extents.length} extents in one answer`);
  let expected = sector;
  for (const extent of extents) {
    assert.equal(extent.sector, expected, 'extents are contiguous from the first sector');
    assert.ok(extent.countSectors >= 1);
    expected += extent.countSectors;
  }
  assert.ok(expected <= sector + countSectors, 'extents stay inside the range');
}

/** Every extent of `[sector, sector + countSectors)`, asking again where each answer ends. */
export async function walkExtents(
  device: BlockDevice, sector = 0, countSectors = device.sizeSectors,
): Promise<{ extents: DeviceExtent[]; queries: number; largestAnswer: number }> {
  const extents: DeviceExtent[] = [];
  let queries = 0;
  let largestAnswer = 0;
  let next = sector;
  const end = sector + countSectors;
  while (next < end) {
    const answer = await queryExtents(device, next, end - next);
    if (answer.error !== null) throw answer.error;
    queries += 1;
    largestAnswer = Math.max(largestAnswer, answer.extents.length);
    extents.push(...answer.extents);
    const last = answer.extents[answer.extents.length - 1];
    assert.ok(last !== undefined);
    next = last.sector + last.countSectors;
  }
  return { extents, queries, largestAnswer };
}

/** Sector extents as byte runs, neighbours of one type merged. */
export function byteRuns(extents: readonly DeviceExtent[]): ByteRun[] {
  return mergeRuns(extents.map((extent) => ({
    offset: extent.sector * 512,
    length: extent.countSectors * 512,
    type: (extent.hole ? 1 : 0) | (extent.zero ? 2 : 0),
  })));
}

/** `nbdinfo --map --json URI` as byte runs, neighbours of one type merged. */
export async function nbdinfoMap(uri: string): Promise<ByteRun[]> {
  const { stdout } = await runToolOk('nbdinfo', ['--map', '--json', uri]);
  const entries = JSON.parse(stdout) as Array<{ offset: number; length: number; type: number }>;
  return mergeRuns(entries.map(({ offset, length, type }) => ({ offset, length, type })));
}

/** Merges neighbours of one type; runs must be sorted and contiguous. */
export function mergeRuns(runs: readonly ByteRun[]): ByteRun[] {
  const merged: ByteRun[] = [];
  for (const run of runs) {
    const last = merged[merged.length - 1];
    if (last !== undefined) assert.equal(last.offset + last.length, run.offset, 'contiguous runs');
    if (last !== undefined && last.type === run.type) {
      merged[merged.length - 1] = { ...last, length: last.length + run.length };
    } else {
      merged.push({ ...run });
    }
  }
  return merged;
}
