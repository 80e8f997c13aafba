// Placeholder until the NBD backend lands (branch nbd).
import type { BlockDevice } from '../devices/block-device.js';
import { NbdError } from '../errors.js';

/** Options of `openNbdDevice`. */
export interface NbdOpenOptions {
  readOnly?: boolean;
  connectTimeoutMs?: number;
  requestTimeoutMs?: number;
}

/** Opens an NBD export. */
export function openNbdDevice(uri: string, _options: NbdOpenOptions = {}): Promise<BlockDevice> {
  return Promise.reject(new NbdError('DMIO_ERR_NBD_BROKEN', uri, 'the NBD backend is not built yet'));
}
