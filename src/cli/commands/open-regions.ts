// Owns opening the source and destinations of a copy-like command in an order that writes
// nothing until every argument is known good: specs are checked first, the source is opened
// read-only and its range resolved, devices that need no creation are opened and range-checked,
// and only then are missing or short image files created with the size the command needs.
// Every opened device is pushed onto `opened` so the caller can close them whatever happens.

import type { BlockDevice } from '../../devices/block-device.js';
import { checkSpec, isFileSpec, openForCli, requireInside } from '../devices.js';
import { UsageError } from '../usage.js';

/** Where the source region starts and how long it is, when given. */
export interface SourceRange {
  readonly sector: number;
  readonly lengthSectors: number | null;
  readonly direct: boolean;
}

/** Checks every spec, opens the source read-only and resolves the copy length. */
export async function openSource(
  sourceSpec: string, destSpecs: readonly string[], range: SourceRange, opened: BlockDevice[],
): Promise<{ device: BlockDevice; countSectors: number }> {
  checkSpec(sourceSpec, false);
  for (const spec of destSpecs) checkSpec(spec, true);
  const device = await openForCli({ spec: sourceSpec, options: { readOnly: true,
    direct: range.direct } });
  opened.push(device);
  if (range.sector > device.sizeSectors) {
    throw new UsageError(`--source-sector ${range.sector} is past the end of ${sourceSpec} ` +
      `(${device.sizeSectors} sectors)`);
  }
  const countSectors = range.lengthSectors ?? device.sizeSectors - range.sector;
  requireInside(device, range.sector, countSectors, 'source');
  return { device, countSectors };
}

/**
 * Opens destinations for writing `countSectors` from `sector`: devices that exist and are not
 * regular files are opened and range-checked first; regular files (existing or not) are then
 * opened with `create`, which makes or extends them to the size needed, preallocating the added
 * range (every byte of it is about to be written).
 */
export async function openDestinations(
  specs: readonly string[], sector: number, countSectors: number, direct: boolean,
  opened: BlockDevice[],
): Promise<BlockDevice[]> {
  const devices = new Array<BlockDevice | undefined>(specs.length).fill(undefined);
  const files = specs.map((spec) => isFileSpec(spec));
  for (const [index, spec] of specs.entries()) {
    if (files[index]) continue;
    const device = await openForCli({ spec, options: { direct } });
    opened.push(device);
    requireInside(device, sector, countSectors, 'destination');
    if (device.readOnly) throw new UsageError(`destination ${spec} is read-only`);
    devices[index] = device;
  }
  const sizeBytes = (sector + countSectors) * 512;
  for (const [index, spec] of specs.entries()) {
    if (!files[index]) continue;
    const device = await openForCli({
      spec, options: { direct, create: { sizeBytes, preallocate: true } },
    });
    opened.push(device);
    requireInside(device, sector, countSectors, 'destination');
    devices[index] = device;
  }
  return devices.map((device) => {
    if (device === undefined) throw new Error('every destination was opened');
    return device;
  });
}
