// Owns how a failed device request becomes an NBD error number. The wire carries a handful of
// Linux errno values; anything else a device reports is folded into the nearest one, so a
// client always sees an error it knows.
//
//   EPERM, EROFS, EACCES          -> EPERM   (refused: read-only, permissions)
//   ENOSPC, EDQUOT, EFBIG         -> ENOSPC  (out of space)
//   EINVAL                        -> EINVAL
//   EOPNOTSUPP, ENOTSUP           -> ENOTSUP only for WRITE_ZEROES with FAST_ZERO, else EINVAL
//   everything else (EIO, ETIMEDOUT, ...) -> EIO: the device failed the I/O

import { isDmIoError } from '../errors.js';
import {
  NBD_EINVAL, NBD_EIO, NBD_ENOSPC, NBD_ENOTSUP, NBD_EPERM, NBD_ESHUTDOWN,
} from '../nbd/protocol.js';

/** A request's failure as the client will see it. */
export interface NbdFailure {
  readonly errorNumber: number;
  readonly message: string;
  /** The device cannot do this operation at all (`DMIO_ERR_NOT_SUPPORTED`). */
  readonly notSupported?: boolean;
}

/** The NBD error number for an errno name reported by a device. */
export function nbdErrorForErrno(errno: string, fastZero = false): number {
  switch (errno) {
    case 'EPERM':
    case 'EROFS':
    case 'EACCES':
      return NBD_EPERM;
    case 'ENOSPC':
    case 'EDQUOT':
    case 'EFBIG':
      return NBD_ENOSPC;
    case 'EINVAL':
      return NBD_EINVAL;
    case 'EOPNOTSUPP':
    case 'ENOTSUP':
      return fastZero ? NBD_ENOTSUP : NBD_EINVAL;
    default:
      return NBD_EIO;
  }
}

/**
 * The failure for an error from dm-io: a per-region error (an IoError with an errno), or an
 * argument error thrown before anything was submitted (read-only, closed device).
 */
export function failureOf(error: unknown): NbdFailure {
  const message = error instanceof Error ? error.message : String(error);
  if (isDmIoError(error)) {
    switch (error.code) {
      case 'DMIO_ERR_READ_ONLY':
        return { errorNumber: NBD_EPERM, message };
      case 'DMIO_ERR_DEVICE_CLOSED':
      case 'DMIO_ERR_CLIENT_DESTROYED':
        return { errorNumber: NBD_ESHUTDOWN, message };
      case 'DMIO_ERR_IO':
        return { errorNumber: nbdErrorForErrno((error as { errno?: string }).errno ?? 'EIO'), message };
      case 'DMIO_ERR_NOT_SUPPORTED':
        return { errorNumber: NBD_EINVAL, message, notSupported: true };
      default:
        return { errorNumber: NBD_EINVAL, message };
    }
  }
  return { errorNumber: NBD_EIO, message };
}
