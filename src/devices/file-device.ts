// Placeholder until the file and block-device backend lands (branch filedev).
import type { BlockDevice } from './block-device.js';
import { OpenError } from '../errors.js';

/** Options of `openFileDevice`. */
export interface FileDeviceOptions {
  direct?: boolean;
  readOnly?: boolean;
  create?: { sizeBytes: number };
  exclusive?: boolean;
}

/** Opens a regular file or block device. */
export function openFileDevice(path: string, _options: FileDeviceOptions = {}): Promise<BlockDevice> {
  return Promise.reject(new OpenError(path, 'ENOSYS', 'the file backend is not built yet'));
}
