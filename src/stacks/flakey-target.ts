// Owns the `flakey` target: `flakey DEV OFFSET UP DOWN [N FEATURE...]` behaves like linear for
// UP seconds, then for DOWN seconds misbehaves as its features say, and repeats, counted from
// when the table was opened. Features (N counts words): `error_reads`, `drop_writes`,
// `error_writes`, `corrupt_bio_byte BYTE r|w VALUE FLAGS`, `random_read_corrupt P`,
// `random_write_corrupt P` (P per 1000000000). With no features, reads and writes both fail
// while down (newest kernel). Writes here are everything of write direction: writes, discards,
// write-zeroes and empty flushes. A corrupted write is written from a copy: the caller's
// memory is never changed.
//
// FLAGS of corrupt_bio_byte is our own bit map of the request flags (the kernel's bio flag bits
// differ between versions): 1 = sync, 2 = preflush, 4 = fua; a piece matches when all of
// FLAGS's bits are set (0 matches every piece).

import type { DmIoClient } from '../core/client.js';
import type { BlockDevice, RequestFlags } from '../devices/block-device.js';
import { TableError } from '../errors.js';
import { parseNumberArg } from './table-text.js';
import type {
  Target, TargetDone, TargetEnv, TargetIo, TargetLine, TargetPlan,
} from './target.js';
import {
  completeLater, copySegments, flushDevice, ioToDevice, targetError,
} from './target-io.js';
import { sectorsToBytes } from '../units.js';

/** A fixed-byte corruption: byte `byteNumber` (1-based) of matching pieces becomes `value`. */
interface CorruptByte {
  readonly byteNumber: number;
  readonly direction: 'r' | 'w';
  readonly value: number;
  readonly flagBits: number;
}

/** The parsed features of a flakey target. */
export interface FlakeyFeatures {
  readonly errorReads: boolean;
  readonly dropWrites: boolean;
  readonly errorWrites: boolean;
  readonly corrupt: CorruptByte | null;
  /** Probability per 1e9 of one random byte in a down-phase read; 0 = off. */
  readonly randomReadCorrupt: number;
  readonly randomWriteCorrupt: number;
  /** Words printed by `table()`. */
  readonly words: readonly string[];
}

const PROBABILITY_SCALE = 1_000_000_000;
const UINT32_MAX = 0xffffffff;

/** A flakey target. */
export class FlakeyTarget implements Target {
  readonly type = 'flakey';
  readonly maxIoSectors = 0;
  readonly devices: readonly BlockDevice[];
  readonly limits = {};
  readonly #client: DmIoClient;
  readonly #device: BlockDevice;
  readonly #deviceId: string;
  readonly #offsetSectors: number;
  readonly #upSeconds: number;
  readonly #downSeconds: number;
  readonly #features: FlakeyFeatures;
  readonly #now: () => number;
  readonly #startMs: number;

