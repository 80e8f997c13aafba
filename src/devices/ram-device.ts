// Owns the RAM device (`mem:SIZE`): a sparse store that allocates 64 KiB chunks only when they
// are written and frees whole chunks on discard and write-zeroes, so `mem:16G` costs nothing
// until used. Its extents follow the chunks: an allocated chunk is data (even when a partial
// discard zeroed some of it), a chunk never written or freed again is a hole reading as zeros.

import {
  RAM_CHUNK_BYTES, RAM_DEVICE_BYTES_MAX, RAM_EXTENT_CHUNKS_MAX, SECTOR_SIZE,
} from '../constants.js';
import { bytesToSectorsExact } from '../units.js';
import type { DeviceLimits } from './block-device.js';
import { DATA, type ExtentList, HOLE_ZERO } from './extent-list.js';
import { MemoryBackedDevice, memoryDeviceLimits } from './memory-backed-device.js';
import { validateIntegerInRange } from '../validate.js';
import { InvalidRequestError } from '../errors.js';

/** Options of `createRamDevice`. */
export interface RamDeviceOptions {
  /** Size in bytes: a multiple of 512, at most 64 GiB. */
  sizeBytes: number;
  /** Name in messages (default `mem:<sizeBytes>`). */
  name?: string;
  /** Limit overrides, e.g. a small `maxSectorsPerRequest` to exercise splitting. */
  limits?: Partial<DeviceLimits>;
  /** Refuse writes. */
  readOnly?: boolean;
}

/** A RAM disk whose memory is allocated on first write. */
export class RamDevice extends MemoryBackedDevice {
  readonly kind = 'ram' as const;
  readonly #chunks = new Map<number, Uint8Array>();

  /** Bytes of memory the device holds now. */
  get allocatedBytes(): number {
    return this.#chunks.size * RAM_CHUNK_BYTES;
  }

  protected readSegments(offsetBytes: number, segments: readonly Uint8Array[]): void {
    let position = offsetBytes;
    for (const segment of segments) {
      this.#walk(position, segment.length, (chunk, chunkOffset, done, lengthBytes) => {
        const target = segment.subarray(done, done + lengthBytes);
        if (chunk === undefined) target.fill(0);
        else target.set(chunk.subarray(chunkOffset, chunkOffset + lengthBytes));
      });
      position += segment.length;
    }
  }

  protected writeSegments(offsetBytes: number, segments: readonly Uint8Array[]): void {
    let position = offsetBytes;
    for (const segment of segments) {
      this.#walk(position, segment.length, (_chunk, chunkOffset, done, lengthBytes, index) => {
        const chunk = this.#chunkForWrite(index);
        chunk.set(segment.subarray(done, done + lengthBytes), chunkOffset);
      });
      position += segment.length;
    }
  }

  protected clearRange(offsetBytes: number, lengthBytes: number): void {
    this.#walk(offsetBytes, lengthBytes, (chunk, chunkOffset, _done, pieceBytes, index) => {
      if (chunk === undefined) return;
      if (pieceBytes === RAM_CHUNK_BYTES) this.#chunks.delete(index);
      else chunk.fill(0, chunkOffset, chunkOffset + pieceBytes);
    });
  }

  /** Chunk by chunk from the list's first sector, at most RAM_EXTENT_CHUNKS_MAX chunks. */
  protected fillExtents(list: ExtentList): void {
    const chunkSectors = bytesToSectorsExact(RAM_CHUNK_BYTES);
    for (let looked = 0; looked < RAM_EXTENT_CHUNKS_MAX && !list.finished; looked += 1) {
      const chunkIndex = Math.floor(list.nextSector / chunkSectors);
      list.add((chunkIndex + 1) * chunkSectors, this.#chunks.has(chunkIndex) ? DATA : HOLE_ZERO);
    }
  }

  #chunkForWrite(index: number): Uint8Array {
    let chunk = this.#chunks.get(index);
    if (chunk === undefined) {
      chunk = new Uint8Array(RAM_CHUNK_BYTES);
      this.#chunks.set(index, chunk);
    }
    return chunk;
  }

  /** Calls `visit` for each chunk-sized piece of `[offsetBytes, offsetBytes + lengthBytes)`. */
  #walk(
    offsetBytes: number, lengthBytes: number,
    visit: (chunk: Uint8Array | undefined, chunkOffset: number, doneBytes: number,
      pieceBytes: number, chunkIndex: number) => void,
  ): void {
    let doneBytes = 0;
    while (doneBytes < lengthBytes) {
      const position = offsetBytes + doneBytes;
      const chunkIndex = Math.floor(position / RAM_CHUNK_BYTES);
      const chunkOffset = position % RAM_CHUNK_BYTES;
      const pieceBytes = Math.min(RAM_CHUNK_BYTES - chunkOffset, lengthBytes - doneBytes);
      visit(this.#chunks.get(chunkIndex), chunkOffset, doneBytes, pieceBytes, chunkIndex);
      doneBytes += pieceBytes;
    }
  }
}

/**
 * Creates a RAM device. Memory is allocated in 64 KiB chunks on first write.
 *
 * @throws OutOfRangeError for a size outside 512 B to 64 GiB; InvalidRequestError
 * (`DMIO_ERR_MISALIGNED`) for a size that is not whole sectors.
 * @example
 * const disk = createRamDevice({ sizeBytes: 64 * 1024 * 1024 });
 */
export function createRamDevice(options: RamDeviceOptions): RamDevice {
  const sizeBytes = validateIntegerInRange(options.sizeBytes, 'options.sizeBytes', SECTOR_SIZE,
    RAM_DEVICE_BYTES_MAX);
  requireWholeSectors(sizeBytes);
  const name = options.name ?? `mem:${sizeBytes}`;
  return new RamDevice(name, sizeBytes / SECTOR_SIZE, options.readOnly ?? false,
    memoryDeviceLimits(name, options.limits));
}

/** Throws `DMIO_ERR_MISALIGNED` unless `sizeBytes` is whole sectors. */
export function requireWholeSectors(sizeBytes: number): void {
  if (sizeBytes % SECTOR_SIZE !== 0) {
    throw new InvalidRequestError('DMIO_ERR_MISALIGNED', 'sizeBytes',
      `${sizeBytes} is not a multiple of ${SECTOR_SIZE}`);
  }
}
