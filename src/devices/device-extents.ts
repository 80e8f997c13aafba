// Owns `deviceExtents`, the public way to ask one bounded extent query of any device: the
// arguments are checked at the boundary (nothing is queried when they are wrong), a device
// without `extents` is all data, and the answer is checked against the contract of
// `BlockDevice.extents` before it is handed back.

import assert from '../assert.js';
import { InvalidArgTypeError, type IoError, StateError } from '../errors.js';
import { validateIntegerInRange } from '../validate.js';
import {
  type BlockDevice, type DeviceExtent, EXTENTS_PER_QUERY_MAX,
} from './block-device.js';

/**
 * One bounded extent query: how `[sector, sector + countSectors)` of `device` is allocated,
 * as `BlockDevice.extents` answers it — in order, contiguous, from `sector`, covering at
 * least its first sector and at most the range, at most `EXTENTS_PER_QUERY_MAX` extents. To
 * map a longer range, ask again from where the answer ends. A device without `extents`
 * answers one data extent for the whole range.
 *
 * @param device - the device to ask.
 * @param sector - the first sector (512-byte units), inside the device.
 * @param countSectors - sectors to describe, at least 1, ending inside the device.
 * @returns the extents; rejects with the device's `IoError` (`DMIO_ERR_IO`) when the query
 * fails (an `lseek` error, a device closed while the query waited).
 * @throws InvalidArgTypeError (`DMIO_ERR_INVALID_ARG_TYPE`) when `device` is not a
 * BlockDevice or a number is not a number; OutOfRangeError (`DMIO_ERR_OUT_OF_RANGE`) for a
 * range that is empty or leaves the device; StateError (`DMIO_ERR_DEVICE_CLOSED`) for a
 * closed device. Thrown synchronously; nothing is queried.
 * @example
 * ```ts
 * const extents = await deviceExtents(device, 0, device.sizeSectors);
 * const holes = extents.filter((extent) => extent.hole);
 * ```
 */
export function deviceExtents(
  device: BlockDevice, sector: number, countSectors: number,
): Promise<DeviceExtent[]> {
  validateDevice(device);
  const first = validateIntegerInRange(sector, 'sector', 0, device.sizeSectors - 1);
  const count = validateIntegerInRange(countSectors, 'countSectors', 1,
    device.sizeSectors - first);
  if (device.closed) {
    throw new StateError('DMIO_ERR_DEVICE_CLOSED', device.name, 'the device is closed');
  }
  if (device.extents === undefined) {
    return Promise.resolve([{ sector: first, countSectors: count, hole: false, zero: false }]);
  }
  return new Promise((resolve, reject) => {
    let answered = false;
    (device.extents as NonNullable<BlockDevice['extents']>).call(device, first, count,
      (error: IoError | null, extents: readonly DeviceExtent[]) => {
        assert.ok(!answered, `${device.name}: extents answered twice`);
        answered = true;
        if (error !== null) {
          reject(error);
          return;
        }
        assertAnswer(device.name, first, count, extents);
        resolve([...extents]);
      });
  });
}

/** Throws unless `device` looks like a BlockDevice. */
function validateDevice(device: unknown): asserts device is BlockDevice {
  if (typeof device !== 'object' || device === null ||
      typeof (device as BlockDevice).submit !== 'function' ||
      typeof (device as BlockDevice).sizeSectors !== 'number') {
    throw new InvalidArgTypeError('device', 'a BlockDevice', device);
  }
}

/** Checks an answer against the contract of `BlockDevice.extents` (a programmer error). */
function assertAnswer(
  name: string, sector: number, countSectors: number, extents: readonly DeviceExtent[],
): void {
  assert.ok(extents.length >= 1, `${name}: an answer covers at least the first sector`);
  assert.ok(extents.length <= EXTENTS_PER_QUERY_MAX, `${name}: ${extents.length} extents`);
  let nextSector = sector;
  for (const extent of extents) {
    assert.equal(extent.sector, nextSector, `${name}: extents are contiguous from ${sector}`);
    assert.ok(Number.isSafeInteger(extent.countSectors) && extent.countSectors >= 1,
      `${name}: an extent of ${extent.countSectors} sectors`);
    nextSector += extent.countSectors;
  }
  assert.ok(nextSector <= sector + countSectors, `${name}: extents end past the range`);
}
