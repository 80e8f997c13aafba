// Owns the original (2.6-era) dm-io interface: `dmIoGet`/`dmIoPut` size one shared pool, and
// six calls take positional arguments in the documented order. They are thin wrappers over
// `dmIo` on the client of a `LegacyPool`. The interface is global by definition (the kernel's
// dm_io_get/dm_io_put size one pool for every caller), so one default instance,
// `defaultLegacyPool`, is the only module-level state here; everything else is per call.
import {
  CLIENT_INFLIGHT_MAX, CLIENT_RESERVED_PAGES_MAX, LEGACY_IOS_PER_PAGE, READ, WRITE,
} from '../constants.js';
import { InvalidArgTypeError, OutOfRangeError, StateError } from '../errors.js';
import type { Bvec, DmIoMemory, PageListNode } from '../memory/types.js';
import { DmIoClient, dmIoClientCreate } from './client.js';
import { dmIo } from './dm-io.js';
import type { DmIoRegion } from './request.js';
import { validateFunction, validateIntegerInRange } from '../validate.js';

/** The legacy notify callback: `fn(errorBits, context)`. */
export type LegacyNotifyFn<C> = (errorBits: bigint, context: C) => void;

/** Most pages the legacy pool grows to, as a client's reserve (`CLIENT_RESERVED_PAGES_MAX`). */
const LEGACY_PAGES_MAX = CLIENT_RESERVED_PAGES_MAX;

/**
 * The pages granted by `dmIoGet` and not yet returned by `dmIoPut`, and the client sized from
 * them (replaced on every resize; the old one is destroyed once its requests complete).
 */
class LegacyPool {
  #pages = 0;
  #client: DmIoClient | null = null;

  /** Grows the pool by `pages`. */
  get(pages: number): void {
    this.#resize(this.#pages + pages);
  }

  /** Shrinks the pool by `pages`; throws when more are put than were got. */
  put(pages: number, argument: unknown): void {
    if (pages > this.#pages) {
      throw new OutOfRangeError('numPages', `at most the ${this.#pages} pages got`, argument);
    }
    this.#resize(this.#pages - pages);
  }

  /** The client the legacy calls use; throws `DMIO_ERR_NO_LEGACY_POOL` before `dmIoGet`. */
  client(): DmIoClient {
    if (this.#client === null) {
      throw new StateError('DMIO_ERR_NO_LEGACY_POOL', 'legacy pool',
        'call dmIoGet(numPages) before the legacy dm-io calls');
    }
    return this.#client;
  }

  #resize(pages: number): void {
    const previous = this.#client;
    this.#pages = pages;
    this.#client = pages === 0 ? null : dmIoClientCreate({
      reservedPages: Math.min(pages, LEGACY_PAGES_MAX),
      inflightMax: Math.min(pages * LEGACY_IOS_PER_PAGE, CLIENT_INFLIGHT_MAX),
    });
    if (previous !== null) void previous.destroy();
  }
}

/** The one pool the six legacy calls share: the interface is global by definition. */
const defaultLegacyPool = new LegacyPool();

/**
 * Grows the shared legacy pool by `numPages` pages (and `4 × numPages` in-flight requests).
 * Call it before the six legacy calls, with roughly the pages you expect to do I/O on at once.
 *
 * @throws OutOfRangeError for a page count outside 1 to 65536.
 */
export function dmIoGet(numPages: number): void {
  defaultLegacyPool.get(validateIntegerInRange(numPages, 'numPages', 1, LEGACY_PAGES_MAX));
}

/**
 * Shrinks the shared legacy pool by `numPages`, pairing an earlier `dmIoGet`. At 0 the pool is
 * released (once its requests have completed).
 *
 * @throws OutOfRangeError when more pages are put than were got.
 */
export function dmIoPut(numPages: number): void {
  defaultLegacyPool.put(validateIntegerInRange(numPages, 'numPages', 1, LEGACY_PAGES_MAX),
    numPages);
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
  const request = { op: direction(rw), mem, client: defaultLegacyPool.client() };
  return dmIo(request, regionsOf(numRegions, where)).then((result) => result.errorBits);
}

function asyncCall<C>(
  numRegions: number, where: readonly DmIoRegion[], rw: number, mem: DmIoMemory,
  fn: LegacyNotifyFn<C>, context: C,
): void {
  const notifyFn = validateFunction<LegacyNotifyFn<C>>(fn, 'fn');
  dmIo({
    op: direction(rw), mem, client: defaultLegacyPool.client(),
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
