// Owns small builders for device requests in tests: flags, requests, deterministic byte
// patterns, and a promise form of `submit` that also checks `done` never runs synchronously.

import assert from 'node:assert/strict';
import type { IoError } from '../../src/errors.js';
import type {
  BlockDevice, DeviceOp, DeviceRequest, RequestFlags,
} from '../../src/devices/block-device.js';

/** No flags set. */
export const NO_FLAGS: RequestFlags = Object.freeze({ sync: false, preflush: false, fua: false });

/** A request with the given fields; flags default to none. */
export function deviceRequest(
  op: DeviceOp, sector: number, countSectors: number,
  segments: readonly Uint8Array[] = [], flags: Partial<RequestFlags> = {},
): DeviceRequest {
  return { op, sector, countSectors, segments, flags: { ...NO_FLAGS, ...flags }, ioprio: 0 };
}

/** `lengthBytes` of a pattern that differs per seed and per position (never all zero). */
export function pattern(lengthBytes: number, seed: number): Uint8Array {
  const bytes = new Uint8Array(lengthBytes);
  for (let index = 0; index < lengthBytes; index += 1) {
    bytes[index] = ((index * 31 + seed * 17) % 251) + 1;
  }
  return bytes;
}

/** Splits `bytes` into views of the given lengths, in order. */
export function splitInto(bytes: Uint8Array, lengthsBytes: readonly number[]): Uint8Array[] {
  const views: Uint8Array[] = [];
  let offsetBytes = 0;
  for (const lengthBytes of lengthsBytes) {
    views.push(bytes.subarray(offsetBytes, offsetBytes + lengthBytes));
    offsetBytes += lengthBytes;
  }
  assert.equal(offsetBytes, bytes.length, 'lengths must cover the bytes');
  return views;
}

/** Submits `request` and resolves with its error; fails if `done` runs synchronously. */
export function submitted(device: BlockDevice, request: DeviceRequest): Promise<IoError | null> {
  return new Promise((resolve) => {
    let returned = false;
    let calls = 0;
    device.submit(request, (error) => {
      calls += 1;
      assert.equal(calls, 1, 'done must run exactly once');
      assert.ok(returned, 'done must not run synchronously');
      resolve(error);
    });
    returned = true;
  });
}

/** True when every byte of `bytes` is zero. */
export function allZero(bytes: Uint8Array): boolean {
  return bytes.every((byte) => byte === 0);
}
