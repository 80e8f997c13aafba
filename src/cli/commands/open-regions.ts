// Owns opening the source and destinations of a copy-like command so that nothing is written
// until every argument is known good, and nothing stays changed when a later step fails:
//  1. specs are checked (grammar, directories); the source is opened read-only and its range
//     resolved, refusing a default length that would drop a partial last sector and a regular
//     file that reports size 0 but has content;
//  2. the same destination named twice, or a destination range overlapping the source range
//     on the same storage, is refused (same-storage.ts);
//  3. every destination that exists is opened for writing, creating and extending nothing,
//     block devices exclusively (a mounted or otherwise held one is refused as in use; the
//     source stays shared), and range-checked unless it is an image file allowed to grow; a missing file's directory
//     must be writable;
//  4. only then are missing image files created and short ones extended (sparse), in order.
//     If one of those fails, the files created so far are removed and the ones extended cut
//     back to their old size before the error is thrown.
// Every opened device is pushed onto `opened` so the caller can close them whatever happens.

import {
  accessSync, closeSync, constants, existsSync, openSync, readSync, truncateSync, unlinkSync,
} from 'node:fs';
import { dirname } from 'node:path';
import {
  errnoOf, parseDeviceSpec, SECTOR_SIZE, sectorsToBytes, WRITE_BEHIND_BYTES_DEFAULT,
  type BlockDevice,
} from '../../index.js';
import type { CliContext } from '../context.js';
import {
  checkSpec, closeAll, isFileSpec, openForCli, requireInside, sizeBytesOf,
} from '../devices.js';
import {
  destinationIdentity, missingFilePath, rangesOverlap, sameIdentity, sharesStorageThroughTable,
  specIdentity,
} from '../same-storage.js';
import { UsageError } from '../exit-status.js';

/** Where the source region starts and how long it is, when given. */
export interface SourceRange {
  readonly sector: number;
  readonly lengthSectors: number | null;
  readonly direct: boolean;
}

/**
 * How a copy reads a file source: through dmio's io_uring, unless it is a buffered file and a
 * destination is an NBD export; then on libuv's threadpool, every read. The buffered ring's
 * polling thread spins on a core for as long as reads keep coming, which in a copy to a
 * socket is the whole copy, while the event loop (the NBD client, its socket copies) and the
 * server need the cores; reads served on the event loop (`preadv2` RWF_NOWAIT) would add their
 * page-cache copies to the busiest thread. On the threadpool a 1 GiB copy to NBD took half the
 * CPU of the ring, and the least event-loop time (docs/performance.md, "NBD copies"). The
 * O_DIRECT ring has no polling thread and stays.
 */
function sourceEngine(
  destSpecs: readonly string[], direct: boolean,
): { ioUring: boolean; inlineCachedReads?: boolean } {
  const toNbd = destSpecs.some((spec) => parseDeviceSpec(spec).kind === 'nbd');
  return direct || !toNbd ? { ioUring: true } : { ioUring: false, inlineCachedReads: false };
}

/**
 * NBD connections a copy's source asks for: one. The device fills its connections in order
 * (16 MiB or 16 commands each before the next), and a copy keeps at most 8 chunks in flight,
 * so a source's READs all go to the first connection anyway; the other three only cost their
 * handshakes and, on nbdkit, 16 worker threads each (measured in docs/performance.md, "NBD
 * copies, second round"). Destinations keep the CLI's four: WRITE payloads back a socket up,
 * and writes spread over every connection.
 */
const SOURCE_NBD_CONNECTIONS = 1;

/**
 * Checks every spec, opens the source read-only (a buffered file on the threadpool when a
 * destination is an NBD export: `sourceEngine`) and resolves the copy length.
 */
export async function openSource(
  cli: CliContext, sourceSpec: string, destSpecs: readonly string[], range: SourceRange, opened: BlockDevice[],
): Promise<{ device: BlockDevice; countSectors: number }> {
  checkSpec(sourceSpec, false);
  for (const spec of destSpecs) checkSpec(spec, true);
  const device = await openForCli(cli, { spec: sourceSpec, options: { readOnly: true,
    direct: range.direct, ...sourceEngine(destSpecs, range.direct),
    nbd: { connections: SOURCE_NBD_CONNECTIONS } } });
  opened.push(device);
  refuseSizelessContent(sourceSpec, device);
  if (range.sector > device.sizeSectors) {
    throw new UsageError(`--source-sector ${range.sector} is past the end of ${sourceSpec} ` +
      `(${device.sizeSectors} sectors)`);
  }
  if (range.lengthSectors === null) refusePartialTail(sourceSpec, device, range.sector);
  const countSectors = range.lengthSectors ?? device.sizeSectors - range.sector;
  requireInside(device, range.sector, countSectors, 'source');
  return { device, countSectors };
}

