// Owns dm-writecache's SSD-mode metadata layout on the cache device (from byte
// `start_sector * 512`), all integers little-endian:
//   0x00 u32 magic 0x23489321   0x04 u32 version 1   0x08 u32 block size (bytes)   0x0C pad
//   0x10 u64 n_blocks            0x18 u64 seq_count   0x20..0x40 zero
//   0x40 + 16 i: u64 original sector (target-relative) of block i, u64 seq of block i
//   data at D = round_up(64 + 16 n, block size): block i at byte D + i * block size.
// An entry is committed iff its seq is below the superblock's seq; a free entry's seq is all
// ones. The superblock's seq is the commit point. This module sizes the layout, encodes and
// decodes it, and replays it: for each sector the committed entry with the highest seq wins
// (two equal seqs for one sector is corruption); everything else becomes free.

import { TableError } from '../errors.js';

export const WRITECACHE_MAGIC = 0x23489321;
export const WRITECACHE_VERSION = 1;
export const SUPERBLOCK_BYTES = 64;
export const ENTRY_BYTES = 16;
/** A free entry's seq (all ones), as stored. */
export const FREE_SEQ = 0xffffffffffffffffn;

/** The sizes of a cache's layout. */
export interface WritecacheLayout {
  readonly blockBytes: number;
  readonly blockCount: number;
  /** Bytes of metadata before the first data block (D). */
  readonly metadataBytes: number;
  /** First sector of the layout on the cache device. */
  readonly startSector: number;
}

/** Lays out `usableBytes` of cache: the most blocks whose metadata and data fit; 0 if none. */
export function layoutFor(usableBytes: number, blockBytes: number, startSector: number): WritecacheLayout {
  let blockCount = Math.floor(usableBytes / (blockBytes + ENTRY_BYTES));
  const metadataFor = (count: number): number =>
    Math.ceil((SUPERBLOCK_BYTES + ENTRY_BYTES * count) / blockBytes) * blockBytes;
  while (blockCount > 0 && metadataFor(blockCount) + blockCount * blockBytes > usableBytes) {
    blockCount -= 1;
  }
  return { blockBytes, blockCount, metadataBytes: metadataFor(blockCount), startSector };
}

/** What the superblock at the start of a metadata image says. */
export interface Superblock {
  readonly magic: number;
  readonly version: number;
  readonly blockBytes: number;
  readonly blockCount: number;
  readonly seq: number;
}

export function readSuperblock(image: Uint8Array): Superblock {
  const view = new DataView(image.buffer, image.byteOffset, image.length);
  return {
    magic: view.getUint32(0, true), version: view.getUint32(4, true),
    blockBytes: view.getUint32(8, true), blockCount: Number(view.getBigUint64(16, true)),
    seq: Number(view.getBigUint64(24, true)),
  };
}

/** Writes a superblock (magic 0 until the format is complete). */
export function writeSuperblock(image: Uint8Array, layout: WritecacheLayout, seq: number, magic: number): void {
  const view = new DataView(image.buffer, image.byteOffset, image.length);
  image.fill(0, 0, SUPERBLOCK_BYTES);
  view.setUint32(0, magic, true);
  view.setUint32(4, magic === 0 ? 0 : WRITECACHE_VERSION, true);
  view.setUint32(8, layout.blockBytes, true);
  view.setBigUint64(16, BigInt(layout.blockCount), true);
  view.setBigUint64(24, BigInt(seq), true);
}

/** Sets the seq field of the superblock only. */
export function setSuperblockSeq(image: Uint8Array, seq: number): void {
  new DataView(image.buffer, image.byteOffset, image.length).setBigUint64(24, BigInt(seq), true);
}

/** Entry `index`: its sector and seq (null for a free entry). */
export function readEntry(image: Uint8Array, index: number): { sector: number; seq: number | null } {
  const view = new DataView(image.buffer, image.byteOffset, image.length);
  const offset = SUPERBLOCK_BYTES + ENTRY_BYTES * index;
  const seq = view.getBigUint64(offset + 8, true);
  return { sector: Number(view.getBigUint64(offset, true)), seq: seq === FREE_SEQ ? null : Number(seq) };
}

/** Writes entry `index`; `seq` null frees it (the sector is kept, as the kernel does). */
export function writeEntry(image: Uint8Array, index: number, sector: number | null, seq: number | null): void {
  const view = new DataView(image.buffer, image.byteOffset, image.length);
  const offset = SUPERBLOCK_BYTES + ENTRY_BYTES * index;
  if (sector !== null) view.setBigUint64(offset, BigInt(sector), true);
  view.setBigUint64(offset + 8, seq === null ? FREE_SEQ : BigInt(seq), true);
}

/** Byte offset of the entry of block `index` in the image. */
export function entryOffset(index: number): number {
  return SUPERBLOCK_BYTES + ENTRY_BYTES * index;
}

/** A fresh metadata image: superblock (magic 0, seq 0) and every entry all ones. */
export function freshImage(layout: WritecacheLayout): Uint8Array {
  const image = new Uint8Array(layout.metadataBytes);
  image.fill(0xff, SUPERBLOCK_BYTES, SUPERBLOCK_BYTES + ENTRY_BYTES * layout.blockCount);
  writeSuperblock(image, layout, 0, 0);
  return image;
}

/** The outcome of replaying an image. */
export interface Replay {
  /** Committed entries, oldest seq first: [block index, target sector, seq]. */
  readonly live: Array<{ readonly index: number; readonly sector: number; readonly seq: number }>;
  /** Free block indexes, ascending. */
  readonly free: number[];
  /** Entries that were reset to free (uncommitted, or superseded): metadata must be rewritten. */
  readonly changed: boolean;
}

/**
 * Replays a metadata image in place: uncommitted entries become free (all ones), older
 * duplicates of a sector are freed, the newest committed entry of each sector stays.
 *
 * @throws TableError when two committed entries of one sector have the same seq.
 */
export function replayImage(image: Uint8Array, layout: WritecacheLayout, where: {
  source: string; lineNumber: number;
}): Replay {
  const { seq: superSeq } = readSuperblock(image);
  const newest = new Map<number, { index: number; seq: number }>();
  const free: number[] = [];
  let changed = false;
  for (let index = 0; index < layout.blockCount; index += 1) {
    const entry = readEntry(image, index);
    if (entry.seq === null || entry.seq >= superSeq) {
      if (entry.seq !== null) {
        writeEntry(image, index, null, null);
        changed = true;
      }
      free.push(index);
      continue;
    }
    const existing = newest.get(entry.sector);
    if (existing === undefined) {
      newest.set(entry.sector, { index, seq: entry.seq });
      continue;
    }
    if (existing.seq === entry.seq) {
      throw new TableError('DMIO_ERR_INVALID_TABLE', where.source, where.lineNumber,
        `writecache: two identical entries for sector ${entry.sector} (blocks ${existing.index} and ${index})`);
    }
    const loser = existing.seq > entry.seq ? index : existing.index;
    if (loser === existing.index) newest.set(entry.sector, { index, seq: entry.seq });
    writeEntry(image, loser, null, null);
    free.push(loser);
    changed = true;
  }
  free.sort((a, b) => a - b);
  const live = [...newest.entries()].map(([sector, { index, seq }]) => ({ index, sector, seq }))
    .sort((a, b) => a.seq - b.seq || a.index - b.index);
  return { live, free, changed };
}
