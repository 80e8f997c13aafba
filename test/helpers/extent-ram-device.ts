// Owns a test device that implements `BlockDevice.extents` over a RAM device: it watches the
// requests it forwards and keeps a state per 4 KiB page — never written (hole and zero),
// written (data), zeroed by write-zeroes (zero, still allocated), discarded (hole and zero
// again) — and answers extents from that map, asynchronously, at most `extentsPerAnswerMax`
// of them. It can also be told to fail every query. The server tests export it, so what the
// server sends can be checked against what the device said.

import { EXTENTS_PER_QUERY_MAX } from '../../src/devices/block-device.js';
import type {
  BlockDevice, DeviceDone, DeviceExtent, DeviceLimits, DeviceRequest, ExtentsDone,
} from '../../src/devices/block-device.js';
import { createRamDevice, type RamDevice } from '../../src/devices/ram-device.js';
import { IoError } from '../../src/errors.js';

/** Sectors of one tracked page (4 KiB). */
export const PAGE_SECTORS = 8;

/** The state of one page; the value is NBD's base:allocation type (bit 0 hole, bit 1 zero). */
export const PAGE_UNWRITTEN = 3;
export const PAGE_DATA = 0;
export const PAGE_ZEROED = 2;

/** Options of an `ExtentRamDevice`. */
export interface ExtentRamDeviceOptions {
  readonly sizeBytes: number;
  readonly name?: string;
  /** Most extents in one answer (default EXTENTS_PER_QUERY_MAX). */
  readonly extentsPerAnswerMax?: number;
}

/** A RAM device that reports which pages were written. */
export class ExtentRamDevice implements BlockDevice {
  readonly kind = 'ram' as const;
  readonly #inner: RamDevice;
  readonly #pages: Uint8Array;
  readonly #extentsPerAnswerMax: number;
  /** Set to an errno to fail every `extents` query with it. */
  failExtents: string | null = null;
  /** `extents` calls so far. */
  queries = 0;

  constructor(options: ExtentRamDeviceOptions) {
    this.#inner = createRamDevice({ sizeBytes: options.sizeBytes,
      ...(options.name === undefined ? {} : { name: options.name }) });
    this.#pages = new Uint8Array(Math.ceil(this.#inner.sizeSectors / PAGE_SECTORS))
      .fill(PAGE_UNWRITTEN);
    this.#extentsPerAnswerMax = options.extentsPerAnswerMax ?? EXTENTS_PER_QUERY_MAX;
  }

  get name(): string { return this.#inner.name; }
  get sizeSectors(): number { return this.#inner.sizeSectors; }
  get readOnly(): boolean { return this.#inner.readOnly; }
  get limits(): DeviceLimits { return this.#inner.limits; }
  get closed(): boolean { return this.#inner.closed; }
  get canBlock(): boolean { return false; }

  /** The state of the page holding `sector`. */
  pageState(sector: number): number {
    return this.#pages[Math.floor(sector / PAGE_SECTORS)] ?? PAGE_UNWRITTEN;
  }

  submit(request: DeviceRequest, done: DeviceDone): void {
    this.#inner.submit(request, (error) => {
      if (error === null) this.#track(request);
      done(error);
    });
  }

  extents(sector: number, countSectors: number, done: ExtentsDone): void {
    this.queries += 1;
    const failure = this.failExtents;
    if (failure !== null) {
      const error = new IoError({ errno: failure, syscall: 'extents', device: this.name,
        sector, countSectors });
      setImmediate(done, error, []);
      return;
    }
    setImmediate(done, null, this.#describe(sector, countSectors));
  }

  close(): Promise<void> {
    return this.#inner.close();
  }

  #track(request: DeviceRequest): void {
    if (request.countSectors === 0 || request.op === 'read') return;
    const state = request.op === 'write' ? PAGE_DATA :
      request.op === 'write-zeroes' ? PAGE_ZEROED : PAGE_UNWRITTEN;
    const first = Math.floor(request.sector / PAGE_SECTORS);
    const end = Math.ceil((request.sector + request.countSectors) / PAGE_SECTORS);
    for (let page = first; page < end; page += 1) {
      const whole = page * PAGE_SECTORS >= request.sector &&
        (page + 1) * PAGE_SECTORS <= request.sector + request.countSectors;
      // A page zeroed or discarded only in part is data: the rest is not known to be zero.
      this.#pages[page] = whole ? state : PAGE_DATA;
    }
  }

  #describe(sector: number, countSectors: number): DeviceExtent[] {
    const extents: DeviceExtent[] = [];
    const end = sector + countSectors;
    let at = sector;
    while (at < end && extents.length < this.#extentsPerAnswerMax) {
      const state = this.pageState(at);
      let next = Math.min(end, (Math.floor(at / PAGE_SECTORS) + 1) * PAGE_SECTORS);
      while (next < end && this.pageState(next) === state) {
        next = Math.min(end, next + PAGE_SECTORS);
      }
      extents.push({ sector: at, countSectors: next - at, hole: (state & 1) !== 0,
        zero: (state & 2) !== 0 });
      at = next;
    }
    return extents;
  }
}