/**
 * Refuses a copy whose destination range overlaps its source range on the same file or block
 * device (the copy would read what it has already overwritten), whatever spelling names it.
 * When the source or a destination is a `table:` spec, any storage shared through the table
 * (nested tables included) is refused whatever the ranges: they are not mapped through it.
 */
export function refuseSourceOverlap(
  sourceSpec: string, sourceSector: number, destSpecs: readonly string[], destSector: number,
  countSectors: number,
): void {
  const source = specIdentity(sourceSpec);
  for (const spec of destSpecs) {
    if (sharesStorageThroughTable(sourceSpec, spec)) {
      throw new UsageError(`${spec} uses the same storage as the source ${sourceSpec}; dmio ` +
        'cannot tell whether the ranges overlap through the table, and the copy could ' +
        'overwrite data before reading it');
    }
    if (!sameIdentity(source, specIdentity(spec))) continue;
    if (!rangesOverlap(sourceSector, countSectors, destSector, countSectors)) continue;
    const last = countSectors - 1;
    throw new UsageError(`${spec} is the same storage as the source ${sourceSpec}, and ` +
      `source sectors ${sourceSector}-${sourceSector + last} overlap destination sectors ` +
      `${destSector}-${destSector + last}: the copy would overwrite data before reading it`);
  }
}

/** Which destinations may be created or extended to hold the region. */
export type Growth =
  /** Missing image files are created and short ones extended (copy). */
  | 'create-or-extend'
  /** Missing image files are created; an existing destination must hold the region (zero). */
  | 'create-only'
  /**
   * A stream of unknown length (copy from stdin): image files are created or extended to hold
   * the region (the cap) as for copy; any other destination must only hold its first sector,
   * and fails when the input reaches its end.
   */
  | 'stream';

/** How `openDestinations` treats the destinations. */
export interface DestinationOptions {
  /** The flag that gave the first sector, for messages (default `--sector`). */
  readonly sectorFlag?: string;
  /** Default `create-or-extend`. */
  readonly growth?: Growth;
  /** Allocate the blocks of created and extended image files at once (`--preallocate`). */
  readonly preallocate?: boolean;
  /**
   * The command flushes what it writes: files and block devices flush in the background as
   * the writes go (`writeBehindBytes`, WRITE_BEHIND_BYTES_DEFAULT), so the last flush finds
   * little left.
   */
  readonly writeBehind?: boolean;
  /** Receives every image file created (`oldSizeBytes` null) or extended, to cut back later. */
  readonly grown?: Array<{ readonly index: number; readonly path: string;
    readonly oldSizeBytes: number | null }>;
}

/** A destination image file to be created (`oldSizeBytes` null) or extended. */
interface GrowingFile {
  readonly index: number;
  readonly spec: string;
  /** Where the file is or will be: the path to remove or cut back on failure. */
  readonly path: string;
  readonly oldSizeBytes: number | null;
  /** The existing file, opened in step 3; closed before it is reopened to grow. */
  readonly existing: BlockDevice | null;
}

/** Where the destination region lies. */
interface DestRegion {
  readonly sector: number;
  readonly countSectors: number;
  readonly direct: boolean;
  readonly sectorFlag: string;
  readonly preallocate: boolean;
  readonly writeBehindBytes: number;
}

/**
 * Opens destinations for writing `countSectors` from `sector` (steps 2-4 above). Image files
 * are created or extended as sparse files (allocated at once only with `preallocate`): a
 * sparse copy leaves the source's holes unwritten there.
 */
