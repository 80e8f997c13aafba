// Owns the `writecache` table line and opening a cache: `writecache s ORIGIN CACHE BLOCKSIZE
// #OPTS OPTS...` (dm-writecache's format; only `s`, SSD mode: persistent-memory mode needs DAX).
// BLOCKSIZE is in bytes, a power of two from 512 to 4096, at least both devices' logical block.
// Options (#OPTS counts words): start_sector N, high_watermark P, low_watermark P (high >= low),
// writeback_jobs N, autocommit_blocks N, autocommit_time MS, cleaner, pause_writeback MS.
// max_age, metadata_only and fua/nofua are refused as not supported. Opening reads the first
// block: all zeros formats the cache (metadata and entries first, the magic last, each flushed);
// otherwise magic, version and block size must match and the metadata is replayed.

import type { DmIoClient } from '../core/client.js';
import { dmIo } from '../core/dm-io.js';
import type { BlockDevice } from '../devices/block-device.js';
import { TableError } from '../errors.js';
import { parseNumberArg } from './table-text.js';
import type { TargetEnv, TargetLine, TargetPlan } from './target.js';
import { flushDevice } from './target-io.js';
import {
  freshImage, layoutFor, readSuperblock, replayImage, WRITECACHE_MAGIC, WRITECACHE_VERSION,
  writeSuperblock, type WritecacheLayout,
} from './writecache-format.js';
import { WritecacheTarget, type WritecacheOptions } from './writecache-target.js';
import { KIB, SECTOR_SIZE } from '../constants.js';
import { bytesToSectorsExact, sectorsToBytes } from '../units.js';

const OPTION_WORDS_MAX = 18;
/** Largest block size the kernel's writecache takes (4 KiB, its page), also the usual choice. */
const BLOCK_BYTES_MAX = 4 * KIB;

/** Parses a writecache line's arguments. */
export function parseWritecache(args: readonly string[], line: TargetLine): TargetPlan {
  const fail = (reason: string): never => {
    throw new TableError('DMIO_ERR_INVALID_TABLE', line.source, line.lineNumber, `writecache: ${reason}`);
  };
  const number = (text: string | undefined, what: string, max?: number): number => {
    if (text === undefined) return fail(`missing ${what}`);
    return parseNumberArg(text, what, line.source, line.lineNumber, max);
  };
  if (args.length < 5) fail('expected s ORIGIN CACHE BLOCKSIZE #OPTS [OPTS...]');
  const [mode, originArg, cacheArg, blockText, countText] = args as [string, string, string, string, string];
  if (mode === 'p') fail('persistent memory mode (p) is not supported; use s');
  if (mode !== 's') fail(`invalid mode ${JSON.stringify(mode)} (s or p)`);
  const blockBytes = number(blockText, 'block size', BLOCK_BYTES_MAX);
  if (blockBytes < SECTOR_SIZE || (blockBytes & (blockBytes - 1)) !== 0) {
    fail(`invalid block size ${blockBytes} (a power of two from ${SECTOR_SIZE} to ${BLOCK_BYTES_MAX})`);
  }
  const count = number(countText, 'option count', OPTION_WORDS_MAX);
  const words = args.slice(5);
  if (words.length !== count) fail(`option count ${count} does not match the ${words.length} words that follow`);
  const { options, startSector } = parseOptions(words, fail, number);
  return {
    deviceArgs: [originArg, cacheArg],
    extents: [{ device: 0, sector: 0, countSectors: line.lengthSectors }],
    create: (env) => openWritecache(env, blockBytes, startSector, options),
  };
}

function parseOptions(
  words: readonly string[], fail: (reason: string) => never,
  number: (text: string | undefined, what: string, max?: number) => number,
): { options: WritecacheOptions; startSector: number } {
  let startSector = 0;
  const values = {
    highWatermark: 50, lowWatermark: 45, writebackJobs: 1024, autocommitBlocks: 65536,
    autocommitTimeMs: 1000, cleaner: false, pauseWritebackMs: 3000,
  };
  const seen = new Set<string>();
  for (let index = 0; index < words.length; index += 1) {
    const word = words[index] as string;
    if (seen.has(word)) fail(`option ${word} repeated`);
    seen.add(word);
    const value = (what: string, max?: number): number => number(words[++index], `${word} ${what}`, max);
    switch (word) {
      case 'start_sector': startSector = value('N'); break;
      case 'high_watermark': values.highWatermark = value('percent', 100); break;
      case 'low_watermark': values.lowWatermark = value('percent', 100); break;
      case 'writeback_jobs': values.writebackJobs = Math.max(1, value('N', 0xffffffff)); break;
      case 'autocommit_blocks': values.autocommitBlocks = Math.max(1, value('N', 0xffffffff)); break;
      case 'autocommit_time': values.autocommitTimeMs = value('ms', 3_600_000); break;
      case 'pause_writeback': values.pauseWritebackMs = value('ms', 60_000); break;
      case 'cleaner': values.cleaner = true; break;
      case 'max_age': case 'metadata_only': case 'fua': case 'nofua':
        fail(`option ${word} is not supported`); break;
      default: fail(`unrecognised option ${JSON.stringify(word)}`);
    }
  }
  if (values.highWatermark < values.lowWatermark) fail('high_watermark must be at least low_watermark');
  return { options: { ...values, words: canonicalWords(words) }, startSector };
}

