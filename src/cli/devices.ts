// Owns how the CLI opens devices: the spec grammar of `openDevice`, creation of missing image
// files with the size a command needs, range checks that turn "does not fit" into a usage error
// before anything is written, which open failures are bad usage (exit 2: a missing file, a
// directory, EACCES, a malformed URI, an export the server does not have) and which are I/O
// failures (exit 1: a server that refuses or drops the connection or times out), a block device
// opened exclusively that is in use (EBUSY: mounted or held; exit 2, named). Every device
// opened goes through the context's `wrapDevice` when one is given (tests wrap one in the
// public FaultDevice to fail a real destination).

import { existsSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import {
  isDmIoError, openDevice, parseDeviceSpec, SECTOR_SIZE, sectorsToBytes, type BlockDevice,
  type OpenDeviceOptions,
} from '../index.js';
import type { CliContext } from './context.js';
import { UsageError } from './exit-status.js';

/** How one device is to be opened. */
export interface DeviceOpenPlan {
  readonly spec: string;
  readonly options: OpenDeviceOptions;
}

/** Checks a spec's grammar and, for files to be created, that their directory exists. */
export function checkSpec(spec: string, willCreate: boolean): void {
  let parsed;
  try {
    parsed = parseDeviceSpec(spec);
  } catch (error) {
    throw new UsageError((error as Error).message.replace(/^DMIO_ERR_\w+: /, ''));
  }
  if (parsed.kind !== 'file') return;
  if (existsSync(parsed.path)) {
    if (statSync(parsed.path).isDirectory()) throw new UsageError(`${spec} is a directory`);
    return;
  }
  if (!willCreate) throw new UsageError(`${spec} does not exist`);
  if (!existsSync(dirname(parsed.path))) {
    throw new UsageError(`${spec}: directory ${dirname(parsed.path)} does not exist`);
  }
}

/** True when the spec names a regular file (or a path that does not exist yet). */
export function isFileSpec(spec: string): boolean {
  const parsed = parseDeviceSpec(spec);
  if (parsed.kind !== 'file') return false;
  return !existsSync(parsed.path) || statSync(parsed.path).isFile();
}

/**
 * NBD connections the CLI asks for: 4, nbdcopy's default (which caps it at its thread count,
 * the number of cores). The server must allow multi-conn (CAN_MULTI_CONN), else one is used.
 * A copy's source asks for one instead (open-regions.ts: its reads fill one connection).
 */
const CLI_NBD_CONNECTIONS = 4;

/**
 * A device that could not be opened because the connection to it failed (refused, reset,
 * dropped during the handshake, timed out) or the OS reported EIO: an I/O failure, exit 1.
 */
export class DeviceOpenIoError extends Error {
  constructor(message: string, options: ErrorOptions = {}) {
    super(message, options);
    this.name = 'DeviceOpenIoError';
  }
}

/** Errnos of an open that mean the storage or the way to it failed, not the argument. */
const OPEN_IO_ERRNOS = new Set(['EIO', 'ECONNREFUSED', 'ECONNRESET', 'ECONNABORTED', 'EPIPE',
  'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'EHOSTDOWN', 'ENETDOWN']);

/**
 * NBD failures while connecting that are I/O failures. `DMIO_ERR_NBD_SERVER` is not one: the
 * server answered and refused what was asked (no such export, TLS required).
 */
const OPEN_IO_CODES = new Set(['DMIO_ERR_NBD_DISCONNECTED', 'DMIO_ERR_NBD_TIMEOUT',
  'DMIO_ERR_NBD_PROTOCOL', 'DMIO_ERR_NBD_BROKEN']);

/** True when an open failed for an I/O reason rather than because of the argument. */
export function isOpenIoFailure(error: unknown): boolean {
  if (!isDmIoError(error)) return false;
  if (OPEN_IO_CODES.has(error.code)) return true;
  const errno = (error as { errno?: unknown }).errno;
  return error.code === 'DMIO_ERR_OPEN_FAILED' && typeof errno === 'string' &&
    OPEN_IO_ERRNOS.has(errno);
}

/**
 * Opens one device, handing it to the context's `wrapDevice` when there is one. Open failures
 * become usage errors, except I/O failures (`isOpenIoFailure`), which become
 * `DeviceOpenIoError`; both keep the library error as `cause`.
 */
export async function openForCli(cli: CliContext, plan: DeviceOpenPlan): Promise<BlockDevice> {
  let device: BlockDevice;
  try {
    device = await openDevice(plan.spec, {
      ...plan.options, nbd: { connections: CLI_NBD_CONNECTIONS, ...plan.options.nbd },
    });
  } catch (error) {
    if (plan.options.exclusive === true && (error as { errno?: unknown }).errno === 'EBUSY') {
      throw new UsageError(`${plan.spec} is in use (mounted, or held by another program or ` +
        'a device-mapper table); refusing to write to it', { cause: error });
    }
    const message = `cannot open ${plan.spec}: ${(error as Error).message}`;
    if (isOpenIoFailure(error)) throw new DeviceOpenIoError(message, { cause: error });
    throw new UsageError(message, { cause: error });
  }
  return cli.wrapDevice === null ? device : cli.wrapDevice(device, plan.spec);
}

/**
 * Throws a usage error unless `[sector, sector + countSectors)` lies inside `device` and is
 * whole logical blocks of it.
 */
export function requireInside(
  device: BlockDevice, sector: number, countSectors: number, what: string,
): void {
  const blockSectors = device.limits.logicalBlockBytes / SECTOR_SIZE;
  if (sector % blockSectors !== 0 || countSectors % blockSectors !== 0) {
    throw new UsageError(`${what} ${device.name}: sector ${sector} and count ${countSectors} ` +
      `must be multiples of ${blockSectors} (its ${device.limits.logicalBlockBytes}-byte blocks)`);
  }
  if (sector + countSectors > device.sizeSectors) {
    throw new UsageError(`${what} ${device.name}: sectors ${sector}+${countSectors} run past ` +
      `its end (${device.sizeSectors} sectors)`);
  }
}

/** The device's true size in bytes (`BlockDevice.sizeBytes`, else its whole sectors). */
export function sizeBytesOf(device: BlockDevice): number {
  return device.sizeBytes ?? sectorsToBytes(device.sizeSectors);
}

/** Closes every device, ignoring errors (used on the way out). */
export async function closeAll(devices: readonly BlockDevice[]): Promise<void> {
  await Promise.all(devices.map((device) => device.close().catch(() => undefined)));
}
