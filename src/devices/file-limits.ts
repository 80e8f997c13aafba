// Owns what a local device can take in one request: it reads the block layer's queue limits
// from sysfs (`/sys/dev/block/MAJ:MIN/queue/`) and the block sizes from ioctls, and turns them
// into `DeviceLimits` for a block device or for a regular file. A regular file goes through
// the page cache (or, with O_DIRECT, through its filesystem's device), so most of its limits
// are the library's own defaults; only its block size and memory alignment under O_DIRECT come
// from the device below it. Missing sysfs files are normal (tmpfs, overlayfs, old kernels) and
// give `undefined`, never an error. The sysfs files are read synchronously: the kernel makes
// each from memory (no device I/O), and eight promise reads cost about 5 ms of thread-pool
// round trips per open against well under 1 ms this way.

import { readFileSync } from 'node:fs';
import {
  BIO_MAX_VECS, FILE_MAX_SECTORS_PER_REQUEST, FILE_MAX_SPECIAL_SECTORS, PAGE_SIZE, SECTOR_SIZE,
} from '../constants.js';
import { alignDown, bytesToSectorsExact, bytesToSectorsFloor } from '../units.js';
import type { DeviceLimits } from './block-device.js';

/**
 * Most sectors one read or write to a block device may carry (4 MiB), whatever the device's
 * `max_sectors_kb` says: larger requests only hold a threadpool thread longer, and the kernel
 * splits them again anyway.
 */
export const BLOCK_MAX_SECTORS_PER_REQUEST = 8192;

/** Queue limits as sysfs reports them; a field is undefined when its file is missing. */
export interface QueueLimits {
  /** `/sys/dev/block/MAJ:MIN/queue` that was read. */
  readonly queuePath: string;
  /** `logical_block_size`. */
  readonly logicalBlockBytes: number | undefined;
  /** `physical_block_size`. */
  readonly physicalBlockBytes: number | undefined;
  /** `max_sectors_kb`, in KiB. */
  readonly maxSectorsKib: number | undefined;
  /** `max_segments`. */
  readonly maxSegments: number | undefined;
  /** `discard_max_bytes`; 0 means the device cannot discard. */
  readonly discardMaxBytes: number | undefined;
  /** `write_zeroes_max_bytes`; 0 means no offloaded zeroing (BLKZEROOUT then writes zeros). */
  readonly writeZeroesMaxBytes: number | undefined;
  /** `dma_alignment` + 1: the memory alignment O_DIRECT needs. */
  readonly dmaAlignmentBytes: number | undefined;
}

/** Splits a Linux `dev_t` into major and minor numbers (glibc's `gnu_dev_major/minor`). */
export function deviceNumberParts(deviceNumber: bigint): { major: number; minor: number } {
  const major = ((deviceNumber >> 8n) & 0xfffn) | ((deviceNumber >> 32n) & ~0xfffn);
  const minor = (deviceNumber & 0xffn) | ((deviceNumber >> 12n) & ~0xffn);
  return { major: Number(major), minor: Number(minor) };
}

function readSysfsNumber(path: string): number | undefined {
  try {
    const text = readFileSync(path, 'utf8').trim();
    const value = Number(text);
    return /^\d+$/.test(text) && Number.isSafeInteger(value) ? value : undefined;
  } catch {
    return undefined;
  }
}

function findQueuePath(major: number, minor: number): string | undefined {
  const base = `/sys/dev/block/${major}:${minor}`;
  // A partition has no queue of its own; its disk's queue is one directory up.
  for (const candidate of [`${base}/queue`, `${base}/../queue`]) {
    if (readSysfsNumber(`${candidate}/logical_block_size`) !== undefined) return candidate;
  }
  return undefined;
}

/**
 * Reads the sysfs queue limits of the block device numbered `deviceNumber` (a `st_rdev` or
 * `st_dev`); undefined when the number has no queue (tmpfs, overlayfs, major 0).
 */
export function readQueueLimits(deviceNumber: bigint): QueueLimits | undefined {
  const { major, minor } = deviceNumberParts(deviceNumber);
  if (major === 0) return undefined;
  const queuePath = findQueuePath(major, minor);
  if (queuePath === undefined) return undefined;
  const read = (name: string): number | undefined => readSysfsNumber(`${queuePath}/${name}`);
  const dmaAlignment = read('dma_alignment');
  return {
    queuePath,
    logicalBlockBytes: read('logical_block_size'),
    physicalBlockBytes: read('physical_block_size'),
    maxSectorsKib: read('max_sectors_kb'),
    maxSegments: read('max_segments'),
    discardMaxBytes: read('discard_max_bytes'),
    writeZeroesMaxBytes: read('write_zeroes_max_bytes'),
    dmaAlignmentBytes: dmaAlignment === undefined ? undefined : dmaAlignment + 1,
  };
}

