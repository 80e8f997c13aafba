// Owns device specs: the one string grammar every part of dmio (library and CLI) uses to name
// a device, and `openDevice`, which turns a spec into a BlockDevice.
//   PATH | file:PATH          regular file or block device
//   mem:SIZE                  RAM disk
//   zero:SIZE                 reads zeros, read-only
//   null:SIZE                 reads zeros, drops writes
//   random:SIZE[,seed=N]      read-only deterministic pseudo-random bytes
//   nbd://HOST[:PORT][/EXPORT], nbd+unix:///EXPORT?socket=PATH   NBD export
//   nbds://…, nbds+unix://…   NBD export over TLS (nbd/uri.ts: the full URI grammar)
//   table:PATH                device-mapper table file (src/stacks; its devices are opened
//                             with these same options, less `create`)
// It sits above every layer that provides a device (devices/, nbd/, stacks/), so none of them
// imports it: a table is handed the opener of its devices as a parameter.

import { SECTOR_SIZE } from '../constants.js';
import { InvalidArgTypeError, InvalidRequestError } from '../errors.js';
import { parseSize } from '../size.js';
import { isAligned } from '../units.js';
import { validateBoolean, validateOptionsObject } from '../validate.js';
import type { BlockDevice } from '../devices/block-device.js';
import { openFileDevice, type FileDeviceOptions } from '../devices/file-device.js';
import { createRamDevice } from '../devices/ram-device.js';
import { createRandomDevice, createZeroDevice } from '../devices/pattern-devices.js';
import { openNbdDevice, type NbdOpenOptions } from '../nbd/open-nbd.js';
import { openTableFile, type DeviceOpener } from '../stacks/open-table.js';

/** Options of `openDevice`; each applies where it makes sense and is ignored elsewhere. */
export interface OpenDeviceOptions {
  /** Open files and block devices with O_DIRECT (bypass the page cache). */
  direct?: boolean;
  /** Open read-only: writes, discards and write-zeroes are refused before submission. */
  readOnly?: boolean;
  /**
   * Create a regular file that does not exist, or extend a smaller one, to this size; with
   * `preallocate`, the added range is allocated at once (see `FileDeviceOptions.create`).
   */
  create?: { sizeBytes: number; preallocate?: boolean };
  /** Open a block device exclusively (O_EXCL): fails while it is mounted or in use. */
  exclusive?: boolean;
  /** Files and block devices: use dmio's own io_uring (default true; `FileDeviceOptions`). */
  ioUring?: boolean;
  /**
   * Files and block devices: the engine that runs their steps (`FileDeviceOptions.engine`;
   * wins over `ioUring`). An engine of the caller's stays the caller's to close.
   */
  engine?: NonNullable<FileDeviceOptions['engine']>;
  /**
   * Files and block devices on the threadpool engine: serve cached reads on the calling thread
   * (default true; `FileDeviceOptions`); false leaves every read to the threadpool.
   */
  inlineCachedReads?: boolean;
  /**
   * Files and block devices: the caller will flush what it writes; flush in the background
   * every this many bytes written (`FileDeviceOptions.writeBehindBytes`; 0, the default, off).
   */
  writeBehindBytes?: number;
  /** NBD: connection timeout in milliseconds. */
  connectTimeoutMs?: number;
  /** NBD: per-request timeout in milliseconds. */
  requestTimeoutMs?: number;
  /** NBD: every other option of `openNbdDevice` (in-flight bounds, multi-conn, reconnect). */
  nbd?: NbdOpenOptions;
}

/** The schemes of NBD URIs (nbd/uri.ts parses the rest): nbd, nbd+unix and their TLS forms. */
const NBD_SCHEME = /^nbds?(\+unix)?:\/\//;

/** A parsed device spec. */
export type DeviceSpec =
  | { kind: 'file'; path: string }
  | { kind: 'mem' | 'zero' | 'null'; sizeBytes: number }
  | { kind: 'random'; sizeBytes: number; seed: number }
  | { kind: 'nbd'; uri: string }
  | { kind: 'table'; path: string };

/**
 * Parses a device spec without opening anything.
 *
 * @throws InvalidRequestError (`DMIO_ERR_INVALID_DEVICE_SPEC`) for a malformed spec.
 */