export async function openDestinations(
  cli: CliContext, specs: readonly string[], sector: number, countSectors: number, direct: boolean,
  opened: BlockDevice[], options: DestinationOptions = {},
): Promise<BlockDevice[]> {
  const region = { sector, countSectors, direct, sectorFlag: options.sectorFlag ?? '--sector',
    preallocate: options.preallocate === true,
    // O_DIRECT leaves nothing in the page cache for a background flush to write.
    writeBehindBytes: options.writeBehind === true && !direct ? WRITE_BEHIND_BYTES_DEFAULT : 0 };
  const growth = options.growth ?? 'create-or-extend';
  refuseRepeatedDestinations(specs);
  const endBytes = regionEndBytes(region);
  const devices = new Array<BlockDevice | undefined>(specs.length).fill(undefined);
  const growing: GrowingFile[] = [];
  for (const [index, spec] of specs.entries()) {
    const opening = await openExisting(cli, { index, spec, region, growth }, opened);
    if ('device' in opening) devices[index] = opening.device;
    else growing.push(opening);
  }
  for (const [index, device] of await growFiles(cli, growing, endBytes, region, opened)) {
    devices[index] = device;
  }
  for (const file of growing) {
    options.grown?.push({ index: file.index, path: file.path, oldSizeBytes: file.oldSizeBytes });
  }
  return devices.map((device) => {
    if (device === undefined) throw new Error('every destination was opened');
    return device;
  });
}

/**
 * Refuses a destination named twice (any spelling, hard link, symlink or device node), and two
 * destinations sharing storage through a `table:` spec (nested tables included).
 */
function refuseRepeatedDestinations(specs: readonly string[]): void {
  const identities = specs.map((spec) => destinationIdentity(spec));
  for (let later = 1; later < specs.length; later += 1) {
    for (let earlier = 0; earlier < later; earlier += 1) {
      if (sharesStorageThroughTable(specs[earlier] as string, specs[later] as string)) {
        throw new UsageError(`${specs[earlier]} and ${specs[later]} use the same storage; ` +
          'dmio cannot tell whether the ranges overlap through the table: give destinations ' +
          'that share no storage');
      }
      if (!sameIdentity(identities[earlier] ?? null, identities[later] ?? null)) continue;
      throw new UsageError(`${specs[earlier]} and ${specs[later]} are the same destination; ` +
        'give each destination once');
    }
  }
}

/** The byte where the region ends, refused when dmio cannot address it. */
function regionEndBytes(region: DestRegion): number {
  const endBytes = sectorsToBytes(region.sector + region.countSectors);
  if (!Number.isSafeInteger(endBytes)) {
    throw new UsageError(`${region.sectorFlag} ${region.sector}: the region would end at ` +
      `sector ${region.sector + region.countSectors}, past the ` +
      `${Math.floor(Number.MAX_SAFE_INTEGER / SECTOR_SIZE)} sectors dmio can address`);
  }
  return endBytes;
}

/**
 * Step 3 for one destination: opens what exists without changing it. Returns the device when
 * it is final, or the image file to create or extend in step 4.
 */
async function openExisting(
  cli: CliContext,
  { index, spec, region, growth }: { index: number; spec: string; region: DestRegion;
    growth: Growth },
  opened: BlockDevice[],
): Promise<{ device: BlockDevice } | GrowingFile> {
  const parsed = parseDeviceSpec(spec);
  if (parsed.kind === 'file' && !existsSync(parsed.path)) {
    const path = missingFilePath(parsed.path);
    if (path === null) throw new UsageError(`${spec} cannot be created here`);
    requireWritableDirectory(spec, path);
    return { index, spec, path, oldSizeBytes: null, existing: null };
  }
  // A block device is claimed (O_EXCL): one that is mounted or held is refused here.
  const device = await openForCli(cli, { spec,
    options: { direct: region.direct, exclusive: true,
      writeBehindBytes: region.writeBehindBytes } });
  opened.push(device);
  if (device.readOnly) throw new UsageError(`destination ${spec} is read-only`);
  const end = region.sector + region.countSectors;
  if (growth !== 'create-only' && end > device.sizeSectors && isFileSpec(spec) &&
    parsed.kind === 'file') {
    return { index, spec, path: parsed.path, oldSizeBytes: sizeBytesOf(device), existing: device };
  }
  requireInside(device, region.sector, growth === 'stream' ? 0 : region.countSectors,
    'destination');
  return { device };
}

