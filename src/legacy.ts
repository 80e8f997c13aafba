/**
 * The public entry `dmio/legacy`: the kernel's dm-io calls with their original argument
 * order, for code ported from C. `dmIoGet`/`dmIoPut` size the one shared client that the six
 * calls use (the legacy interface's documented default instance); the calls throw
 * `DMIO_ERR_NO_LEGACY_POOL` before `dmIoGet`. New code uses `dmIo` with a client of its own,
 * from `dmio`.
 *
 * @example
 * ```ts
 * import { dmIoGet, dmIoSync, dmIoPut } from 'dmio/legacy';
 * ```
 *
 * @packageDocumentation
 */

export {
  dmIoGet, dmIoPut, dmIoSync, dmIoAsync, dmIoSyncBvec, dmIoAsyncBvec, dmIoSyncVm, dmIoAsyncVm,
} from './core/legacy.js';
export type { LegacyNotifyFn } from './core/legacy.js';
