// Owns --verify: while copying, each chunk's source bytes are hashed (sha256) as kcopyd hands
// them over before writing; afterwards every destination is read back, bypassing the page
// cache where the backend allows (image files and block devices are reopened with O_DIRECT),
// and hashed chunk by chunk at the same boundaries. A mismatch names the byte range, so a
// corrupted destination is reported precisely. Memory: 32 bytes per chunk of the copy. The
// copy commands import this module only when --verify is given (`createSourceHashes` in
// commands/verify-reopen.ts), so a copy without it does not load Node's crypto.

import { createHash } from 'node:crypto';
import {
  allocAligned, dmIo, SECTOR_SIZE, sectorsToBytes, type BlockDevice, type DmIoClient,
} from '../index.js';

/** Bytes read back per dm-io request during verification (8 MiB). */
const VERIFY_READ_BYTES = 8 * 1024 * 1024;

/** Chunk hashes of the source, keyed by chunk offset in sectors from the copy's start. */
export class SourceHashes {
  readonly #chunks = new Map<number, Buffer>();
  readonly #firstSector: number;
  readonly chunkSectors: number;

  constructor(firstSector: number, chunkSectors: number) {
    this.#firstSector = firstSector;
    this.chunkSectors = chunkSectors;
  }

  /** kcopyd's onChunkRead: hashes one chunk's bytes. */
  readonly onChunkRead = (sourceSector: number, countSectors: number,
    pages: readonly Uint8Array[]): void => {
    const hash = createHash('sha256');
    let remainingBytes = sectorsToBytes(countSectors);
    for (const page of pages) {
      if (remainingBytes === 0) break;
      const lengthBytes = Math.min(page.length, remainingBytes);
      hash.update(page.subarray(0, lengthBytes));
      remainingBytes -= lengthBytes;
    }
    this.#chunks.set(sourceSector - this.#firstSector, hash.digest());
  };

  /** The hash of the chunk at `offsetSectors`, when it was read. */
  get(offsetSectors: number): Buffer | undefined {
    return this.#chunks.get(offsetSectors);
  }

  /**
   * Reads `countSectors` of `device` from `sector` and compares them chunk by chunk with these
   * hashes. Returns `null` when they match, else a message naming the first differing range.
   */
  verifyDestination(
    client: DmIoClient, device: BlockDevice, sector: number, countSectors: number,
  ): Promise<string | null> {
    return verifyDestination(client, device, sector, countSectors, this);
  }
}

async function verifyDestination(
  client: DmIoClient, device: BlockDevice, sector: number, countSectors: number,
  hashes: SourceHashes,
): Promise<string | null> {
  const chunkSectors = hashes.chunkSectors;
  const readSectors = Math.max(chunkSectors,
    Math.floor(VERIFY_READ_BYTES / SECTOR_SIZE / chunkSectors) * chunkSectors);
  const buffer = allocAligned(sectorsToBytes(Math.min(readSectors, Math.max(countSectors, 1))));
  for (let offset = 0; offset < countSectors; offset += readSectors) {
    const sectors = Math.min(readSectors, countSectors - offset);
    const { errorBits, errors } = await dmIo({
      op: 'read', mem: { type: 'kmem', data: buffer }, client,
    }, [{ device, sector: sector + offset, count: sectors }]);
    if (errorBits !== 0n) return `verify: reading back failed: ${errors[0]?.message ?? 'EIO'}`;
    for (let chunk = 0; chunk < sectors; chunk += chunkSectors) {
      const chunkCount = Math.min(chunkSectors, sectors - chunk);
      const expected = hashes.get(offset + chunk);
      const actual = createHash('sha256')
        .update(buffer.subarray(sectorsToBytes(chunk), sectorsToBytes(chunk + chunkCount)))
        .digest();
      if (expected === undefined || !expected.equals(actual)) {
        const firstByte = sectorsToBytes(offset + chunk);
        return `verify: content differs from the source in bytes ${firstByte}-` +
          `${firstByte + sectorsToBytes(chunkCount) - 1} of the copied range`;
      }
    }
  }
  return null;
}