/** The options in dm-writecache's fixed order, as `dmsetup table` prints them. */
function canonicalWords(words: readonly string[]): string[] {
  const order = ['start_sector', 'high_watermark', 'low_watermark', 'writeback_jobs',
    'autocommit_blocks', 'autocommit_time', 'cleaner', 'pause_writeback'];
  const out: string[] = [];
  for (const name of order) {
    const at = words.indexOf(name);
    if (at < 0) continue;
    out.push(name);
    if (name !== 'cleaner') out.push(words[at + 1] as string);
  }
  return out;
}

async function openWritecache(
  env: TargetEnv, blockBytes: number, startSector: number, options: WritecacheOptions,
): Promise<WritecacheTarget> {
  const [origin, cache] = env.devices as [BlockDevice, BlockDevice];
  const fail = (reason: string): never => {
    throw new TableError('DMIO_ERR_INVALID_TABLE', env.source, env.lineNumber, `writecache: ${reason}`);
  };
  for (const device of [origin, cache]) {
    if (device.limits.logicalBlockBytes > blockBytes) {
      fail(`block size ${blockBytes} is below the ${device.limits.logicalBlockBytes}-byte logical block of ${device.name}`);
    }
  }
  if (startSector >= cache.sizeSectors) fail(`start_sector ${startSector} is beyond the cache device`);
  const layout = layoutFor(sectorsToBytes(cache.sizeSectors - startSector), blockBytes, startSector);
  if (layout.blockCount === 0) fail('invalid device size: the cache device holds no block');
  const loaded = await loadImage(env, cache, layout, fail);
  const target = new WritecacheTarget(env, {
    origin, cache, originId: env.deviceIds[0] as string, cacheId: env.deviceIds[1] as string,
    layout, image: loaded.image, seq: loaded.seq, live: loaded.live, free: loaded.free, options,
  });
  target.start();
  return target;
}

/** Reads (formatting a zeroed cache) and replays the metadata. */
async function loadImage(
  env: TargetEnv, cache: BlockDevice, layout: WritecacheLayout, fail: (reason: string) => never,
): Promise<{ image: Uint8Array; seq: number; live: ReturnType<typeof replayImage>['live']; free: number[] }> {
  const client = env.ioClient;
  const first = new Uint8Array(layout.blockBytes);
  await io(client, 'read', cache, layout.startSector, first, fail);
  const header = readSuperblock(first);
  if (header.magic === 0 && header.version === 0) {
    const image = freshImage(layout);
    if (!env.readOnly) {
      await io(client, 'write', cache, layout.startSector, image, fail);
      await flush(client, cache, fail);
      writeSuperblock(image, layout, 0, WRITECACHE_MAGIC);
      await io(client, 'write', cache, layout.startSector, image.subarray(0, layout.blockBytes), fail);
      await flush(client, cache, fail);
    }
    const free = Array.from({ length: layout.blockCount }, (_, index) => index);
    return { image, seq: 0, live: [], free };
  }
  if (header.magic !== WRITECACHE_MAGIC || header.version !== WRITECACHE_VERSION) {
    fail(`the cache device holds something else (magic 0x${header.magic.toString(16)}, version ` +
      `${header.version}); zero its first block to format it`);
  }
  if (header.blockBytes !== layout.blockBytes) {
    fail(`block size mismatch: the cache was formatted with ${header.blockBytes}`);
  }
  if (header.blockCount !== layout.blockCount) {
    fail(`memory area is too small or changed: formatted for ${header.blockCount} blocks, ` +
      `the device now holds ${layout.blockCount}`);
  }
  const image = new Uint8Array(layout.metadataBytes);
  await io(client, 'read', cache, layout.startSector, image, fail);
  const replay = replayImage(image, layout, { source: env.source, lineNumber: env.lineNumber });
  if (replay.changed && !env.readOnly) {
    await io(client, 'write', cache, layout.startSector, image, fail);
    await flush(client, cache, fail);
  }
  return { image, seq: header.seq, live: replay.live, free: replay.free };
}

/** Synchronous dm-io with VMA memory; a failure refuses the table. */
async function io(
  client: DmIoClient, op: 'read' | 'write', device: BlockDevice, sector: number, data: Uint8Array,
  fail: (reason: string) => never,
): Promise<void> {
  const result = await dmIo({ op, client, mem: { type: 'vm', data } },
    [{ device, sector, count: bytesToSectorsExact(data.length) }]);
  const error = result.errors[0];
  if (error !== undefined) fail(`metadata ${op} failed: ${error.message}`);
}

function flush(client: DmIoClient, device: BlockDevice, fail: (reason: string) => never): Promise<void> {
  return new Promise((resolve, reject) => flushDevice(client, device, (error) => {
    if (error === null) resolve();
    else {
      try {
        fail(`metadata flush failed: ${error.message}`);
      } catch (failure) {
        reject(failure);
      }
    }
  }));
}
