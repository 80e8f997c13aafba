// Owns the construction of an IoError for a failed device request or extent query, so every
// backend reports errno, syscall, device and sector range the same way.

import { errnoOf, IoError } from '../errors.js';
import type { BlockDevice, DeviceOp, DeviceRequest } from './block-device.js';

/** The syscall name a local backend reports for an operation. */
export function syscallForOp(op: DeviceOp, request?: DeviceRequest): string {
  switch (op) {
    case 'read':
      return 'preadv';
    case 'write':
      return request !== undefined && request.countSectors === 0 ? 'fdatasync' : 'pwritev';
    case 'discard':
      return 'discard';
    case 'write-zeroes':
      return 'write-zeroes';
  }
}

/** An IoError for `request` on `device`; `errnoOrError` is an errno name or a system error. */
export function requestError(
  device: Pick<BlockDevice, 'name'>,
  request: DeviceRequest,
  errnoOrError: unknown,
  syscall: string = syscallForOp(request.op, request),
): IoError {
  const errno = typeof errnoOrError === 'string' ? errnoOrError : errnoOf(errnoOrError);
  const cause = typeof errnoOrError === 'string' ? undefined : errnoOrError;
  return new IoError({
    errno,
    syscall,
    device: device.name,
    sector: request.sector,
    countSectors: request.countSectors,
    ...(cause === undefined ? {} : { cause }),
  });
}

/** The error for a request that crosses or lies beyond the device's end. */
export function pastEndError(device: Pick<BlockDevice, 'name'>, request: DeviceRequest): IoError {
  return requestError(device, request, 'EIO');
}

/**
 * An IoError for an `extents` query of `[sector, sector + countSectors)` on `device`;
 * `errnoOrError` is an errno name (EBADF for a closed device) or a system error.
 */
export function extentsError(
  device: Pick<BlockDevice, 'name'>, sector: number, countSectors: number,
  errnoOrError: unknown, syscall = 'extents',
): IoError {
  const errno = typeof errnoOrError === 'string' ? errnoOrError : errnoOf(errnoOrError);
  const cause = typeof errnoOrError === 'string' ? undefined : errnoOrError;
  return new IoError({
    errno, syscall, device: device.name, sector, countSectors,
    ...(cause === undefined ? {} : { cause }),
  });
}
