// Owns the `writecache` target (dm-writecache, SSD mode): writes land in cache blocks and are
// acknowledged when the cache device has them; reads come from the cache when it holds the
// block, else from the origin; kcopyd writes blocks back to the origin (writecache-writeback.ts)
// and frees them.
//
// Durability: each block's metadata entry (target sector, seq) lives in an in-memory image of
// the cache's metadata (writecache-format.ts). A commit writes the changed 64 KiB metadata
// chunks, waits for the data writes it covers, flushes the cache device, then writes the
// superblock with the seq raised by one, with FUA: that write is the commit point, after which
// every entry stamped with the old seq reads as committed. A flush (and, deliberately unlike the
// kernel's SSD mode, a FUA write) commits; so does the autocommit threshold (blocks or time).
// After a crash, replay keeps exactly what the last completed commit covered. New writes
// during a commit are stamped with the next seq, so a commit never claims data it did not wait
// for.
//
// Blocks: a write to a cached block not under writeback overwrites it in place; otherwise a
// free block is taken (lowest index first); with none free, a write to an uncached block goes
// around the cache to the origin and one to a block under writeback waits for a free block.
// A freed block is reused only after the metadata that frees it is on the cache device, so a
// replay never maps a sector to a block holding newer data. A discard frees the cached blocks
// of its range (persisted), then goes to the origin if it takes discards; write-zeroes is not
// supported. Requests must be whole cache blocks: the table's logical block is the block size.

import type { DmIoClient } from '../core/client.js';
import { dmIo } from '../core/dm-io.js';
import type { BlockDevice, RequestFlags } from '../devices/block-device.js';
import type { DmIoError } from '../errors.js';
import { InflightCounter } from './inflight.js';
import { SegmentCursor } from './segment-cursor.js';
import type { Target, TargetDone, TargetEnv, TargetIo } from './target.js';
import { completeLater, flushDevice, ioToDevice, targetError } from './target-io.js';
import {
  entryOffset, ENTRY_BYTES, setSuperblockSeq, writeEntry, type WritecacheLayout,
} from './writecache-format.js';
import { WritecacheWriteback } from './writecache-writeback.js';
import { GIB, KIB } from '../constants.js';
import { bytesToSectorsExact } from '../units.js';

/** Most sectors one discard covers (the table cuts larger ones). */
const DISCARD_SECTORS_MAX = bytesToSectorsExact(GIB / 2);
/** Least bytes of a superblock commit write: the kernel's `max(4096U, wc->block_size)`. */
const SUPERBLOCK_WRITE_BYTES_MIN = 4 * KIB;
/** Bytes of one metadata chunk written as a unit. */
const METADATA_CHUNK_BYTES = 64 * KIB;

/** The options of a writecache line (dm-writecache names), after parsing. */
export interface WritecacheOptions {
  readonly highWatermark: number;
  readonly lowWatermark: number;
  readonly writebackJobs: number;
  readonly autocommitBlocks: number;
  readonly autocommitTimeMs: number;
  readonly cleaner: boolean;
  readonly pauseWritebackMs: number;
  /** The option words as given, for `table()`. */
  readonly words: readonly string[];
}

/** The 14 counters of the status line, in order after error, n_blocks, free, writeback. */
interface Stats {
  reads: number;
  readHits: number;
  writes: number;
  writeHitsUncommitted: number;
  writeHitsCommitted: number;
  writesAround: number;
  writesAllocate: number;
  writesBlocked: number;
  flushes: number;
  discards: number;
}

/** What the parser hands over: the devices, layout and replayed metadata. */
export interface WritecacheParts {
  readonly origin: BlockDevice;
  readonly cache: BlockDevice;
  readonly originId: string;
  readonly cacheId: string;
  readonly layout: WritecacheLayout;
  readonly image: Uint8Array;
  readonly seq: number;
  readonly live: ReadonlyArray<{ readonly index: number; readonly sector: number; readonly seq: number }>;
  readonly free: readonly number[];
  readonly options: WritecacheOptions;
}

