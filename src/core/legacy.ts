// Owns the original (2.6-era) dm-io interface: `dmIoGet`/`dmIoPut` size one shared pool, and
// six calls take positional arguments in the documented order. They are thin wrappers over
// `dmIo` on a client that this module keeps; that client is the only module-level state in
// the library, because the legacy interface is defined as global.

import { LEGACY_IOS_PER_PAGE, READ, WRITE } from '../constants.js';
import { InvalidArgTypeError, OutOfRangeError, StateError } from '../errors.js';
import type { Bvec, DmIoMemory, PageListNode } from '../memory/types.js';
import { DmIoClient, dmIoClientCreate } from './client.js';
import { dmIo } from './dm-io.js';
import type { DmIoRegion } from './request.js';
import { validateFunction, validateIntegerInRange } from '../validate.js';

/** The legacy notify callback: `fn(errorBits, context)`. */
export type LegacyNotifyFn<C> = (errorBits: bigint, context: C) => void;

/** Pages granted by `dmIoGet` and not yet returned by `dmIoPut`. */
let legacyPages = 0;
/** The client the six calls use; replaced when the pool is resized. */
let legacyClient: DmIoClient | null = null;

/**
 * Grows the shared legacy pool by `numPages` pages (and `4 × numPages` in-flight requests).
 * Call it before the six legacy calls, with roughly the pages you expect to do I/O on at once.
 *
 * @throws OutOfRangeError for a page count outside 1 to 65536.
 */
export function dmIoGet(numPages: number): void {
  const pages = validateIntegerInRange(numPages, 'numPages', 1, 65536);
  resize(legacyPages + pages);
}

/**
 * Shrinks the shared legacy pool by `numPages`, pairing an earlier `dmIoGet`. At 0 the pool is
 * released (once its requests have completed).
 *
 * @throws OutOfRangeError when more pages are put than were got.
 */
export function dmIoPut(numPages: number): void {
  const pages = validateIntegerInRange(numPages, 'numPages', 1, 65536);
  if (pages > legacyPages) {
    throw new OutOfRangeError('numPages', `at most the ${legacyPages} pages got`, numPages);
  }
  resize(legacyPages - pages);
}

function resize(pages: number): void {
  const previous = legacyClient;
  legacyPages = pages;
  legacyClient = pages === 0 ? null : dmIoClientCreate({
    reservedPages: Math.min(pages, 65536),
    inflightMax: Math.min(pages * LEGACY_IOS_PER_PAGE, 4096),
  });
  if (previous !== null) void previous.destroy();
}

function client(): DmIoClient {
  if (legacyClient === null) {
    throw new StateError('DMIO_ERR_NO_LEGACY_POOL', 'legacy pool',
      'call dmIoGet(numPages) before the legacy dm-io calls');
  }
  return legacyClient;
}

function direction(rw: unknown): 'read' | 'write' {
  if (rw === READ) return 'read';
  if (rw === WRITE) return 'write';
  if (typeof rw !== 'number') throw new InvalidArgTypeError('rw', 'READ (0) or WRITE (1)', rw);
  throw new OutOfRangeError('rw', 'READ (0) or WRITE (1)', rw);
}

function regionsOf(numRegions: unknown, where: unknown): DmIoRegion[] {
  if (!Array.isArray(where)) throw new InvalidArgTypeError('where', 'an array of regions', where);
  const count = validateIntegerInRange(numRegions, 'numRegions', 0, where.length);
  return where.slice(0, count) as DmIoRegion[];
}

/** Validates synchronously (argument errors throw), then resolves to the error bitset. */
function syncCall(
  numRegions: number, where: readonly DmIoRegion[], rw: number, mem: DmIoMemory,
): Promise<bigint> {
  const request = { op: direction(rw), mem, client: client() };
  return dmIo(request, regionsOf(numRegions, where)).then((result) => result.errorBits);
}

function asyncCall<C>(
  numRegions: number, where: readonly DmIoRegion[], rw: number, mem: DmIoMemory,
  fn: LegacyNotifyFn<C>, context: C,
): void {
  const notifyFn = validateFunction<LegacyNotifyFn<C>>(fn, 'fn');
  dmIo({
    op: direction(rw), mem, client: client(),
    notify: { fn: (errorBits: bigint, ctx: C) => notifyFn(errorBits, ctx), context },
  }, regionsOf(numRegions, where));
}

/**
 * Legacy synchronous I/O from a page list starting `offset` bytes into its first page.
 * Resolves to the error bitset once every region completed.
 */
export function dmIoSync(
  numRegions: number, where: readonly DmIoRegion[], rw: number, pageList: PageListNode,
  offset: number,
): Promise<bigint> {
  return syncCall(numRegions, where, rw, { type: 'page-list', list: pageList, offset });
}

/** Legacy asynchronous I/O from a page list; `fn(errorBits, context)` runs once. */
export function dmIoAsync<C>(
  numRegions: number, where: readonly DmIoRegion[], rw: number, pageList: PageListNode,
  offset: number, fn: LegacyNotifyFn<C>, context: C,
): void {
  asyncCall(numRegions, where, rw, { type: 'page-list', list: pageList, offset }, fn, context);
}

/** Legacy synchronous I/O from an array of bio vectors. Resolves to the error bitset. */
export function dmIoSyncBvec(
  numRegions: number, where: readonly DmIoRegion[], rw: number, bvec: readonly Bvec[],
): Promise<bigint> {
  return syncCall(numRegions, where, rw, { type: 'bvec', bvecs: bvec });
}

/** Legacy asynchronous I/O from an array of bio vectors; `fn(errorBits, context)` runs once. */
export function dmIoAsyncBvec<C>(
  numRegions: number, where: readonly DmIoRegion[], rw: number, bvec: readonly Bvec[],
  fn: LegacyNotifyFn<C>, context: C,
): void {
  asyncCall(numRegions, where, rw, { type: 'bvec', bvecs: bvec }, fn, context);
}

/** Legacy synchronous I/O from one contiguous buffer. Resolves to the error bitset. */
export function dmIoSyncVm(
  numRegions: number, where: readonly DmIoRegion[], rw: number, data: Uint8Array,
): Promise<bigint> {
  return syncCall(numRegions, where, rw, { type: 'vm', data });
}

/** Legacy asynchronous I/O from one contiguous buffer; `fn(errorBits, context)` runs once. */
export function dmIoAsyncVm<C>(
  numRegions: number, where: readonly DmIoRegion[], rw: number, data: Uint8Array,
  fn: LegacyNotifyFn<C>, context: C,
): void {
  asyncCall(numRegions, where, rw, { type: 'vm', data }, fn, context);
}
