// Owns the translation of what an NBD server advertised (size, transmission flags, block
// sizes) into the `DeviceLimits` dm-io plans with. Worked example, qemu-nbd advertising
// 1 / 4096 / 33554432 with TRIM, WRITE_ZEROES, FLUSH and FUA: logical block 512 (the sector
// floor), physical block 4096, 65536 sectors per READ/WRITE (32 MiB), discard and write-zeroes
// up to 2097152 sectors (1 GiB), flush and FUA true.

import { NbdError } from '../errors.js';
import { BIO_MAX_VECS, KIB, SECTOR_SIZE } from '../constants.js';
import type { DeviceLimits } from '../devices/block-device.js';
import { alignDown, bytesToSectorsExact } from '../units.js';
import type { NbdExportInfo } from './handshake.js';
import {
  NBD_FLAG_SEND_FLUSH, NBD_FLAG_SEND_FUA, NBD_FLAG_SEND_TRIM, NBD_FLAG_SEND_WRITE_ZEROES,
  NBD_REQUEST_BYTES_MAX, NBD_SPECIAL_REQUEST_BYTES_MAX,
} from './protocol.js';

/** The preferred block assumed when the server advertises none (the spec's default). */
const PREFERRED_BYTES_DEFAULT = 4 * KIB;
/** Cap on the reported physical block (64 KiB): a hint, kept within what dm-io pages handle. */
const PHYSICAL_BLOCK_BYTES_MAX = 64 * KIB;

/** Limits plus the device size they imply. */
export interface NbdGeometry {
  /** Usable size in 512-byte sectors: the export size rounded down to the logical block. */
  readonly sizeSectors: number;
  /** What one request may carry. */
  readonly limits: DeviceLimits;
}

/**
 * Computes the device geometry. `inflightBytesMax` caps READ/WRITE size so one request always
 * fits the in-flight byte bound.
 * @throws NbdError DMIO_ERR_NBD_PROTOCOL when the server's maximum is below one logical block.
 */
export function nbdGeometry(
  uri: string,
  info: NbdExportInfo,
  inflightBytesMax: number,
): NbdGeometry {
  const flags = info.transmissionFlags;
  const minimumBytes = info.blockSizes?.minimumBytes ?? 1;
  const logicalBlockBytes = Math.max(SECTOR_SIZE, minimumBytes);
  const maximumBytes = info.blockSizes?.maximumBytes ?? 0xffffffff;
  const requestBytes = alignDown(Math.min(maximumBytes, NBD_REQUEST_BYTES_MAX, inflightBytesMax),
    logicalBlockBytes);
  if (requestBytes < logicalBlockBytes) {
    throw new NbdError('DMIO_ERR_NBD_PROTOCOL', uri,
      `server maximum block size ${maximumBytes} is below the ${logicalBlockBytes}-byte block`);
  }
  const preferredBytes = info.blockSizes?.preferredBytes ?? PREFERRED_BYTES_DEFAULT;
  const physicalBlockBytes = Math.max(logicalBlockBytes,
    Math.min(preferredBytes, PHYSICAL_BLOCK_BYTES_MAX, requestBytes));
  const specialSectors = bytesToSectorsExact(
    alignDown(NBD_SPECIAL_REQUEST_BYTES_MAX, logicalBlockBytes));
  const limits: DeviceLimits = {
    logicalBlockBytes,
    physicalBlockBytes,
    maxSectorsPerRequest: bytesToSectorsExact(requestBytes),
    maxSegmentsPerRequest: BIO_MAX_VECS,
    maxDiscardSectors: (flags & NBD_FLAG_SEND_TRIM) !== 0 ? specialSectors : 0,
    maxWriteZeroesSectors: (flags & NBD_FLAG_SEND_WRITE_ZEROES) !== 0 ? specialSectors : 0,
    memoryAlignmentBytes: 0,
    flush: (flags & NBD_FLAG_SEND_FLUSH) !== 0,
    // Without SEND_FUA the device emulates FUA with a FLUSH after the write.
    fua: (flags & (NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_FLUSH)) !== 0,
  };
  const sizeSectors = bytesToSectorsExact(alignDown(info.sizeBytes, logicalBlockBytes));
  return { sizeSectors, limits };
}
