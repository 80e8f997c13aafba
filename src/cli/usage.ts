// Owns the CLI's argument rules shared by every command: sector and size parsing, the
// `--count SECTORS | --length SIZE` choice. Everything here runs before any device is opened
// for writing, so a bad argument never touches a file (a UsageError, exit-status.ts).

import { parseSize, SECTOR_SIZE } from '../index.js';
import { UsageError } from './exit-status.js';

/** Parses a non-negative sector number given as a decimal integer. */
export function parseSector(text: string, flag: string): number {
  if (!/^\d+$/.test(text)) {
    throw new UsageError(`${flag}: ${JSON.stringify(text)} is not a sector number`);
  }
  const value = Number(text);
  if (!Number.isSafeInteger(value * SECTOR_SIZE)) throw new UsageError(`${flag}: ${text} is too large`);
  return value;
}

/** Parses a size with K/M/G/T suffixes into bytes. */
export function parseBytes(text: string, flag: string): number {
  try {
    return parseSize(text, flag);
  } catch (error) {
    // parseSize's message already starts with the argument it was given: the flag.
    throw new UsageError((error as Error).message.replace(/^DMIO_ERR_\w+: /, ''));
  }
}

/** Options that choose a length: sectors or a size. */
export interface LengthOptions {
  count?: string;
  length?: string;
}

/** The sectors `--count` or `--length` ask for, or `null` when neither is given. */
export function parseLengthSectors(options: LengthOptions): number | null {
  if (options.count !== undefined && options.length !== undefined) {
    throw new UsageError('--count and --length are alternatives; give one of them');
  }
  if (options.count !== undefined) return parseSector(options.count, '--count');
  if (options.length === undefined) return null;
  const lengthBytes = parseBytes(options.length, '--length');
  if (lengthBytes % SECTOR_SIZE !== 0) {
    throw new UsageError(`--length: ${lengthBytes} bytes is not a whole number of ` +
      `${SECTOR_SIZE}-byte sectors`);
  }
  return lengthBytes / SECTOR_SIZE;
}

/** Parses an integer percent from 0 to 100. */
export function parsePercent(text: string, flag: string): number {
  if (!/^\d+$/.test(text) || Number(text) > 100) {
    throw new UsageError(`${flag}: ${JSON.stringify(text)} is not a percent from 0 to 100`);
  }
  return Number(text);
}

/** Formats an error bitset as the JSON output's hex string. */
export function hexBits(bits: bigint): string {
  return `0x${bits.toString(16)}`;
}