export function parseDeviceSpec(spec: string): DeviceSpec {
  if (typeof spec !== 'string') throw new InvalidArgTypeError('spec', 'a string', spec);
  if (spec.length === 0) throw specError(spec, 'the spec is empty');
  if (NBD_SCHEME.test(spec)) return { kind: 'nbd', uri: spec };
  if (spec.startsWith('file:')) return { kind: 'file', path: requirePath(spec, spec.slice(5)) };
  if (spec.startsWith('table:')) return { kind: 'table', path: requirePath(spec, spec.slice(6)) };
  const match = /^(mem|zero|null|random):(.*)$/.exec(spec);
  if (match === null) return { kind: 'file', path: spec };
  const kind = match[1] as 'mem' | 'zero' | 'null' | 'random';
  const [sizeText = '', ...params] = (match[2] ?? '').split(',');
  const sizeBytes = sizeOf(spec, sizeText);
  if (kind !== 'random') {
    if (params.length > 0) throw specError(spec, `${kind}: takes no parameters`);
    return { kind, sizeBytes };
  }
  return { kind, sizeBytes, seed: seedOf(spec, params) };
}

/**
 * Opens the device a spec names (see `parseDeviceSpec` for the grammar).
 *
 * @throws InvalidRequestError (`DMIO_ERR_INVALID_DEVICE_SPEC`) for a malformed spec;
 * OpenError (`DMIO_ERR_OPEN_FAILED`) when the OS refuses the open; NbdError when an NBD
 * server cannot be reached or refuses the handshake.
 * @example
 * const disk = await openDevice('mem:64M');
 * const image = await openDevice('disk.img', { create: { sizeBytes: 1 << 30 } });
 */
export async function openDevice(spec: string, options: OpenDeviceOptions = {}): Promise<BlockDevice> {
  validateOptionsObject(options, 'options');
  const parsed = parseDeviceSpec(spec);
  const readOnly = validateBoolean(options.readOnly, 'options.readOnly', false);
  switch (parsed.kind) {
    case 'file':
      return openFileDevice(parsed.path, options);
    case 'nbd':
      return openNbdDevice(parsed.uri, nbdOptions(options, readOnly));
    case 'mem':
      return createRamDevice({ sizeBytes: parsed.sizeBytes, name: spec, readOnly });
    case 'zero':
    case 'null':
      return createZeroDevice(parsed.kind, { sizeBytes: parsed.sizeBytes, name: spec });
    case 'random':
      return createRandomDevice({ sizeBytes: parsed.sizeBytes, seed: parsed.seed, name: spec });
    case 'table':
      return openTableFile(parsed.path, tableDeviceOpener(options), { readOnly, name: spec });
  }
}

/** Opens the devices a table names: the table's own options, less `create`. */
function tableDeviceOpener(options: OpenDeviceOptions): DeviceOpener {
  const { create: _create, ...inherited } = options;
  return (spec: string, readOnly: boolean): Promise<BlockDevice> =>
    openDevice(spec, { ...inherited, readOnly });
}

function nbdOptions(options: OpenDeviceOptions, readOnly: boolean): NbdOpenOptions {
  return {
    ...options.nbd,
    readOnly: readOnly || (options.nbd?.readOnly ?? false),
    ...(options.connectTimeoutMs === undefined ? {} : { connectTimeoutMs: options.connectTimeoutMs }),
    ...(options.requestTimeoutMs === undefined ? {} : { requestTimeoutMs: options.requestTimeoutMs }),
  };
}

function sizeOf(spec: string, text: string): number {
  let sizeBytes: number;
  try {
    sizeBytes = parseSize(text, 'size');
  } catch {
    throw specError(spec, `${JSON.stringify(text)} is not a size (examples: 64M, 1G)`);
  }
  if (sizeBytes === 0 || !isAligned(sizeBytes, SECTOR_SIZE)) {
    throw specError(spec,
      `the size must be a positive multiple of ${SECTOR_SIZE} bytes, got ${sizeBytes}`);
  }
  return sizeBytes;
}

function seedOf(spec: string, params: readonly string[]): number {
  let seed = 0;
  for (const param of params) {
    const match = /^seed=(\d+)$/.exec(param);
    const value = match === null ? Number.NaN : Number(match[1]);
    if (!Number.isSafeInteger(value) || value > 0xffffffff) {
      throw specError(spec, `unknown parameter ${JSON.stringify(param)} (expected seed=N, ` +
        'N from 0 to 4294967295)');
    }
    seed = value;
  }
  return seed;
}

function requirePath(spec: string, path: string): string {
  if (path.length === 0) throw specError(spec, `${spec.slice(0, spec.indexOf(':') + 1)} needs a path`);
  return path;
}

function specError(spec: string, message: string): InvalidRequestError {
  return new InvalidRequestError('DMIO_ERR_INVALID_DEVICE_SPEC', JSON.stringify(spec), message);
}
