// Owns parsing of size strings ("64M", "1.5G", "4096", "10KiB") into bytes. The unit grammar
// is normalised here and the arithmetic is left to the `bytes` package; every suffix is binary
// (K = 1024), as in dd, qemu-img and nbdkit.

import bytes from 'bytes';
import { InvalidRequestError } from './errors.js';

const SIZE_PATTERN = /^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(?:i?b)?\s*$/i;

/**
 * Parses a size with an optional K, M, G, T or P suffix (binary; `KB`, `KiB` alike) into a
 * whole number of bytes.
 *
 * @throws InvalidRequestError (`DMIO_ERR_INVALID_ARG_VALUE`) naming `argument` when the text is
 * not a size or does not come to a whole, safe number of bytes.
 * @example
 * parseSize('64M', '--length'); // 67108864
 */
export function parseSize(text: string, argument: string): number {
  const match = SIZE_PATTERN.exec(text);
  if (match === null) {
    throw new InvalidRequestError('DMIO_ERR_INVALID_ARG_VALUE', argument,
      `${JSON.stringify(text)} is not a size (examples: 4096, 64K, 1.5M, 2G)`);
  }
  const unit = (match[2] ?? '').toLowerCase();
  const suffix = unit === '' ? '' : `${unit}b`;
  const parsed = bytes.parse(`${match[1]}${suffix}`);
  const exact = Number(match[1]) * (bytes.parse(`1${suffix}`) ?? Number.NaN);
  if (parsed === null || !Number.isSafeInteger(parsed) || parsed !== exact) {
    throw new InvalidRequestError('DMIO_ERR_INVALID_ARG_VALUE', argument,
      `${JSON.stringify(text)} is not a whole, safe number of bytes`);
  }
  return parsed;
}