  constructor(env: TargetEnv, offsetSectors: number, upSeconds: number, downSeconds: number,
    features: FlakeyFeatures) {
    this.#client = env.ioClient;
    this.#device = env.devices[0] as BlockDevice;
    this.#deviceId = env.deviceIds[0] as string;
    this.devices = [this.#device];
    this.#offsetSectors = offsetSectors;
    this.#upSeconds = upSeconds;
    this.#downSeconds = downSeconds;
    this.#features = features;
    this.#now = env.now;
    this.#startMs = env.now();
  }

  /** True while the device is in its down interval. */
  get down(): boolean {
    const elapsedSeconds = Math.floor((this.#now() - this.#startMs) / 1000);
    return elapsedSeconds % (this.#upSeconds + this.#downSeconds) >= this.#upSeconds;
  }

  map(io: TargetIo, done: TargetDone): void {
    const sector = this.#offsetSectors + io.sector;
    if (!this.down) {
      ioToDevice(this.#client, this.#device, sector, io, done);
      return;
    }
    if (io.op === 'read') this.#downRead(io, sector, done);
    else this.#downWrite(io, sector, done);
  }

  flush(done: TargetDone): void {
    if (this.down && this.#features.dropWrites) completeLater(done, null);
    else if (this.down && this.#features.errorWrites) completeLater(done, targetError(this.#deviceId, null));
    else flushDevice(this.#client, this.#device, done);
  }

  #downRead(io: TargetIo, sector: number, done: TargetDone): void {
    const features = this.#features;
    if (features.errorReads) {
      completeLater(done, targetError(this.#deviceId, io));
      return;
    }
    ioToDevice(this.#client, this.#device, sector, io, (error) => {
      if (error === null) {
        if (features.corrupt?.direction === 'r') corruptFixed(io.segments, io.flags, features.corrupt);
        if (chance(features.randomReadCorrupt)) corruptRandom(io.segments);
      }
      done(error);
    });
  }

  #downWrite(io: TargetIo, sector: number, done: TargetDone): void {
    const features = this.#features;
    if (features.dropWrites) {
      completeLater(done, null);
      return;
    }
    if (features.errorWrites) {
      completeLater(done, targetError(this.#deviceId, io));
      return;
    }
    const fixed = features.corrupt?.direction === 'w' ? features.corrupt : null;
    const random = chance(features.randomWriteCorrupt);
    if (io.op !== 'write' || (fixed === null && !random)) {
      ioToDevice(this.#client, this.#device, sector, io, done);
      return;
    }
    const copy = new Uint8Array(sectorsToBytes(io.countSectors));
    copySegments(io.segments, copy);
    if (fixed !== null) corruptFixed([copy], io.flags, fixed);
    if (random) corruptRandom([copy]);
    ioToDevice(this.#client, this.#device, sector, { ...io, segments: [copy] }, done);
  }

  status(): string {
    return '';
  }

  table(): string {
    const words = this.#features.words;
    return `${this.#deviceId} ${this.#offsetSectors} ${this.#upSeconds} ${this.#downSeconds} ` +
      `${words.length}${words.length > 0 ? ' ' : ''}${words.join(' ')}`;
  }

  stop(): Promise<void> {
    return Promise.resolve();
  }
}

function flagBits(flags: RequestFlags): number {
  return (flags.sync ? 1 : 0) | (flags.preflush ? 2 : 0) | (flags.fua ? 4 : 0);
}

function corruptFixed(segments: readonly Uint8Array[], flags: RequestFlags, corrupt: CorruptByte): void {
  if ((flagBits(flags) & corrupt.flagBits) !== corrupt.flagBits) return;
  let index = corrupt.byteNumber - 1;
  for (const segment of segments) {
    if (index < segment.length) {
      segment[index] = corrupt.value;
      return;
    }
    index -= segment.length;
  }
}

function corruptRandom(segments: readonly Uint8Array[]): void {
  let totalBytes = 0;
  for (const segment of segments) totalBytes += segment.length;
  if (totalBytes === 0) return;
  let index = Math.floor(Math.random() * totalBytes);
  for (const segment of segments) {
    if (index < segment.length) {
      segment[index] = Math.floor(Math.random() * 256);
      return;
    }
    index -= segment.length;
  }
}

function chance(perBillion: number): boolean {
  return perBillion > 0 && Math.random() * PROBABILITY_SCALE < perBillion;
}

/** Parses `DEV OFFSET UP DOWN [N FEATURE...]`. */
export function parseFlakey(args: readonly string[], line: TargetLine): TargetPlan {
  const fail = (reason: string): never => {
    throw new TableError('DMIO_ERR_INVALID_TABLE', line.source, line.lineNumber, `flakey: ${reason}`);
  };
  if (args.length < 4) fail('invalid argument count (expected DEV OFFSET UP DOWN [N FEATURES])');
  const number = (index: number, what: string, max?: number): number =>
    parseNumberArg(args[index] as string, what, line.source, line.lineNumber, max);
  const offsetSectors = number(1, 'flakey device sector');
  const upSeconds = number(2, 'up interval', UINT32_MAX);
  const downSeconds = number(3, 'down interval', UINT32_MAX);
  if (upSeconds + downSeconds === 0) fail('total (up + down) interval is zero');
  if (upSeconds + downSeconds > UINT32_MAX) fail('interval overflow');
  const features = parseFeatures(args.slice(4), fail, number);
  return {
    deviceArgs: [args[0] as string],
    extents: [{ device: 0, sector: offsetSectors, countSectors: line.lengthSectors }],
    create: (env) => new FlakeyTarget(env, offsetSectors, upSeconds, downSeconds, features),
  };
}

function parseFeatures(
  words: readonly string[], fail: (reason: string) => never,
  number: (index: number, what: string, max?: number) => number,
): FlakeyFeatures {
  if (words.length === 0) return defaultFeatures();
  const count = number(4, 'feature count', 11);
  if (words.length - 1 !== count) {
    fail(`feature count ${count} does not match the ${words.length - 1} words that follow`);
  }
  if (count === 0) return defaultFeatures();
  const seen = new Set<string>();
  let corrupt: CorruptByte | null = null;
  let randomRead = 0;
  let randomWrite = 0;
  for (let index = 1; index < words.length; index += 1) {
    const word = words[index] as string;
    if (seen.has(word)) fail(`feature ${word} duplicated`);
    seen.add(word);
    const argIndex = 4 + index;
    const need = (extra: number): void => {
      if (index + extra >= words.length) fail(`${word} needs ${extra} more words`);
    };
    if (word === 'error_reads' || word === 'drop_writes' || word === 'error_writes') continue;
    if (word === 'corrupt_bio_byte') {
      need(4);
      const direction = words[index + 2];
      if (direction !== 'r' && direction !== 'w') fail(`corrupt_bio_byte direction must be r or w`);
      const byteNumber = number(argIndex + 1, 'corrupt_bio_byte byte', UINT32_MAX);
      if (byteNumber < 1) fail('corrupt_bio_byte byte must be at least 1');
      corrupt = { byteNumber, direction: direction as 'r' | 'w',
        value: number(argIndex + 3, 'corrupt_bio_byte value', 255),
        flagBits: number(argIndex + 4, 'corrupt_bio_byte flags', UINT32_MAX) };
      index += 4;
    } else if (word === 'random_read_corrupt' || word === 'random_write_corrupt') {
      need(1);
      const probability = number(argIndex + 1, `${word} probability`, PROBABILITY_SCALE);
      if (word === 'random_read_corrupt') randomRead = probability;
      else randomWrite = probability;
      index += 1;
    } else {
      fail(`unrecognised feature ${JSON.stringify(word)}`);
    }
  }
  return checkConflicts({
    errorReads: seen.has('error_reads'), dropWrites: seen.has('drop_writes'),
    errorWrites: seen.has('error_writes'), corrupt, randomReadCorrupt: randomRead,
    randomWriteCorrupt: randomWrite, words: [],
  }, fail);
}

function defaultFeatures(): FlakeyFeatures {
  return { errorReads: true, dropWrites: false, errorWrites: true, corrupt: null,
    randomReadCorrupt: 0, randomWriteCorrupt: 0, words: ['error_reads', 'error_writes'] };
}

function checkConflicts(features: FlakeyFeatures, fail: (reason: string) => never): FlakeyFeatures {
  const writeCorrupt = features.corrupt?.direction === 'w' || features.randomWriteCorrupt > 0;
  const readCorrupt = features.corrupt?.direction === 'r' || features.randomReadCorrupt > 0;
  if (features.dropWrites && features.errorWrites) fail('drop_writes is incompatible with error_writes');
  if ((features.dropWrites || features.errorWrites) && writeCorrupt) {
    fail('drop_writes and error_writes are incompatible with write corruption');
  }
  if (features.errorReads && readCorrupt) fail('error_reads is incompatible with read corruption');
  const words: string[] = [];
  if (features.errorReads) words.push('error_reads');
  if (features.dropWrites) words.push('drop_writes');
  if (features.errorWrites) words.push('error_writes');
  const corrupt = features.corrupt;
  if (corrupt !== null) {
    words.push('corrupt_bio_byte', String(corrupt.byteNumber), corrupt.direction,
      String(corrupt.value), String(corrupt.flagBits));
  }
  if (features.randomReadCorrupt > 0) words.push('random_read_corrupt', String(features.randomReadCorrupt));
  if (features.randomWriteCorrupt > 0) words.push('random_write_corrupt', String(features.randomWriteCorrupt));
  return { ...features, words };
}