/** A writecache target. */
export class WritecacheTarget implements Target {
  readonly type = 'writecache';
  readonly maxIoSectors = 0;
  readonly devices: readonly BlockDevice[];
  readonly limits: { logicalBlockBytes: number; maxDiscardSectors: number; maxWriteZeroesSectors: number };
  readonly layout: WritecacheLayout;
  readonly options: WritecacheOptions;
  readonly origin: BlockDevice;
  readonly cache: BlockDevice;
  readonly #parts: WritecacheParts;
  readonly #client: DmIoClient;
  readonly #blockSectors: number;
  readonly #image: Uint8Array;
  /** Target sector of each block's entry, or -1 when free. */
  readonly #entrySector: Float64Array;
  /** Seq stamped on each block's entry, or -1 when free. */
  readonly #entrySeq: Float64Array;
  readonly #underWriteback: Uint8Array;
  #writebackCount = 0;
  /** Data writes in flight to each cache block. */
  readonly #blockWrites: Uint16Array;
  /** Target sector to the block holding its newest data. */
  readonly #map = new Map<number, number>();
  /** Cached blocks in insertion order, oldest first (writeback order). */
  readonly #lru = new Set<number>();
  /** Free blocks; the lowest index is taken first. */
  #free: number[];
  /** Seq stamped on new entries (the superblock's, or one above while a commit runs). */
  #seq: number;
  /** The seq of the last superblock on the cache device: entries below it are committed. */
  #committedSeq: number;
  #dirtySinceCommit = false;
  #overwroteCommitted = false;
  #uncommittedBlocks = 0;
  readonly #dirtyChunks = new Set<number>();
  /** Data writes in flight per commit epoch (the seq current when they were issued). */
  readonly #inflightByEpoch = new Map<number, number>();
  #epochWaiters: Array<() => void> = [];
  #inflightCacheReads = 0;
  #readWaiters: Array<() => void> = [];
  #freeWaiters: Array<() => void> = [];
  #metadataChain: Promise<void> = Promise.resolve();
  #queuedCommit: Promise<void> | null = null;
  #autocommitTimer: NodeJS.Timeout | null = null;
  #error: DmIoError | null = null;
  #lastOriginWriteMs = 0;
  readonly #now: () => number;
  readonly #readOnly: boolean;
  readonly #stats: Stats = {
    reads: 0, readHits: 0, writes: 0, writeHitsUncommitted: 0, writeHitsCommitted: 0,
    writesAround: 0, writesAllocate: 0, writesBlocked: 0, flushes: 0, discards: 0,
  };
  readonly #inflight = new InflightCounter();
  readonly #writeback: WritecacheWriteback;
  #stopping: Promise<void> | null = null;

  constructor(env: TargetEnv, parts: WritecacheParts) {
    this.#parts = parts;
    this.origin = parts.origin;
    this.cache = parts.cache;
    this.devices = [parts.origin, parts.cache];
    this.layout = parts.layout;
    this.options = parts.options;
    this.#client = env.ioClient;
    this.#now = env.now;
    this.#readOnly = env.readOnly;
    this.#blockSectors = bytesToSectorsExact(parts.layout.blockBytes);
    // Discards are the target's own work (free the cached blocks, then pass it on); one
    // discard covers at most this many sectors, so its metadata stays small.
    this.limits = { logicalBlockBytes: parts.layout.blockBytes, maxDiscardSectors: DISCARD_SECTORS_MAX,
      maxWriteZeroesSectors: 0 };
    this.#image = parts.image;
    const count = parts.layout.blockCount;
    this.#entrySector = new Float64Array(count).fill(-1);
    this.#entrySeq = new Float64Array(count).fill(-1);
    this.#underWriteback = new Uint8Array(count);
    this.#blockWrites = new Uint16Array(count);
    for (const { index, sector, seq } of parts.live) {
      this.#entrySector[index] = sector;
      this.#entrySeq[index] = seq;
      this.#map.set(sector, index);
      this.#lru.add(index);
    }
    this.#free = [...parts.free].sort((a, b) => b - a);
    this.#seq = parts.seq;
    this.#committedSeq = parts.seq;
    this.#writeback = new WritecacheWriteback(this, {
      client: env.ioClient, throttlePercent: env.copyThrottlePercent, now: env.now,
    });
  }

  /** Starts writeback if the watermarks (or `cleaner`) ask for it; nothing when read-only. */
  start(): void {
    if (!this.#readOnly) this.#writeback.kick();
  }

  // ---- what writeback needs ----

  /** Blocks free now. */
  get freeBlocks(): number {
    return this.#free.length;
  }

  /** Blocks being written back now. */
  get writebackBlocks(): number {
    return this.#writebackCount;
  }

  /** Cached blocks (committed or not), oldest first. */
  cachedBlocks(): IterableIterator<number> {
    return this.#lru.values();
  }

  /** The target sector a cached block holds. */
  blockSector(index: number): number {
    return this.#entrySector[index] as number;
  }

  isUnderWriteback(index: number): boolean {
    return this.#underWriteback[index] === 1;
  }

  /** The block's entry is not yet covered by a completed commit. */
  isUncommitted(index: number): boolean {
    return (this.#entrySeq[index] as number) >= this.#committedSeq;
  }

  /** Cache device sector of block `index`'s data. */
  dataSector(index: number): number {
    return this.layout.startSector + bytesToSectorsExact(this.layout.metadataBytes + index * this.layout.blockBytes);
  }

  setUnderWriteback(index: number, value: boolean): void {
    const flag = value ? 1 : 0;
    if (this.#underWriteback[index] === flag) return;
    this.#underWriteback[index] = flag;
    this.#writebackCount += value ? 1 : -1;
  }

  get errored(): boolean {
    return this.#error !== null;
  }

  /** Sets the sticky error: writes and flushes fail from now on, reads go on. */
  setError(error: DmIoError): void {
    this.#error ??= error;
    this.#wakeFreeWaiters();
  }

  /** Milliseconds since the last write that went around the cache to the origin. */
  sinceOriginWriteMs(): number {
    return this.#now() - this.#lastOriginWriteMs;
  }

  /**
   * Frees blocks whose data the origin now holds (and flushed): their entries are freed in the
   * metadata, which is written and flushed after in-flight cache reads have finished; only then
   * do the blocks return to the free list.
   */
  async freeWrittenBack(indexes: readonly number[]): Promise<void> {
    for (const index of indexes) {
      const sector = this.#entrySector[index] as number;
      if (this.#map.get(sector) === index) this.#map.delete(sector);
      this.#lru.delete(index);
      this.#entrySeq[index] = -1;
      writeEntry(this.#image, index, null, null);
      this.#markChunk(index);
    }
    await this.#drainCacheReads();
    await this.#serialize(async () => {
      await this.#writeDirtyChunks();
      await this.#flushCache();
    });
    for (const index of indexes) {
      this.setUnderWriteback(index, false);
      this.#entrySector[index] = -1;
      this.#free.push(index);
    }
    this.#free.sort((a, b) => b - a);
    this.#wakeFreeWaiters();
  }

  // ---- I/O ----

  map(io: TargetIo, done: TargetDone): void {
    const tracked = this.#inflight.track(done);
    if (io.sector % this.#blockSectors !== 0 || io.countSectors % this.#blockSectors !== 0) {
      completeLater(tracked, targetError('writecache (I/O is not aligned)', io));
      return;
    }
    if (io.op === 'read') this.#read(io, tracked);
    else if (io.op === 'write') this.#write(io, tracked);
    else if (io.op === 'discard') this.#discard(io, tracked);
    else completeLater(tracked, targetError('writecache', io, 'EOPNOTSUPP'));
  }

  flush(done: TargetDone): void {
    this.#stats.flushes += 1;
    const tracked = this.#inflight.track(done);
    if (this.#error !== null) {
      completeLater(tracked, this.#error);
      return;
    }
    this.commit().then(() => {
      flushDevice(this.#client, this.origin, (error) => tracked(this.#error ?? error));
    }, (error: unknown) => tracked(error as DmIoError));
  }

  #read(io: TargetIo, done: TargetDone): void {
    const join = joinPieces(done);
    const cursor = new SegmentCursor(io.segments);
    let missStart = -1;
    let missSegments: Uint8Array[] = [];
    const flushMiss = (): void => {
      if (missStart < 0) return;
      const countSectors = bytesToSectorsExact(
        missSegments.reduce((total, segment) => total + segment.length, 0));
      ioToDevice(this.#client, this.origin, missStart,
        { ...io, sector: missStart, countSectors, segments: missSegments }, join.piece());
      missStart = -1;
      missSegments = [];
    };
    for (let sector = io.sector; sector < io.sector + io.countSectors; sector += this.#blockSectors) {
      this.#stats.reads += 1;
      const views = cursor.take(this.layout.blockBytes);
      const index = this.#map.get(sector);
      if (index === undefined) {
        if (missStart < 0) missStart = sector;
        missSegments.push(...views);
        continue;
      }
      flushMiss();
      this.#stats.readHits += 1;
      this.#inflightCacheReads += 1;
      const piece = join.piece();
      ioToDevice(this.#client, this.cache, this.dataSector(index),
        { ...io, sector, countSectors: this.#blockSectors, segments: views }, (error) => {
          this.#inflightCacheReads -= 1;
          if (this.#inflightCacheReads === 0) wakeAll(this.#readWaiters, (list) => { this.#readWaiters = list; });
          piece(error);
        });
    }
    flushMiss();
    join.close();
  }

  #write(io: TargetIo, done: TargetDone): void {
    if (this.#error !== null) {
      completeLater(done, this.#error);
      return;
    }
    const finish = (error: DmIoError | null): void => {
      if (error !== null || !io.flags.fua) {
        done(error);
        return;
      }
      this.commit().then(() => done(this.#error), (failure: unknown) => done(failure as DmIoError));
    };
    if (io.countSectors === this.#blockSectors) {
      this.#writeBlock(io.sector, io.segments as Uint8Array[], io.flags, io.ioprio, finish);
      this.#afterWrite();
      return;
    }
    const join = joinPieces(finish);
    const cursor = new SegmentCursor(io.segments);
    for (let sector = io.sector; sector < io.sector + io.countSectors; sector += this.#blockSectors) {
      this.#writeBlock(sector, cursor.take(this.layout.blockBytes), io.flags, io.ioprio, join.piece());
    }
    join.close();
    this.#afterWrite();
  }

  #writeBlock(sector: number, segments: Uint8Array[], flags: RequestFlags, ioprio: number,
    done: TargetDone): void {
    if (this.#error !== null) {
      completeLater(done, this.#error);
      return;
    }
    this.#stats.writes += 1;
    const existing = this.#map.get(sector);
    let index: number;
    if (existing !== undefined && this.#underWriteback[existing] === 0) {
      index = existing;
      if (this.#entrySeq[index] === this.#seq) {
        this.#stats.writeHitsUncommitted += 1;
      } else {
        this.#stats.writeHitsCommitted += 1;
        this.#overwroteCommitted = true;
      }
    } else if (existing === undefined && this.options.cleaner) {
      this.#writeAround(sector, segments, flags, ioprio, done);
      return;
    } else {
      const taken = this.#free.pop();
      if (taken === undefined) {
        if (existing === undefined) {
          this.#writeAround(sector, segments, flags, ioprio, done);
        } else {
          this.#stats.writesBlocked += 1;
          this.#freeWaiters.push(() => this.#writeBlock(sector, segments, flags, ioprio, done));
          this.#writeback.kick();
        }
        return;
      }
      index = taken;
      this.#stats.writesAllocate += 1;
      this.#entrySector[index] = sector;
      this.#entrySeq[index] = this.#seq;
      writeEntry(this.#image, index, sector, this.#seq);
      this.#markChunk(index);
      this.#map.set(sector, index);
      this.#lru.add(index);
      this.#uncommittedBlocks += 1;
      this.#dirtySinceCommit = true;
    }
    const epoch = this.#seq;
    this.#inflightByEpoch.set(epoch, (this.#inflightByEpoch.get(epoch) ?? 0) + 1);
    this.#blockWrites[index] = (this.#blockWrites[index] as number) + 1;
    ioToDevice(this.#client, this.cache, this.dataSector(index), {
      op: 'write', sector, countSectors: this.#blockSectors, segments, flags: { ...flags, fua: false },
      ioprio,
    }, (error) => {
      this.#blockWrites[index] = (this.#blockWrites[index] as number) - 1;
      this.#endEpochWrite(epoch);
      if (error !== null) this.setError(error);
      done(error);
    });
  }

  /**
   * Frees the cached blocks of the range that are not under writeback (after writes in flight
   * to them landed), persists that, then passes the discard to the origin when it can take one.
   * Blocks return to the free list only once their freeing is on the cache device.
   */
  #discard(io: TargetIo, done: TargetDone): void {
    if (this.#error !== null) {
      completeLater(done, this.#error);
      return;
    }
    this.#stats.discards += io.countSectors / this.#blockSectors;
    const freed: number[] = [];
    for (let sector = io.sector; sector < io.sector + io.countSectors; sector += this.#blockSectors) {
      const index = this.#map.get(sector);
      if (index === undefined || this.#underWriteback[index] === 1) continue;
      // Held like writeback holds a batch: no in-place write may start on it from now on.
      this.setUnderWriteback(index, true);
      freed.push(index);
    }
    const passOn = (): void => {
      if (this.origin.limits.maxDiscardSectors === 0) {
        done(null);
        return;
      }
      ioToDevice(this.#client, this.origin, io.sector, io, (error) => {
        done(error?.code === 'DMIO_ERR_NOT_SUPPORTED' ? null : error);
      });
    };
    if (freed.length === 0) {
      passOn();
      return;
    }
    this.waitBlocksIdle(freed).then(() => this.freeWrittenBack(freed)).then(passOn,
      (error: unknown) => done(error as DmIoError));
  }

  #writeAround(sector: number, segments: Uint8Array[], flags: RequestFlags, ioprio: number,
    done: TargetDone): void {
    this.#stats.writesAround += 1;
    this.#lastOriginWriteMs = this.#now();
    ioToDevice(this.#client, this.origin, sector, {
      op: 'write', sector, countSectors: this.#blockSectors, segments, flags, ioprio,
    }, done);
  }

  #afterWrite(): void {
    if (this.#uncommittedBlocks >= this.options.autocommitBlocks) {
      void this.commit().catch(() => undefined);
    } else if (this.#autocommitTimer === null && this.#dirtySinceCommit && this.#stopping === null) {
      this.#autocommitTimer = setTimeout(() => {
        this.#autocommitTimer = null;
        void this.commit().catch(() => undefined);
      }, this.options.autocommitTimeMs);
    }
    this.#writeback.kick();
  }

  #endEpochWrite(epoch: number): void {
    const left = (this.#inflightByEpoch.get(epoch) ?? 1) - 1;
    if (left === 0) this.#inflightByEpoch.delete(epoch);
    else this.#inflightByEpoch.set(epoch, left);
    wakeAll(this.#epochWaiters, (list) => { this.#epochWaiters = list; });
  }

  #wakeFreeWaiters(): void {
    const waiters = this.#freeWaiters;
    this.#freeWaiters = [];
    for (const resume of waiters) resume();
  }

  // ---- commit ----

  /**
   * Makes every write completed before this call durable (see the header). Serialized with
   * every other metadata write; a call joins a commit that has not started yet.
   */
  commit(): Promise<void> {
    if (this.#queuedCommit !== null) return this.#queuedCommit;
    const run = this.#serialize(() => {
      this.#queuedCommit = null;
      return this.#commitNow();
    });
    this.#queuedCommit = run;
    return run;
  }

  async #commitNow(): Promise<void> {
    if (this.#autocommitTimer !== null) clearTimeout(this.#autocommitTimer);
    this.#autocommitTimer = null;
    if (this.#readOnly) return;
    if (this.#error !== null) throw this.#error;
    this.#uncommittedBlocks = 0;
    const epoch = this.#seq;
    if (!this.#dirtySinceCommit) {
      if (!this.#overwroteCommitted) return;
      this.#overwroteCommitted = false;
      await this.#waitEpochs(epoch);
      await this.#flushCache();
      return;
    }
    this.#seq = epoch + 1;
    this.#dirtySinceCommit = false;
    this.#overwroteCommitted = false;
    await this.#writeDirtyChunks();
    await this.#waitEpochs(epoch);
    await this.#flushCache();
    setSuperblockSeq(this.#image, epoch + 1);
    const superBytes = Math.min(Math.max(SUPERBLOCK_WRITE_BYTES_MIN, this.layout.blockBytes), this.layout.metadataBytes);
    await this.#writeImage(0, superBytes, true);
    if (this.#error !== null) throw this.#error;
    this.#committedSeq = epoch + 1;
  }

  /**
   * Waits until no data write is in flight to any of `indexes` (writeback marks them first, so
   * no new in-place write can start; one already started must land before the copy reads it).
   */
  waitBlocksIdle(indexes: readonly number[]): Promise<void> {
    const busy = (): boolean => indexes.some((index) => (this.#blockWrites[index] as number) > 0);
    if (!busy()) return Promise.resolve();
    return new Promise((resolve) => {
      const check = (): void => {
        if (busy()) this.#epochWaiters.push(check);
        else resolve();
      };
      this.#epochWaiters.push(check);
    });
  }

  /** Waits until no data write issued in an epoch up to `epoch` is in flight. */
  #waitEpochs(epoch: number): Promise<void> {
    const busy = (): boolean => [...this.#inflightByEpoch.keys()].some((key) => key <= epoch);
    if (!busy()) return Promise.resolve();
    return new Promise((resolve) => {
      const check = (): void => {
        if (busy()) this.#epochWaiters.push(check);
        else resolve();
      };
      this.#epochWaiters.push(check);
    });
  }

  #drainCacheReads(): Promise<void> {
    if (this.#inflightCacheReads === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const check = (): void => {
        if (this.#inflightCacheReads > 0) this.#readWaiters.push(check);
        else resolve();
      };
      this.#readWaiters.push(check);
    });
  }

  #markChunk(index: number): void {
    const offset = entryOffset(index);
    this.#dirtyChunks.add(Math.floor(offset / METADATA_CHUNK_BYTES));
    this.#dirtyChunks.add(Math.floor((offset + ENTRY_BYTES - 1) / METADATA_CHUNK_BYTES));
  }

  async #writeDirtyChunks(): Promise<void> {
    const chunks = [...this.#dirtyChunks].sort((a, b) => a - b);
    this.#dirtyChunks.clear();
    await Promise.all(chunks.map((chunk) => {
      const start = chunk * METADATA_CHUNK_BYTES;
      return this.#writeImage(start, Math.min(METADATA_CHUNK_BYTES, this.layout.metadataBytes - start), false);
    }));
  }

  /** Synchronous dm-io of `[startBytes, +lengthBytes)` of the image, VMA memory. */
  async #writeImage(startBytes: number, lengthBytes: number, fua: boolean): Promise<void> {
    const result = await dmIo({
      op: 'write', client: this.#client, flags: { fua },
      mem: { type: 'vm', data: this.#image.subarray(startBytes, startBytes + lengthBytes) },
    }, [{ device: this.cache, sector: this.layout.startSector + bytesToSectorsExact(startBytes),
      count: bytesToSectorsExact(lengthBytes) }]);
    const error = result.errors[0];
    if (error !== undefined) this.setError(error);
  }

  #flushCache(): Promise<void> {
    return new Promise((resolve) => flushDevice(this.#client, this.cache, (error) => {
      if (error !== null) this.setError(error);
      resolve();
    }));
  }

  #serialize<T>(work: () => Promise<T>): Promise<T> {
    const run = this.#metadataChain.then(work);
    this.#metadataChain = run.then(() => undefined, () => undefined);
    return run;
  }

  /** Writes back every cached block (as `cleaner` does, once); resolves when none is left. */
  writeBackAll(): Promise<void> {
    return this.#writeback.writeBackAll();
  }

  // ---- status ----

  status(): string {
    const s = this.#stats;
    const errno = this.#error === null ? 0 : -5;
    return [errno, this.layout.blockCount, this.freeBlocks, this.writebackBlocks, s.reads, s.readHits,
      s.writes, s.writeHitsUncommitted, s.writeHitsCommitted, s.writesAround, s.writesAllocate,
      s.writesBlocked, s.flushes, s.discards].join(' ');
  }

  table(): string {
    const words = this.options.words;
    return `s ${this.#parts.originId} ${this.#parts.cacheId} ${this.layout.blockBytes} ${words.length}` +
      (words.length > 0 ? ` ${words.join(' ')}` : '');
  }

  stop(): Promise<void> {
    this.#stopping ??= this.#stop();
    return this.#stopping;
  }

  async #stop(): Promise<void> {
    await this.#inflight.idle();
    await this.#writeback.stop();
    if (this.#autocommitTimer !== null) clearTimeout(this.#autocommitTimer);
    this.#autocommitTimer = null;
    await this.commit().catch(() => undefined);
    this.#wakeFreeWaiters();
  }
}

/** Joins pieces: `done` once, with the first error, after `close` and every piece. */
function joinPieces(done: TargetDone): { piece: () => TargetDone; close: () => void } {
  let pending = 1;
  let first: DmIoError | null = null;
  const drop = (error: DmIoError | null): void => {
    first ??= error;
    pending -= 1;
    if (pending === 0) done(first);
  };
  return {
    piece: () => {
      pending += 1;
      return drop;
    },
    close: () => {
      if (pending === 1) queueMicrotask(() => drop(null));
      else drop(null);
    },
  };
}

function wakeAll(waiters: Array<() => void>, replace: (list: Array<() => void>) => void): void {
  replace([]);
  for (const wake of waiters) wake();
}
