/**
 * The public entry `dmio`: dm-io (clients, `dmIo`, `dmIoBlocking`, regions and memory), kcopyd,
 * the ready-made devices (files, block devices, RAM, patterns, NBD, tables) with `openDevice`,
 * and the typed errors. Four more entries hold what most users do not need: `dmio/server`
 * (the NBD server), `dmio/devices` (the kit for writing a `BlockDevice`), `dmio/legacy` (the
 * kernel's six dm-io calls with `dmIoGet`/`dmIoPut`) and `dmio/testing` (the fault device).
 * Nothing else of the package can be imported (package.json `exports`).
 *
 * @packageDocumentation
 */

export {
  SECTOR_SIZE, SECTOR_SHIFT, PAGE_SIZE, DM_IO_MAX_REGIONS, READ, WRITE, BIO_MAX_VECS,
  IOPRIO_DEFAULT,
} from './constants.js';
export { sectorsToBytes, bytesToSectorsCeil, bytesToSectorsFloor } from './units.js';
export { parseSize } from './size.js';
export {
  ERROR_CODES, DmIoError, InvalidArgTypeError, OutOfRangeError, InvalidRequestError, IoError,
  NotSupportedError, StateError, OpenError, NbdError, AbortedError, TableError, isDmIoError,
  errnoOf,
} from './errors.js';
export type { ErrorCode, IoErrorDetails } from './errors.js';

export type {
  DmIoMemory, PageListMemory, BvecMemory, VmMemory, KmemMemory, PageListNode, Bvec,
} from './memory/types.js';
export { allocAligned, isAlignedView } from './memory/aligned.js';

export { DmIoClient, dmIoClientCreate, dmIoClientDestroy } from './core/client.js';
export type { DmIoClientOptions } from './core/client.js';
export { dmIo, dmIoBlocking } from './core/dm-io.js';
export { failedRegions } from './core/io-tracker.js';
export type { DmIoResult } from './core/io-tracker.js';
export { DM_IO_OPS } from './core/request.js';
export type {
  DmIoRequest, DmIoRegion, DmIoFlags, DmIoNotify, DmIoOp,
} from './core/request.js';

export type {
  BlockDevice, DeviceLimits, DeviceRequest, DeviceDone, DeviceOp, DeviceKind, RequestFlags,
  DeviceExtent, ExtentsAnswer, ExtentsDone,
} from './devices/block-device.js';
export { EXTENTS_PER_QUERY_MAX } from './devices/block-device.js';
export { deviceExtents } from './devices/device-extents.js';
export { openDevice, parseDeviceSpec } from './open/open-device.js';
export { openFileDevice, FileDevice } from './devices/file-device.js';
export type {
  FileDeviceOptions, FileDeviceStats, SpecialMethod, ZeroMethod, DiscardMethod,
  WriteBehindStats,
} from './devices/file-device.js';
export {
  defaultFileEngine, IoUringEngine, ThreadpoolEngine, CopySlots, WRITE_BEHIND_BYTES_DEFAULT,
  SQPOLL_IDLE_MS_MAX,
} from './devices/file-device.js';
export type {
  FileEngine, FileEngineKind, FileTarget, StepCallback, IoUringEngineOptions, Step, StepResult,
} from './devices/file-device.js';
export type { QueueLimits } from './devices/file-limits.js';
export { openNbdDevice } from './nbd/open-nbd.js';
export type { NbdOpenOptions, NbdReconnectOptions } from './nbd/open-nbd.js';
export { NbdDevice } from './nbd/nbd-device.js';
export type { NbdBlockSizes } from './nbd/handshake.js';
export type { NbdReplyCounters } from './nbd/reply-parser.js';
export { parseNbdUri } from './nbd/uri.js';
export type { NbdUri, NbdAddress } from './nbd/uri.js';
export type { OpenDeviceOptions, DeviceSpec } from './open/open-device.js';
export { createRamDevice, RamDevice } from './devices/ram-device.js';
export type { RamDeviceOptions } from './devices/ram-device.js';
export {
  createZeroDevice, createRandomDevice, ZeroDevice, RandomDevice,
} from './devices/pattern-devices.js';
export type { PatternDeviceOptions } from './devices/pattern-devices.js';
export { createStreamSinkDevice, StreamSinkDevice } from './devices/stream-sink-device.js';
export type { StreamSinkDeviceOptions, SinkWritable } from './devices/stream-sink-device.js';

export {
  DM_KCOPYD_MAX_REGIONS, KCOPYD_SPLIT_COUNT, KCOPYD_SUB_JOB_SECTORS_DEFAULT,
  KCOPYD_SUB_JOB_SECTORS_MAX, KCOPYD_WRITE_ERR_ALL,
} from './kcopyd/constants.js';
export {
  dmKcopydClientCreate, dmKcopydClientDestroy, dmKcopydClientFlush,
} from './kcopyd/kcopyd.js';
export type { KcopydClientOptions } from './kcopyd/kcopyd.js';
export { KcopydClient } from './kcopyd/kcopyd-client.js';
export {
  dmKcopydCopy, dmKcopydZero, dmKcopydPrepareCallback, dmKcopydDoCallback,
} from './kcopyd/submit.js';
export type { KcopydCallbackToken } from './kcopyd/submit.js';
export type { KcopydJobOptions } from './kcopyd/validate-job.js';
export type { KcopydSparseOptions, KcopydHoleAction } from './kcopyd/sparse.js';
export { isSparseBlockBytes } from './kcopyd/sparse.js';
export { dmKcopydCopyStream, KCOPYD_STREAM_SEGMENT_BYTES } from './kcopyd/stream.js';
export type {
  KcopydStreamDest, KcopydStreamOptions, KcopydStreamResult,
} from './kcopyd/stream.js';
export type {
  KcopydResult, KcopydNotifyFn, KcopydProgressFn, KcopydChunkReadFn,
} from './kcopyd/job.js';
export { dmKcopydThrottleCreate, KcopydThrottle } from './kcopyd/throttle.js';
export type { KcopydThrottleOptions } from './kcopyd/throttle.js';
export type { KcopydPageSource } from './kcopyd/page-reserve.js';

export { openTable } from './open/open-table-text.js';
export type { OpenTableTextOptions } from './open/open-table-text.js';
export { openTableFile, openTableText, readTableDeviceArgs } from './stacks/open-table.js';
export type { OpenTableOptions, DeviceOpener } from './stacks/open-table.js';
export { TableDevice } from './stacks/table-device.js';
export { MirrorTarget } from './stacks/mirror-target.js';
export { WritecacheTarget } from './stacks/writecache-target.js';
export type { Target, TargetIo, TargetDone, TargetLimits } from './stacks/target.js';
export type { TableSegmentStatus } from './stacks/table-device.js';
export { formatTableReport } from './stacks/table-status.js';
export type { TableReport } from './stacks/table-status.js';
export { watchTableStatus } from './stacks/status-watch.js';
export type { TableStatusWatch, WatchedTable } from './stacks/status-watch.js';
