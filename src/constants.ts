// Owns every fixed number of the library: unit sizes, region and request limits, pool
// defaults. Each limit says why it exists; relationships are asserted when the module loads,
// the way TigerBeetle checks its constants at compile time.

import assert from './assert.js';

/** Bytes in one kibibyte: sizes are written `64 * KIB`, never as a bare product of 1024s. */
export const KIB = 1024;
/** Bytes in one mebibyte. */
export const MIB = 1024 * KIB;
/** Bytes in one gibibyte. */
export const GIB = 1024 * MIB;

/** Bytes in one sector. Regions always count in 512-byte sectors, whatever the device. */
export const SECTOR_SIZE = 512;
/** `log2(SECTOR_SIZE)`. */
export const SECTOR_SHIFT = 9;
/** Bytes in one page of a page list or of a client's pool. One page holds 8 sectors. */
export const PAGE_SIZE = 4096;
/** Sectors in one page. */
export const PAGE_SECTORS = PAGE_SIZE / SECTOR_SIZE;
/** Most regions one `dmIo` request may name: the width of the kernel's `unsigned long` bitset. */
export const DM_IO_MAX_REGIONS = 64;
/** Legacy direction constant for the six original calls: read. */
export const READ = 0;
/** Legacy direction constant for the six original calls: write. */
export const WRITE = 1;

/** Most segments in one device request, as the kernel's `BIO_MAX_VECS`. */
export const BIO_MAX_VECS = 256;
/** Most buffers one `readv`/`writev` call takes on Linux; the backend splits above it. */
export const IOV_MAX = 1024;

/** Default pages a client reserves for bounce buffers (1 MiB): one default kcopyd sub-job. */
export const CLIENT_RESERVED_PAGES_DEFAULT = MIB / PAGE_SIZE;
/** Upper bound on a client's reserve (256 MiB), so a typo cannot reserve all memory. */
export const CLIENT_RESERVED_PAGES_MAX = 256 * MIB / PAGE_SIZE;
/** Default device requests a client keeps in flight; 128 covers queue depth 32 with splits. */
export const CLIENT_INFLIGHT_DEFAULT = 128;
/** Upper bound on in-flight device requests per client. */
export const CLIENT_INFLIGHT_MAX = 4096;
/**
 * Default device requests a client lets wait beyond its in-flight limit: a 64 GiB request in
 * 1 MiB pieces, about 16 MiB of queue bookkeeping at most; more is refused, not queued.
 */
export const CLIENT_QUEUED_DEFAULT = 65536;
/** Upper bound on a client's waiting device requests, so a typo cannot unbound the queue. */
export const CLIENT_QUEUED_MAX = 2 ** 20;
/** Legacy `dm_io_get`: in-flight requests granted per page, as the kernel's `pages_to_ios`. */
export const LEGACY_IOS_PER_PAGE = 4;

/** Largest device request a file backend issues by default (1 MiB), like `max_sectors_kb`. */
export const FILE_MAX_SECTORS_PER_REQUEST = MIB / SECTOR_SIZE;
/** Largest discard or write-zeroes a file backend issues in one call (1 GiB). */
export const FILE_MAX_SPECIAL_SECTORS = GIB / SECTOR_SIZE;

/** Largest size a RAM device may be given (64 GiB): pages are allocated only when written. */
export const RAM_DEVICE_BYTES_MAX = 64 * GIB;
/** Granule in which a RAM device allocates and frees memory (64 KiB). */
export const RAM_CHUNK_BYTES = 64 * KIB;
/**
 * Most chunks one RAM extent query looks at (65536: 4 GiB of the device), so a query of a
 * large, mostly empty device does bounded work; the caller asks again from where it ended.
 */
export const RAM_EXTENT_CHUNKS_MAX = 65536;

/** Largest 16-bit I/O priority value; the kernel accepts only some below it (`isIoprio`). */
export const IOPRIO_MAX = 0xffff;
/** Where the class sits in an I/O priority value (`IOPRIO_CLASS_SHIFT`). */
export const IOPRIO_CLASS_SHIFT = 13;
/** Highest class the kernel knows: IDLE (NONE 0, RT 1, BE 2, IDLE 3). */
export const IOPRIO_CLASS_MAX = 3;
/** Levels of the RT and BE classes (`IOPRIO_NR_LEVELS`): 0 (highest) to 7. */
export const IOPRIO_LEVELS = 8;
/** The kernel's `IOPRIO_DEFAULT`: best-effort class, level 4. */
export const IOPRIO_DEFAULT = (2 << 13) | 4;

assert.equal(1 << SECTOR_SHIFT, SECTOR_SIZE, 'SECTOR_SHIFT must match SECTOR_SIZE');
assert.equal(PAGE_SIZE % SECTOR_SIZE, 0, 'a page must hold whole sectors');
assert.ok(DM_IO_MAX_REGIONS <= 64, 'error bits are a 64-bit bigint');
assert.ok(CLIENT_RESERVED_PAGES_DEFAULT <= CLIENT_RESERVED_PAGES_MAX);
assert.ok(CLIENT_INFLIGHT_DEFAULT <= CLIENT_INFLIGHT_MAX);
assert.ok(CLIENT_QUEUED_DEFAULT <= CLIENT_QUEUED_MAX);
assert.equal(RAM_CHUNK_BYTES % PAGE_SIZE, 0, 'RAM chunks hold whole pages');
assert.ok(BIO_MAX_VECS <= IOV_MAX, 'one request must fit one vectored call');
