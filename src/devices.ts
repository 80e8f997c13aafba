/**
 * The public entry `dmio/devices`: the kit for writing a `BlockDevice` of your own. It holds
 * the contract dm-io submits through (the interface, its request, flags, limits and
 * completion, and the optional extent query with its bound `EXTENTS_PER_QUERY_MAX`) and the
 * helpers a backend needs to keep the contract's rules: the bytes a request carries
 * (`segmentsBytes`), the check that fails a request past the end whole (`requestPastEnd`,
 * `pastEndError`), the `IoError` a failed request reports (`requestError`), sector units,
 * aligned buffers, and `isZeroRange` (is a range all zero: for answering extents or holes).
 * The rules every backend keeps are listed in
 * src/devices/block-device.ts and docs/design.md. Ready-made devices (files, block devices,
 * RAM, patterns, NBD, tables) come from the main entry, `dmio`.
 *
 * @example
 * ```ts
 * import { pastEndError, requestPastEnd, type BlockDevice } from 'dmio/devices';
 * ```
 *
 * @packageDocumentation
 */

export type {
  BlockDevice, DeviceLimits, DeviceRequest, DeviceDone, DeviceOp, DeviceKind, RequestFlags,
  DeviceExtent, ExtentsDone,
} from './devices/block-device.js';
export {
  requestPastEnd, segmentsBytes, EXTENTS_PER_QUERY_MAX,
} from './devices/block-device.js';
export { requestError, pastEndError } from './devices/request-error.js';
export { IoError, NotSupportedError } from './errors.js';
export type { IoErrorDetails } from './errors.js';
export { SECTOR_SIZE, SECTOR_SHIFT, PAGE_SIZE } from './constants.js';
export { sectorsToBytes, bytesToSectorsCeil, bytesToSectorsFloor } from './units.js';
export { allocAligned, isAlignedView } from './memory/aligned.js';
export { isZeroRange } from './memory/zeros.js';
