// Owns what `dmio copy` does with holes (issue 17): the `--sparse`, `--allocated` and
// `--target-is-zero` flags turned into kcopyd's `sparse` option, with one hole action per
// destination. A destination that reads zeros where the copy goes (an image file this copy
// created, or extended from before the region's start; a new RAM disk; `null:`) keeps holes by
// writing nothing there; any other gets write-zeroes (ZERO_RANGE on a file, BLKZEROOUT on a
// block device, NBD WRITE_ZEROES), which kcopyd turns into plain zeros where a device has none.

import {
  isSparseBlockBytes, parseDeviceSpec, sectorsToBytes, type BlockDevice, type KcopydHoleAction,
  type KcopydSparseOptions,
} from '../index.js';
import { UsageError } from './exit-status.js';
import { parseBytes } from './usage.js';

/** The flags that choose what happens to holes. */
export interface SparseFlags {
  /** Zero-detection block size (`4K` default, `0` off). */
  sparse: string;
  allocated?: boolean;
  targetIsZero?: boolean;
}

/** An image file `openDestinations` created (`oldSizeBytes` null) or extended. */
export interface GrownFile {
  readonly index: number;
  readonly path: string;
  readonly oldSizeBytes: number | null;
}

/** The zero-detection block size `--sparse` asks for (0: holes are not kept at all). */
export function parseSparseBytes(flags: SparseFlags): number {
  const blockBytes = parseBytes(flags.sparse, '--sparse');
  if (!isSparseBlockBytes(blockBytes)) {
    throw new UsageError(`--sparse: ${blockBytes} bytes; expected 0 (off), or 512 to 1M: a ` +
      'multiple of 512 that divides 4K or a multiple of 4K');
  }
  if (flags.allocated === true && flags.targetIsZero === true) {
    throw new UsageError('--allocated and --target-is-zero contradict each other: give one');
  }
  return blockBytes;
}

/**
 * kcopyd's `sparse` option for a copy of `countSectors` from `destSector` to `dests` (specs
 * `destSpecs`), or undefined when holes are not kept (`--sparse=0`).
 */
export function sparseOption(
  flags: SparseFlags, destSpecs: readonly string[], dests: readonly BlockDevice[],
  destSector: number, grown: readonly GrownFile[],
): KcopydSparseOptions | undefined {
  const blockBytes = parseSparseBytes(flags);
  if (blockBytes === 0) return undefined;
  const holes = dests.map((device, index): KcopydHoleAction => {
    if (flags.allocated === true) return 'write';
    if (flags.targetIsZero === true) return 'skip';
    return readsZeros(destSpecs[index] ?? '', device, destSector, grown.find(
      (file) => file.index === index)) ? 'skip' : 'write-zeroes';
  });
  return { blockBytes, holes };
}

/** True when the destination already reads zeros over the region this copy writes. */
function readsZeros(
  spec: string, device: BlockDevice, destSector: number, grown: GrownFile | undefined,
): boolean {
  if (device.kind === 'null') return true;
  if (grown !== undefined) {
    return grown.oldSizeBytes === null || grown.oldSizeBytes <= sectorsToBytes(destSector);
  }
  try {
    // `mem:SIZE` is a new RAM disk every time it is opened: nothing was written to it yet.
    return parseDeviceSpec(spec).kind === 'mem';
  } catch {
    return false;
  }
}
