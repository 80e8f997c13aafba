// Owns the public entry point for NBD devices: it validates options against their documented
// maxima, parses the URI, and opens the device. Every bound here has a reason next to it.

import { InvalidArgTypeError, OutOfRangeError } from '../errors.js';
import { CLIENT_INFLIGHT_MAX, GIB, MIB } from '../constants.js';
import { NbdDevice, type NbdDeviceSettings } from './nbd-device.js';
import { NBD_MIN_BLOCK_BYTES_MAX } from './protocol.js';
import { parseNbdUri } from './uri.js';

/** Bounded reconnection after a connection failure. */
export interface NbdReconnectOptions {
  /** Failed connection attempts in a row before the device is declared broken (1-100). */
  readonly attemptsMax: number;
  /** Wait before each attempt, in ms (0-60000). */
  readonly delayMs: number;
}

/** Options of `openNbdDevice`. */
export interface NbdOpenOptions {
  /** Refuse writes even if the export is writable (default false). */
  readonly readOnly?: boolean;
  /** Deadline for connect plus handshake, in ms (1-600000, default 10000). */
  readonly connectTimeoutMs?: number;
  /** A command unanswered this long kills its connection, in ms (0 = never, ≤ 3600000, 30000). */
  readonly requestTimeoutMs?: number;
  /** Most NBD commands in flight across all connections (1-4096, default 64). */
  readonly inflightRequestsMax?: number;
  /** Most READ/WRITE bytes in flight (64 KiB-1 GiB, default 64 MiB); also caps one request. */
  readonly inflightBytesMax?: number;
  /** Most commands waiting for room before submits fail with EAGAIN (0-65536, default 4096). */
  readonly queuedRequestsMax?: number;
  /** Connections to open when the server sets CAN_MULTI_CONN (1-16, default 1). */
  readonly connections?: number;
  /** Reopen lost connections instead of breaking the device (default: no reconnect). */
  readonly reconnect?: NbdReconnectOptions;
  /** Negotiate structured replies (default true; false forces simple replies). */
  readonly structuredReplies?: boolean;
}

/** Default bound on commands in flight: nbdcopy's per-connection default; QD32 with splits. */
const INFLIGHT_REQUESTS_DEFAULT = 64;
/** Default bound on payload bytes in flight (64 MiB): two 32 MiB requests, or 256 × 256 KiB. */
const INFLIGHT_BYTES_DEFAULT = 64 * MIB;
/** Upper bound on payload bytes in flight (1 GiB): socket buffers stay a fraction of RAM. */
const INFLIGHT_BYTES_MAX = GIB;
/** Upper bound on waiting commands: 16 clients at dm-io's maximum in flight. */
const QUEUED_REQUESTS_MAX = 65536;
/** Upper bound on connections: beyond 16 a client gains nothing and servers limit clients. */
const CONNECTIONS_MAX = 16;

/**
 * Opens a remote disk over NBD as a dm-io `BlockDevice`.
 *
 * Accepts `nbd://HOST[:PORT][/EXPORT]` and `nbd+unix:///EXPORT?socket=PATH`.
 * @throws InvalidRequestError `DMIO_ERR_INVALID_DEVICE_SPEC` for a malformed URI;
 *   InvalidArgTypeError / OutOfRangeError for bad options (thrown synchronously as a rejection);
 *   OpenError `DMIO_ERR_OPEN_FAILED` when the socket cannot connect; NbdError
 *   (`DMIO_ERR_NBD_SERVER`, `_PROTOCOL`, `_DISCONNECTED`, `_TIMEOUT`) when the handshake fails.
 * @example
 * const device = await openNbdDevice('nbd+unix:///?socket=/tmp/nbd.sock');
 * device.submit({ op: 'read', sector: 0, countSectors: 8, segments: [new Uint8Array(4096)],
 *   flags: { sync: false, preflush: false, fua: false }, ioprio: 0 }, (error) => {});
 * await device.close();
 */
export async function openNbdDevice(uri: string, options: NbdOpenOptions = {}): Promise<NbdDevice> {
  const settings = resolveNbdOptions(uri, options);
  return NbdDevice.open(settings);
}

/** Validates options and applies defaults. */
export function resolveNbdOptions(uri: string, options: NbdOpenOptions): NbdDeviceSettings {
  if (typeof options !== 'object' || options === null) {
    throw new InvalidArgTypeError('options', 'an object', options);
  }
  const target = parseNbdUri(uri);
  return {
    target,
    readOnly: boolean('options.readOnly', options.readOnly, false),
    connectTimeoutMs: integer('options.connectTimeoutMs', options.connectTimeoutMs,
      10000, 1, 600000),
    requestTimeoutMs: integer('options.requestTimeoutMs', options.requestTimeoutMs,
      30000, 0, 3600000),
    inflightRequestsMax: integer('options.inflightRequestsMax', options.inflightRequestsMax,
      INFLIGHT_REQUESTS_DEFAULT, 1, CLIENT_INFLIGHT_MAX),
    inflightBytesMax: integer('options.inflightBytesMax', options.inflightBytesMax,
      INFLIGHT_BYTES_DEFAULT, NBD_MIN_BLOCK_BYTES_MAX, INFLIGHT_BYTES_MAX),
    queuedRequestsMax: integer('options.queuedRequestsMax', options.queuedRequestsMax,
      CLIENT_INFLIGHT_MAX, 0, QUEUED_REQUESTS_MAX),
    connections: integer('options.connections', options.connections, 1, 1, CONNECTIONS_MAX),
    structuredReplies: boolean('options.structuredReplies', options.structuredReplies, true),
    reconnect: reconnectOptions(options.reconnect),
  };
}

function reconnectOptions(value: NbdReconnectOptions | undefined): NbdDeviceSettings['reconnect'] {
  if (value === undefined) return null;
  if (typeof value !== 'object' || value === null) {
    throw new InvalidArgTypeError('options.reconnect', 'an object', value);
  }
  return {
    attemptsMax: integer('options.reconnect.attemptsMax', value.attemptsMax, undefined, 1, 100),
    delayMs: integer('options.reconnect.delayMs', value.delayMs, undefined, 0, 60000),
  };
}

function integer(
  name: string,
  value: unknown,
  fallback: number | undefined,
  minimum: number,
  maximum: number,
): number {
  if (value === undefined && fallback !== undefined) return fallback;
  if (typeof value !== 'number') throw new InvalidArgTypeError(name, 'a number', value);
  if (!Number.isInteger(value) || value < minimum || value > maximum) {
    throw new OutOfRangeError(name, `an integer from ${minimum} to ${maximum}`, value);
  }
  return value;
}

function boolean(name: string, value: unknown, fallback: boolean): boolean {
  if (value === undefined) return fallback;
  if (typeof value !== 'boolean') throw new InvalidArgTypeError(name, 'a boolean', value);
  return value;
}
