// Owns small helpers for tests that submit DeviceRequests straight to a BlockDevice: request
// builders, a promise wrapper that fails the test if `done` is not called within a deadline
// (proving nothing hangs), and a check that `done` never runs synchronously.

import type { IoError } from '../../src/errors.js';
import type {
  BlockDevice, DeviceOp, DeviceRequest, RequestFlags,
} from '../../src/devices/block-device.js';

/** Flags with nothing set. */
export const NO_FLAGS: RequestFlags = { sync: false, preflush: false, fua: false };

/** Builds a request; `segments` default to none. */
export function request(
  op: DeviceOp,
  sector: number,
  countSectors: number,
  segments: readonly Uint8Array[] = [],
  flags: Partial<RequestFlags> = {},
): DeviceRequest {
  return { op, sector, countSectors, segments, flags: { ...NO_FLAGS, ...flags }, ioprio: 0 };
}

/** A pure flush (write of 0 sectors with preflush). */
export function flushRequest(): DeviceRequest {
  return request('write', 0, 0, [], { preflush: true });
}

/**
 * Submits and resolves with the completion error (null on success). Rejects if `done` runs
 * synchronously, twice, or not within `timeoutMs`.
 */
export function submit(device: BlockDevice, req: DeviceRequest, timeoutMs = 10000): Promise<IoError | null> {
  return new Promise((resolve, reject) => {
    let returned = false;
    let calls = 0;
    const timer = setTimeout(() => reject(new Error(`request not settled within ${timeoutMs} ms`)),
      timeoutMs);
    device.submit(req, (error) => {
      calls += 1;
      if (!returned) reject(new Error('done ran synchronously'));
      if (calls > 1) reject(new Error('done ran twice'));
      clearTimeout(timer);
      resolve(error);
    });
    returned = true;
  });
}

/** Bytes where each 8-byte word holds `seed` XOR its absolute offset: easy to verify. */
export function pattern(offsetBytes: number, lengthBytes: number, seed = 0): Uint8Array {
  const out = new Uint8Array(lengthBytes);
  const view = new DataView(out.buffer);
  for (let index = 0; index + 8 <= lengthBytes; index += 8) {
    view.setUint32(index, (offsetBytes + index) / 0x100000000 >>> 0);
    view.setUint32(index + 4, ((offsetBytes + index) ^ seed) >>> 0);
  }
  return out;
}

/** Splits `buffer` into segments of the given byte lengths (the rest in the last one). */
export function split(buffer: Uint8Array, ...lengthsBytes: number[]): Uint8Array[] {
  const out: Uint8Array[] = [];
  let position = 0;
  for (const lengthBytes of lengthsBytes) {
    out.push(buffer.subarray(position, position + lengthBytes));
    position += lengthBytes;
  }
  if (position < buffer.length) out.push(buffer.subarray(position));
  return out;
}
