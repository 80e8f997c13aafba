// Test devices and small utilities shared by the dm-io suites. The devices here are real
// BlockDevice implementations (they delegate to a RAM device, so the engine runs for real); they
// only add what a test needs to observe: a device that cannot block, a device that insists on
// aligned memory like O_DIRECT, a device that counts requests in flight.

import {
  createRamDevice, dmIoClientCreate, type BlockDevice, type DeviceDone, type DeviceLimits,
  type DeviceRequest, type DmIoClient, type IoError, type RamDevice,
} from '../../src/index.js';
import { createFaultDevice, type FaultDevice, type FaultDeviceOptions } from '../../src/testing.js';
import { isAlignedView } from '../../src/memory/aligned.js';
import { requestError } from '../../src/devices/request-error.js';

/** A RAM device of `sizeSectors` wrapped in a fault device (no faults unless given). */
export function faultyRam(
  sizeSectors: number, options: FaultDeviceOptions = {}, name?: string,
): { ram: RamDevice; dev: FaultDevice } {
  const ram = createRamDevice({ sizeBytes: sizeSectors * 512, ...(name === undefined ? {} :
    { name: `ram(${name})` }) });
  const dev = createFaultDevice(ram, { ...(name === undefined ? {} : { name }), ...options });
  return { ram, dev };
}

/** The device under any fault or forwarding wrappers, so peeks stay out of their traces. */
export function innermost(device: BlockDevice): BlockDevice {
  let current = device;
  while ('inner' in current && typeof current.inner === 'object' && current.inner !== null) {
    current = current.inner as BlockDevice;
  }
  return current;
}

/**
 * Reads `countSectors` from `sector` of a device straight through its blocking path, below any
 * fault device (so the read is neither traced nor failed).
 */
export function peek(device: BlockDevice, sector: number, countSectors: number): Uint8Array {
  const data = new Uint8Array(countSectors * 512);
  const error = innermost(device).submitSync?.({
    op: 'read', sector, countSectors, segments: [data],
    flags: { sync: true, preflush: false, fua: false }, ioprio: 0,
  });
  if (error !== null && error !== undefined) throw error;
  return data;
}

/** Writes `data` at `sector` of a device straight through its blocking path, below faults. */
export function poke(device: BlockDevice, sector: number, data: Uint8Array): void {
  const error = innermost(device).submitSync?.({
    op: 'write', sector, countSectors: data.length / 512, segments: [data],
    flags: { sync: true, preflush: false, fua: false }, ioprio: 0,
  });
  if (error !== null && error !== undefined) throw error;
}

/** `lengthBytes` of a repeatable non-zero pattern derived from `seed`. */
export function pattern(lengthBytes: number, seed = 1): Uint8Array {
  const data = new Uint8Array(lengthBytes);
  let state = (seed * 2654435761) >>> 0 || 1;
  for (let index = 0; index < lengthBytes; index += 1) {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    state >>>= 0;
    data[index] = (state & 0xff) | 1;
  }
  return data;
}

/** Base for devices that forward to an inner device. */
abstract class ForwardingDevice implements BlockDevice {
  readonly kind = 'ram' as const;
  readonly inner: BlockDevice;
  readonly name: string;
  readonly limits: DeviceLimits;

  constructor(inner: BlockDevice, name: string, limits: Partial<DeviceLimits> = {}) {
    this.inner = inner;
    this.name = name;
    this.limits = { ...inner.limits, ...limits };
  }

  get sizeSectors(): number { return this.inner.sizeSectors; }
  get readOnly(): boolean { return this.inner.readOnly; }
  get closed(): boolean { return this.inner.closed; }
  abstract get canBlock(): boolean;
  abstract submit(request: DeviceRequest, done: DeviceDone): void;
  close(): Promise<void> { return this.inner.close(); }
}

/** A device that can only complete asynchronously, like NBD: no `submitSync`. */
export class NonBlockingDevice extends ForwardingDevice {
  get canBlock(): boolean { return false; }
  submit(request: DeviceRequest, done: DeviceDone): void {
    this.inner.submit(request, done);
  }
}

/**
 * A device that behaves like an O_DIRECT file: it declares `memoryAlignmentBytes` and fails
 * (EINVAL, as the kernel does) any request whose segments are not aligned pool or
 * `allocAligned` memory, or not whole logical blocks. `seen` counts the requests that reached it.
 */
export class DirectDevice extends ForwardingDevice {
  readonly alignmentBytes: number;
  seen = 0;
  misaligned = 0;

  constructor(inner: BlockDevice, alignmentBytes = 4096) {
    super(inner, `direct(${inner.name})`, { memoryAlignmentBytes: alignmentBytes });
    this.alignmentBytes = alignmentBytes;
  }

  get canBlock(): boolean { return this.inner.canBlock; }

  submit(request: DeviceRequest, done: DeviceDone): void {
    const error = this.#check(request);
    if (error !== null) {
      queueMicrotask(() => done(error));
      return;
    }
    this.inner.submit(request, done);
  }

  submitSync(request: DeviceRequest): IoError | null {
    const error = this.#check(request);
    if (error !== null) return error;
    const inner = this.inner.submitSync;
    if (inner === undefined) throw new Error('inner device cannot block');
    return inner.call(this.inner, request);
  }

  #check(request: DeviceRequest): IoError | null {
    this.seen += 1;
    for (const segment of request.segments) {
      if (!isAlignedView(segment, this.alignmentBytes) ||
          segment.length % this.limits.logicalBlockBytes !== 0) {
        this.misaligned += 1;
        return requestError(this, request, 'EINVAL');
      }
    }
    return null;
  }
}

/** Counts requests in flight on a device and remembers the peak. */
export class CountingDevice extends ForwardingDevice {
  inflight = 0;
  peak = 0;
  submitted = 0;

  get canBlock(): boolean { return this.inner.canBlock; }

  submit(request: DeviceRequest, done: DeviceDone): void {
    this.inflight += 1;
    this.submitted += 1;
    this.peak = Math.max(this.peak, this.inflight);
    this.inner.submit(request, (error) => {
      this.inflight -= 1;
      done(error);
    });
  }
}

/** A client with small, explicit limits (the defaults reserve 1 MiB). */
export function smallClient(reservedPages = 16, inflightMax = 16): DmIoClient {
  return dmIoClientCreate({ reservedPages, inflightMax });
}

/** Resolves after `ms` milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Captures what a synchronous throw carried, or fails when nothing was thrown. */
export function thrown(fn: () => unknown): { code?: unknown } & Error {
  try {
    fn();
  } catch (error) {
    return error as { code?: unknown } & Error;
  }
  throw new Error('expected a synchronous throw');
}
