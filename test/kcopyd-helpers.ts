// Owns test fixtures for the kcopyd suites: RAM devices filled with known bytes, real image
// files (a random source and destinations, closed after the test), a probe device that records
// in-flight requests and whether code runs inside a device completion, a serial device on a
// virtual clock for throttle tests, and byte readers.

import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import type {
  BlockDevice, DeviceDone, DeviceLimits, DeviceRequest,
} from '../src/devices/block-device.js';
import { openFileDevice, type FileDevice } from '../src/devices/file-device.js';
import { createRamDevice, type RamDevice } from '../src/devices/ram-device.js';
import { tempDir } from './helpers/tmp.js';

/** A RAM device of `sectors` sectors whose bytes are a pattern of `seed` (never all zero). */
export function patternDevice(
  sectors: number, seed: number, limits: Partial<DeviceLimits> = {},
): RamDevice {
  const device = createRamDevice({ sizeBytes: sectors * 512, name: `src${seed}`, limits });
  const bytes = new Uint8Array(sectors * 512);
  for (let index = 0; index < bytes.length; index += 1) {
    bytes[index] = ((index * 7 + seed * 13 + (index >> 9)) % 251) + 1;
  }
  assert.equal(device.submitSync(request('write', 0, sectors, [bytes])), null);
  return device;
}

/** A temporary directory holding `source.img`: `sectors` random sectors, open read-only. */
export interface SourceFile {
  readonly directory: string;
  readonly sourceBytes: Buffer;
  readonly source: FileDevice;
}

/** Makes a `SourceFile` for test `t`; the directory and device go when the test ends. */
export async function sourceFile(t: TestContext, sectors: number): Promise<SourceFile> {
  const directory = await tempDir(t);
  const sourceBytes = randomBytes(sectors * 512);
  await writeFile(join(directory, 'source.img'), sourceBytes);
  const source = await openFileDevice(join(directory, 'source.img'), { readOnly: true });
  t.after(() => source.close());
  return { directory, sourceBytes, source };
}

/** A new image file of `sectors` sectors in `directory`, closed when test `t` ends. */
export async function destFile(
  t: TestContext, directory: string, name: string, sectors: number, direct = false,
): Promise<FileDevice> {
  const device = await openFileDevice(join(directory, name),
    { create: { sizeBytes: sectors * 512 }, direct });
  t.after(() => device.close());
  return device;
}

/** An empty RAM device. */
export function ramDevice(sectors: number, name: string, limits: Partial<DeviceLimits> = {}): RamDevice {
  return createRamDevice({ sizeBytes: sectors * 512, name, limits });
}

/** A plain device request. */
export function request(
  op: DeviceRequest['op'], sector: number, countSectors: number, segments: Uint8Array[] = [],
): DeviceRequest {
  return {
    op, sector, countSectors, segments, ioprio: 0,
    flags: { sync: false, preflush: false, fua: false },
  };
}

/** Reads `countSectors` from `device` at `sector`, blocking. */
export function readBytes(device: BlockDevice, sector: number, countSectors: number): Uint8Array {
  const bytes = new Uint8Array(countSectors * 512);
  assert.ok(device.submitSync !== undefined);
  assert.equal(device.submitSync(request('read', sector, countSectors, [bytes])), null);
  return bytes;
}

/** sha256 of a device range. */
export function hashOf(device: BlockDevice, sector: number, countSectors: number): string {
  return createHash('sha256').update(readBytes(device, sector, countSectors)).digest('hex');
}

/** Process-wide flag: true while a probe device is inside a completion it delivers. */
export const completionState = { inside: false };

/** One request a probe saw. */
export interface ProbeEntry {
  readonly op: DeviceRequest['op'];
  readonly sector: number;
  readonly countSectors: number;
}

/**
 * Wraps a device: records every request, counts requests in flight (and the maximum), delays
 * completions by `delayMs(request)` real milliseconds, and marks the time it spends inside
 * the `done` it delivers, so tests can prove callbacks never run there.
 */
export class ProbeDevice implements BlockDevice {
  readonly kind = 'fault' as const;
  readonly log: ProbeEntry[] = [];
  inflight = 0;
  inflightMax = 0;
  readonly canBlock: boolean;
  readonly #inner: BlockDevice;
  readonly #delayMs: (request: DeviceRequest) => number;

