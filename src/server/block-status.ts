// Owns the server's answer to NBD_CMD_BLOCK_STATUS in the `base:allocation` context: what the
// exported device's `extents` says of the byte range, as NBD descriptors (a byte length and
// the flags HOLE = bit 0, ZERO = bit 1). A device without `extents` is all data: one
// descriptor of the whole range with flags 0. The answer is an I/O program (io-program.ts)
// whose 'extents' steps either server driver runs.
//
// The answer is bounded: at most SERVER_STATUS_DESCRIPTORS_MAX descriptors from at most
// SERVER_STATUS_QUERIES_MAX device queries, each of at most EXTENTS_PER_QUERY_MAX extents. A
// range the device does not describe within that gets a prefix (at least one descriptor), which
// the protocol allows; REQ_ONE gets exactly one descriptor, never longer than the request.
//
// Byte ranges that start or end inside a sector ask the device about the whole sectors and
// clip the first and last descriptor. Example: 1000 bytes at 300 ask about sectors 0-2; extents
// [0,1) data and [1,8) hole+zero give descriptors of 212 bytes data and 788 bytes hole+zero.

import assert from '../assert.js';
import { SECTOR_SIZE } from '../constants.js';
import type { BlockDevice, DeviceExtent, ExtentsAnswer } from '../devices/block-device.js';
import { NBD_EIO, NBD_STATE_HOLE, NBD_STATE_ZERO } from '../nbd/protocol.js';
import { failureOf, type NbdFailure } from './errno-map.js';
import { yieldExtents, type IoProgram } from './io-program.js';
import { SERVER_STATUS_DESCRIPTORS_MAX, SERVER_STATUS_QUERIES_MAX } from './limits.js';
import type { Extent } from './wire.js';

/** The descriptors for a range, or the failure to send. */
export type StatusAnswer =
  | { readonly kind: 'extents'; readonly descriptors: readonly Extent[] }
  | { readonly kind: 'failure'; readonly failure: NbdFailure };

/**
 * Describes `[offsetBytes, offsetBytes + lengthBytes)` of `device` (inside it, length ≥ 1);
 * with `reqOne`, in one descriptor. Its 'extents' steps query the runner's export device, so
 * `device` must be that export's device. Never throws for a device error.
 */
export function* blockStatusProgram(
  device: BlockDevice, offsetBytes: number, lengthBytes: number, reqOne: boolean,
): IoProgram<StatusAnswer> {
  assert.ok(lengthBytes >= 1);
  const endBytes = offsetBytes + lengthBytes;
  assert.ok(endBytes <= device.sizeSectors * SECTOR_SIZE);
  if (device.extents === undefined) {
    return { kind: 'extents', descriptors: [{ lengthBytes, flags: 0 }] };
  }
  const descriptorsMax = reqOne ? 1 : SERVER_STATUS_DESCRIPTORS_MAX;
  const builder = new DescriptorList(offsetBytes, endBytes, descriptorsMax);
  for (let queries = 0; queries < SERVER_STATUS_QUERIES_MAX && !builder.done; queries += 1) {
    const sector = Math.floor(builder.positionBytes / SECTOR_SIZE);
    const endSector = Math.ceil(endBytes / SECTOR_SIZE);
    const result = yield* queryExtents(sector, endSector - sector);
    if (result.kind === 'failure') {
      // What is already described stands; the error is sent only when nothing is.
      if (builder.descriptors.length === 0) return result;
      break;
    }
    if (!builder.addAll(sector, result.extents)) {
      if (builder.descriptors.length === 0) return contractBroken(device, sector);
      break;
    }
    // With REQ_ONE a single answer is enough: the first extent is all the client wants.
    if (reqOne) break;
  }
  assert.ok(builder.descriptors.length >= 1);
  return { kind: 'extents', descriptors: builder.descriptors };
}

/** Descriptors being built from device extents, clipped to the byte range. */
class DescriptorList {
  readonly descriptors: Array<{ lengthBytes: number; flags: number }> = [];
  /** Byte where the next descriptor starts. */
  positionBytes: number;
  readonly #endBytes: number;
  readonly #descriptorsMax: number;
  #full = false;

  constructor(offsetBytes: number, endBytes: number, descriptorsMax: number) {
    this.positionBytes = offsetBytes;
    this.#endBytes = endBytes;
    this.#descriptorsMax = descriptorsMax;
  }

  /** True once the range is described or no further descriptor fits. */
  get done(): boolean {
    return this.#full || this.positionBytes >= this.#endBytes;
  }

  /**
   * Adds one answer to a query from `sector`. False, adding nothing further, when the answer
   * breaks the `extents` contract (empty, or not starting where asked, or with a gap).
   */
  addAll(sector: number, extents: readonly DeviceExtent[]): boolean {
    let expectedSector = sector;
    if (extents.length === 0) return false;
    for (const extent of extents) {
      if (extent.sector !== expectedSector || !(extent.countSectors >= 1)) return false;
      expectedSector += extent.countSectors;
      this.#add(extent);
      if (this.done) break;
    }
    return true;
  }

  #add(extent: DeviceExtent): void {
    const startBytes = Math.max(extent.sector * SECTOR_SIZE, this.positionBytes);
    const endBytes = Math.min((extent.sector + extent.countSectors) * SECTOR_SIZE, this.#endBytes);
    if (endBytes <= startBytes) return;
    assert.equal(startBytes, this.positionBytes, 'descriptors are contiguous');
    const flags = (extent.hole ? NBD_STATE_HOLE : 0) | (extent.zero ? NBD_STATE_ZERO : 0);
    const last = this.descriptors[this.descriptors.length - 1];
    if (last !== undefined && last.flags === flags) {
      last.lengthBytes += endBytes - startBytes;
    } else if (this.descriptors.length < this.#descriptorsMax) {
      this.descriptors.push({ lengthBytes: endBytes - startBytes, flags });
    } else {
      this.#full = true;
      return;
    }
    this.positionBytes = endBytes;
  }
}

type QueryResult =
  | { readonly kind: 'extents'; readonly extents: readonly DeviceExtent[] }
  | { readonly kind: 'failure'; readonly failure: NbdFailure };

/** One `extents` query; a device that throws fails the query, not the server. */
function* queryExtents(sector: number, countSectors: number): IoProgram<QueryResult> {
  let answer: ExtentsAnswer;
  try {
    answer = yield* yieldExtents(sector, countSectors);
  } catch (error) {
    return { kind: 'failure', failure: failureOf(error) };
  }
  return answer.error === null ? { kind: 'extents', extents: answer.extents } :
    { kind: 'failure', failure: failureOf(answer.error) };
}

function contractBroken(device: BlockDevice, sector: number): StatusAnswer {
  return { kind: 'failure', failure: { errorNumber: NBD_EIO,
    message: `device ${device.name} answered extents from sector ${sector} out of order` } };
}