/** Block sizes a block device reported through BLKSSZGET and BLKPBSZGET. */
export interface BlockSizes {
  /** Logical block size in bytes. */
  readonly logicalBlockBytes: number;
  /** Physical block size in bytes. */
  readonly physicalBlockBytes: number;
}

/** O_DIRECT's memory alignment: the DMA alignment, never below the logical block. */
function directAlignmentBytes(queue: QueueLimits | undefined, logicalBlockBytes: number): number {
  const dmaAlignmentBytes = queue?.dmaAlignmentBytes;
  if (dmaAlignmentBytes === undefined) return Math.max(PAGE_SIZE, logicalBlockBytes);
  return Math.max(dmaAlignmentBytes, logicalBlockBytes);
}

/** Special-op sector limit: capped, whole logical blocks, 0 stays 0. */
function specialSectors(maxBytes: number | undefined, logicalSectors: number): number {
  const maxSectors = Math.min(bytesToSectorsFloor(maxBytes ?? Infinity), FILE_MAX_SPECIAL_SECTORS);
  return alignDown(maxSectors, logicalSectors);
}

/** Limits of a block device from its ioctls and sysfs queue. */
export function blockDeviceLimits(
  sizes: BlockSizes, queue: QueueLimits | undefined, direct: boolean,
): DeviceLimits {
  const logicalSectors = bytesToSectorsExact(sizes.logicalBlockBytes);
  const queueSectors = (queue?.maxSectorsKib ?? BLOCK_MAX_SECTORS_PER_REQUEST) * 2;
  const maxSectorsPerRequest = Math.max(logicalSectors,
    alignDown(Math.min(queueSectors, BLOCK_MAX_SECTORS_PER_REQUEST), logicalSectors));
  return Object.freeze({
    logicalBlockBytes: sizes.logicalBlockBytes,
    physicalBlockBytes: Math.max(sizes.physicalBlockBytes, sizes.logicalBlockBytes),
    maxSectorsPerRequest,
    maxSegmentsPerRequest: Math.max(1, Math.min(queue?.maxSegments ?? BIO_MAX_VECS, BIO_MAX_VECS)),
    maxDiscardSectors: specialSectors(queue?.discardMaxBytes, logicalSectors),
    // BLKZEROOUT writes zeros itself when the device has no zeroing command, and the backend
    // falls back to writing zeros when BLKZEROOUT is refused: every block device can do it.
    maxWriteZeroesSectors: specialSectors(undefined, logicalSectors),
    memoryAlignmentBytes: direct ? directAlignmentBytes(queue, sizes.logicalBlockBytes) : 0,
    flush: true,
    fua: true,
  });
}

/**
 * Limits of a regular file; `queue` is the queue of the device holding the file, when known.
 * Without O_DIRECT the page cache takes any 512-byte-aligned request; with it, the file's
 * device decides the block size and memory alignment.
 */
export function regularFileLimits(queue: QueueLimits | undefined, direct: boolean): DeviceLimits {
  const logicalBlockBytes = direct ? (queue?.logicalBlockBytes ?? SECTOR_SIZE) : SECTOR_SIZE;
  const logicalSectors = bytesToSectorsExact(logicalBlockBytes);
  return Object.freeze({
    logicalBlockBytes,
    physicalBlockBytes: Math.max(logicalBlockBytes, queue?.physicalBlockBytes ?? SECTOR_SIZE),
    maxSectorsPerRequest: alignDown(FILE_MAX_SECTORS_PER_REQUEST, logicalSectors),
    maxSegmentsPerRequest: BIO_MAX_VECS,
    maxDiscardSectors: specialSectors(undefined, logicalSectors),
    maxWriteZeroesSectors: specialSectors(undefined, logicalSectors),
    memoryAlignmentBytes: direct ? directAlignmentBytes(queue, logicalBlockBytes) : 0,
    flush: true,
    fua: true,
  });
}

/** The same limits with discard switched off, after the device refused a discard. */
export function withoutDiscard(limits: DeviceLimits): DeviceLimits {
  return Object.freeze({ ...limits, maxDiscardSectors: 0 });
}