  constructor(inner: BlockDevice, delayMs: (request: DeviceRequest) => number = () => 0) {
    this.#inner = inner;
    this.#delayMs = delayMs;
    this.canBlock = inner.canBlock;
  }

  /** The device this probe wraps (to read or fill it without logging). */
  get inner(): BlockDevice { return this.#inner; }
  get name(): string { return `probe(${this.#inner.name})`; }
  get sizeSectors(): number { return this.#inner.sizeSectors; }
  get readOnly(): boolean { return this.#inner.readOnly; }
  get limits(): DeviceLimits { return this.#inner.limits; }
  get closed(): boolean { return this.#inner.closed; }

  submit(req: DeviceRequest, done: DeviceDone): void {
    this.log.push({ op: req.op, sector: req.sector, countSectors: req.countSectors });
    this.inflight += 1;
    this.inflightMax = Math.max(this.inflightMax, this.inflight);
    const delayMs = this.#delayMs(req);
    this.#inner.submit(req, (error) => {
      const finish = (): void => {
        this.inflight -= 1;
        completionState.inside = true;
        try {
          done(error);
        } finally {
          completionState.inside = false;
        }
      };
      if (delayMs > 0) setTimeout(finish, delayMs);
      else finish();
    });
  }

  submitSync(req: DeviceRequest): ReturnType<NonNullable<BlockDevice['submitSync']>> {
    return this.#inner.submitSync!(req);
  }

  close(): Promise<void> { return this.#inner.close(); }
}

/**
 * Virtual time for throttle tests: a small discrete-event clock. `at(ms, fn)` schedules an
 * event; events run one per event-loop turn, earliest first, moving `nowMs` to their time, so
 * device completions and throttle sleeps interleave as they would in real time, only faster.
 */
export class VirtualClock {
  nowMs = 0;
  sleeps = 0;
  #events: Array<{ atMs: number; order: number; fn: () => void }> = [];
  #order = 0;
  #pumping = false;
  readonly now = (): number => this.nowMs;
  readonly sleep = (ms: number): Promise<void> => {
    this.sleeps += 1;
    return new Promise((resolve) => this.at(this.nowMs + ms, resolve));
  };

  /** Runs `fn` at virtual time `atMs`. */
  at(atMs: number, fn: () => void): void {
    this.#events.push({ atMs, order: this.#order++, fn });
    this.#events.sort((a, b) => a.atMs - b.atMs || a.order - b.order);
    this.#kick();
  }

  #kick(): void {
    if (this.#pumping) return;
    this.#pumping = true;
    setImmediate(() => this.#step());
  }

  #step(): void {
    this.#pumping = false;
    const event = this.#events.shift();
    if (event === undefined) return;
    this.nowMs = Math.max(this.nowMs, event.atMs);
    event.fn();
    if (this.#events.length > 0) this.#kick();
  }
}

/**
 * A device that serves one request at a time on a virtual clock: each request takes
 * `serviceMs` after the previous one ends; `busyMs` adds the service times up.
 */
export class SerialDevice implements BlockDevice {
  readonly kind = 'ram' as const;
  readonly name: string;
  readonly sizeSectors: number;
  readonly readOnly = false;
  readonly closed = false;
  readonly canBlock = false;
  readonly limits: DeviceLimits;
  busyMs = 0;
  requests = 0;
  readonly #clock: VirtualClock;
  readonly #serviceMs: number;
  #freeAtMs = 0;

  constructor(name: string, sizeSectors: number, clock: VirtualClock, serviceMs: number) {
    this.name = name;
    this.sizeSectors = sizeSectors;
    this.#clock = clock;
    this.#serviceMs = serviceMs;
    this.limits = ramDevice(8, 'limits').limits;
  }

  submit(_req: DeviceRequest, done: DeviceDone): void {
    this.requests += 1;
    const startMs = Math.max(this.#clock.nowMs, this.#freeAtMs);
    this.#freeAtMs = startMs + this.#serviceMs;
    this.busyMs += this.#serviceMs;
    this.#clock.at(this.#freeAtMs, () => done(null));
  }

  close(): Promise<void> { return Promise.resolve(); }
}