/** Refuses a new file whose directory cannot be written (read-only, immutable, no access). */
function requireWritableDirectory(spec: string, path: string): void {
  try {
    accessSync(dirname(path), constants.W_OK);
  } catch (error) {
    throw new UsageError(`${spec} cannot be created: ${errnoOf(error)} on its directory ` +
      `${dirname(path)}`, { cause: error });
  }
}

/**
 * Step 4: creates or extends every image file to `endBytes`, in order. On a failure, closes
 * what it opened, removes the files it created, cuts the ones it extended back, and rethrows.
 */
async function growFiles(
  cli: CliContext, files: readonly GrowingFile[], endBytes: number, region: DestRegion, opened: BlockDevice[],
): Promise<Array<[number, BlockDevice]>> {
  const grown: Array<[number, BlockDevice]> = [];
  const touched: GrowingFile[] = [];
  try {
    for (const file of files) {
      await file.existing?.close();
      touched.push(file);
      const device = await growFile(cli, file, endBytes, region);
      opened.push(device);
      grown.push([file.index, device]);
      requireInside(device, region.sector, region.countSectors, 'destination');
    }
  } catch (error) {
    await closeAll(grown.map(([, device]) => device));
    for (const file of touched.reverse()) undoGrowth(file);
    throw error;
  }
  return grown;
}

/** Opens one image file with `create`; an EFBIG failure names the flag that put the end there. */
async function growFile(
  cli: CliContext, file: GrowingFile, endBytes: number, region: DestRegion,
): Promise<BlockDevice> {
  try {
    return await openForCli(cli, { spec: file.spec,
      options: { direct: region.direct, writeBehindBytes: region.writeBehindBytes,
        create: { sizeBytes: endBytes, preallocate: region.preallocate } } });
  } catch (error) {
    const errno = (error as { cause?: { errno?: unknown } }).cause?.errno;
    if (!(error instanceof UsageError) || errno !== 'EFBIG') throw error;
    throw new UsageError(`${region.sectorFlag} ${region.sector} with ${region.countSectors} ` +
      `sectors ends at byte ${endBytes}, past the largest file the file system of ` +
      `${file.spec} allows (${error.message})`, { cause: error.cause });
  }
}

/** Removes a file step 4 created, or cuts one it extended back to its old size. */
function undoGrowth(file: GrowingFile): void {
  try {
    if (file.oldSizeBytes === null) unlinkSync(file.path);
    else truncateSync(file.path, file.oldSizeBytes);
  } catch {
    // Nothing was created (the open failed first) or it is gone already.
  }
}

/**
 * Refuses a default length that would stop short of the source's true end: a source whose
 * size is not whole sectors (or blocks) would lose its last bytes in silence.
 */
function refusePartialTail(spec: string, device: BlockDevice, sector: number): void {
  const sizeBytes = sizeBytesOf(device);
  const wholeBytes = sectorsToBytes(device.sizeSectors);
  if (sizeBytes <= wholeBytes) return;
  const blockBytes = device.limits.logicalBlockBytes;
  const unit = blockBytes === SECTOR_SIZE ? `${SECTOR_SIZE}-byte sectors` :
    `${blockBytes}-byte blocks`;
  const countSectors = Math.max(0, device.sizeSectors - sector);
  throw new UsageError(`${spec} is ${sizeBytes} bytes, not a whole number of ${unit}: ` +
    `copying to its end would drop its last ${sizeBytes - wholeBytes} bytes. To copy the ` +
    `whole ${unit} only, give --count ${countSectors} (or --length ${sectorsToBytes(countSectors)})`);
}

/**
 * Refuses a regular file that reports size 0 but has content (/proc and /sys files): dmio
 * reads regions by offset and would copy nothing from it.
 */
function refuseSizelessContent(spec: string, device: BlockDevice): void {
  if (sizeBytesOf(device) !== 0 || device.kind !== 'file') return;
  const parsed = parseDeviceSpec(spec);
  if (parsed.kind !== 'file' || !hasContent(parsed.path)) return;
  throw new UsageError(`${spec} reports size 0 but has content; it is not a disk image ` +
    '(copy it to a file first, e.g. with cat)');
}

/** True when reading one byte of the regular file at `path` gets one. */
function hasContent(path: string): boolean {
  const fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  try {
    return readSync(fd, Buffer.alloc(1), 0, 1, 0) === 1;
  } catch {
    return false;
  } finally {
    closeSync(fd);
  }
}
