// Owns the synthetic devices whose bytes are computed, not stored: `zero:` (reads zeros,
// read-only), `null:` (reads zeros, accepts and drops every write) and `random:` (read-only,
// deterministic pseudo-random bytes: the same seed and sector always give the same bytes,
// whatever the read's offset or length). `zero:` and `null:` are one hole that reads as zeros;
// `random:` is all data.

import assert from '../assert.js';
import { PAGE_SIZE, SECTOR_SIZE } from '../constants.js';
import { validateIntegerInRange } from '../validate.js';
import type { DeviceLimits } from './block-device.js';
import { DATA, type ExtentList, HOLE_ZERO } from './extent-list.js';
import { MemoryBackedDevice, memoryDeviceLimits } from './memory-backed-device.js';
import { requireWholeSectors } from './ram-device.js';

/** Largest synthetic device (1 PiB): nothing is stored, so only sector arithmetic bounds it. */
const PATTERN_DEVICE_BYTES_MAX = 2 ** 50;

/** Options shared by the synthetic devices. */
export interface PatternDeviceOptions {
  /** Size in bytes: a multiple of 512. */
  sizeBytes: number;
  /** Name in messages (default the spec, e.g. `zero:1048576`). */
  name?: string;
  /** Limit overrides. */
  limits?: Partial<DeviceLimits>;
}

/** Reads zeros. `null:` drops writes; `zero:` is read-only. */
export class ZeroDevice extends MemoryBackedDevice {
  readonly kind: 'zero' | 'null';

  constructor(kind: 'zero' | 'null', name: string, sizeSectors: number, limits: DeviceLimits) {
    super(name, sizeSectors, kind === 'zero', limits);
    this.kind = kind;
  }

  protected readSegments(_offsetBytes: number, segments: readonly Uint8Array[]): void {
    for (const segment of segments) segment.fill(0);
  }

  protected writeSegments(): void {
    assert.ok(this.kind === 'null', 'zero: is read-only');
  }

  protected clearRange(): void {
    assert.ok(this.kind === 'null', 'zero: is read-only');
  }

  /** Nothing is stored: the whole range is one hole that reads as zeros. */
  protected fillExtents(list: ExtentList): void {
    list.add(list.endSector, HOLE_ZERO);
  }
}

/** Read-only deterministic pseudo-random bytes, generated page by page from a seed. */
export class RandomDevice extends MemoryBackedDevice {
  readonly kind = 'random' as const;
  /** The seed the bytes derive from. */
  readonly seed: number;
  readonly #page = new Uint8Array(PAGE_SIZE);
  readonly #words = new Uint32Array(this.#page.buffer);
  #pageIndex = -1;

  constructor(name: string, sizeSectors: number, seed: number, limits: DeviceLimits) {
    super(name, sizeSectors, true, limits);
    this.seed = seed;
  }

  protected readSegments(offsetBytes: number, segments: readonly Uint8Array[]): void {
    let position = offsetBytes;
    for (const segment of segments) {
      let doneBytes = 0;
      while (doneBytes < segment.length) {
        const pageIndex = Math.floor(position / PAGE_SIZE);
        const pageOffset = position % PAGE_SIZE;
        const pieceBytes = Math.min(PAGE_SIZE - pageOffset, segment.length - doneBytes);
        this.#generate(pageIndex);
        segment.set(this.#page.subarray(pageOffset, pageOffset + pieceBytes), doneBytes);
        doneBytes += pieceBytes;
        position += pieceBytes;
      }
    }
  }

  protected writeSegments(): void {
    assert.fail('random: is read-only');
  }

  protected clearRange(): void {
    assert.fail('random: is read-only');
  }

  /** Every byte is generated data. */
  protected fillExtents(list: ExtentList): void {
    list.add(list.endSector, DATA);
  }

  /** Fills the scratch page with page `pageIndex`'s bytes (xorshift32 seeded per page). */
  #generate(pageIndex: number): void {
    if (pageIndex === this.#pageIndex) return;
    this.#pageIndex = pageIndex;
    let state = mix32(this.seed ^ mix32(pageIndex) ^ mix32(Math.floor(pageIndex / 2 ** 32)));
    if (state === 0) state = 0x9e3779b9;
    const words = this.#words;
    for (let index = 0; index < words.length; index += 1) {
      state ^= state << 13;
      state ^= state >>> 17;
      state ^= state << 5;
      words[index] = state >>> 0;
    }
  }
}

/** A 32-bit integer hash (murmur3's finaliser) that spreads consecutive inputs apart. */
function mix32(value: number): number {
  let hash = value >>> 0;
  hash = Math.imul(hash ^ (hash >>> 16), 0x85ebca6b);
  hash = Math.imul(hash ^ (hash >>> 13), 0xc2b2ae35);
  return (hash ^ (hash >>> 16)) >>> 0;
}

function validatedSectors(options: PatternDeviceOptions): number {
  const sizeBytes = validateIntegerInRange(options.sizeBytes, 'options.sizeBytes', SECTOR_SIZE,
    PATTERN_DEVICE_BYTES_MAX);
  requireWholeSectors(sizeBytes);
  return sizeBytes / SECTOR_SIZE;
}

/** Creates a `zero:` device (reads zeros, read-only) or a `null:` device (drops writes). */
export function createZeroDevice(kind: 'zero' | 'null', options: PatternDeviceOptions): ZeroDevice {
  const sizeSectors = validatedSectors(options);
  const name = options.name ?? `${kind}:${options.sizeBytes}`;
  return new ZeroDevice(kind, name, sizeSectors, memoryDeviceLimits(name, options.limits));
}

/** Creates a `random:` device: read-only, the same bytes for the same seed and sector. */
export function createRandomDevice(options: PatternDeviceOptions & { seed?: number }): RandomDevice {
  const sizeSectors = validatedSectors(options);
  const seed = validateIntegerInRange(options.seed ?? 0, 'options.seed', 0, 2 ** 32 - 1);
  const name = options.name ?? `random:${options.sizeBytes},seed=${seed}`;
  return new RandomDevice(name, sizeSectors, seed, memoryDeviceLimits(name, options.limits));
}

