// Owns the `disk` dirty log: the core log's state with the clean bits persisted on a log
// device in the kernel's layout, so that after a crash only regions that were not clean are
// resynced. From sector 0 of the log device, little-endian:
//   0     u32 magic 0x4D695272 (bytes 72 52 69 4D)   4  u32 version 2
//   8     u64 nr_regions                              16 zeros up to byte 1024
//   1024  clean bitmap, ceil(regions / 32) 32-bit words, bit i = region i, 1 = clean
// padded with zeros to the log device's logical block; the whole buffer is one I/O at sector 0.
// Opening reads it (a wrong magic, or `sync`/`nosync`, starts afresh), makes sync = clean, and
// writes it back followed by a flush of the log device. A flush writes the buffer when a bit
// changed, then flushes the log device when a region was dirtied (so a region's bit is 0 on the
// media before any leg sees a write to it). Status letter: A fine, D a read or write failed, F
// a flush of the log device failed.

import type { DmIoClient } from '../core/client.js';
import { dmIo } from '../core/dm-io.js';
import type { BlockDevice } from '../devices/block-device.js';
import { TableError } from '../errors.js';
import { DirtyLog, type SyncMode } from './dirty-log.js';
import { flushDevice } from './target-io.js';
import { bytesToSectorsExact } from '../units.js';

const DISK_LOG_MAGIC = 0x4d695272;
const DISK_LOG_VERSION = 2;
/** Byte offset of the clean bitmap (the kernel's LOG_OFFSET, 2 sectors). */
const BITMAP_OFFSET_BYTES = 1024;

/** Bytes of the log buffer for `regionCount` regions on a device with `logicalBlockBytes`. */
export function diskLogBufferBytes(regionCount: number, logicalBlockBytes: number): number {
  const rawBytes = BITMAP_OFFSET_BYTES + Math.ceil(regionCount / 32) * 4;
  return Math.ceil(rawBytes / logicalBlockBytes) * logicalBlockBytes;
}

/** Where a disk log lives and how it may be used. */
export interface DiskLogPlace {
  readonly device: BlockDevice;
  readonly deviceId: string;
  readonly client: DmIoClient;
  readonly readOnly: boolean;
  /** For errors: the table and line. */
  readonly source: string;
  readonly lineNumber: number;
}

/** A dirty log persisted on a log device. */
export class DiskLog extends DirtyLog {
  readonly #place: DiskLogPlace;
  readonly #buffer: Uint8Array;
  #health: 'A' | 'D' | 'F' = 'A';
  /** Regions whose clean bits were found dirty when the log was opened (for tests and status). */
  dirtyAtOpen = 0;

  constructor(regionCount: number, regionSectors: number, syncMode: SyncMode, place: DiskLogPlace) {
    super(regionCount, regionSectors, syncMode);
    this.#place = place;
    this.#buffer = new Uint8Array(diskLogBufferBytes(regionCount, place.device.limits.logicalBlockBytes));
  }

  override get persistent(): boolean {
    return true;
  }

  override async resume(): Promise<void> {
    await super.resume();
    const storedRegions = await this.#readStoredRegions();
    const fresh = this.syncMode === 'nosync';
    for (let region = storedRegions; region < this.regionCount; region += 1) {
      this.clean.set(region, fresh);
    }
    if (storedRegions > 0) {
      const view = new Uint8Array(this.#buffer.buffer, this.#buffer.byteOffset + BITMAP_OFFSET_BYTES,
        Math.ceil(Math.min(storedRegions, this.regionCount) / 32) * 4);
      for (let region = 0; region < Math.min(storedRegions, this.regionCount); region += 1) {
        this.clean.set(region, ((view[region >> 3] as number) & (1 << (region & 7))) !== 0);
      }
    }
    this.syncFromClean();
    this.dirtyAtOpen = this.regionCount - this.syncCount;
    if (this.#place.readOnly) return;
    await this.#write();
    await this.#flushLogDevice();
  }

  /** Reads the buffer; the stored region count, or 0 when the header is to be treated as new. */
  async #readStoredRegions(): Promise<number> {
    const { device, client } = this.#place;
    const result = await dmIo({ op: 'read', mem: { type: 'vm', data: this.#buffer }, client },
      [{ device, sector: 0, count: bytesToSectorsExact(this.#buffer.length) }]);
    if (result.errorBits !== 0n) {
      this.#health = 'D';
      return 0;
    }
    const view = new DataView(this.#buffer.buffer, this.#buffer.byteOffset, this.#buffer.length);
    if (view.getUint32(0, true) !== DISK_LOG_MAGIC || this.syncMode !== 'default') return 0;
    const version = view.getUint32(4, true);
    if (version !== 1 && version !== DISK_LOG_VERSION) {
      throw new TableError('DMIO_ERR_INVALID_TABLE', this.#place.source, this.#place.lineNumber,
        `mirror: disk log ${this.#place.deviceId} has unsupported version ${version}`);
    }
    return Number(view.getBigUint64(8, true));
  }

  override async flush(): Promise<void> {
    const dirtied = this.touchedDirtied;
    const touched = dirtied || this.touchedCleaned;
    await super.flush();
    if (!touched || this.#place.readOnly) return;
    await this.#write();
    if (dirtied) await this.#flushLogDevice();
  }

  async #write(): Promise<void> {
    const view = new DataView(this.#buffer.buffer, this.#buffer.byteOffset, this.#buffer.length);
    this.#buffer.fill(0);
    view.setUint32(0, DISK_LOG_MAGIC, true);
    view.setUint32(4, DISK_LOG_VERSION, true);
    view.setBigUint64(8, BigInt(this.regionCount), true);
    this.#buffer.set(this.clean.bytes, BITMAP_OFFSET_BYTES);
    const { device, client } = this.#place;
    const result = await dmIo({ op: 'write', mem: { type: 'vm', data: this.#buffer }, client },
      [{ device, sector: 0, count: bytesToSectorsExact(this.#buffer.length) }]);
    if (result.errorBits !== 0n) this.#health = 'D';
  }

  #flushLogDevice(): Promise<void> {
    return new Promise((resolve) => {
      flushDevice(this.#place.client, this.#place.device, (error) => {
        if (error !== null && this.#health === 'A') this.#health = 'F';
        resolve();
      });
    });
  }

  override get failed(): boolean {
    return this.#health !== 'A';
  }

  override status(): string {
    return `3 disk ${this.#place.deviceId} ${this.#health}`;
  }

  override table(): string {
    const syncWord = this.syncMode === 'default' ? '' : `${this.syncMode} `;
    return `disk ${syncWord === '' ? 2 : 3} ${this.#place.deviceId} ${this.regionSectors} ${syncWord}`;
  }
}
