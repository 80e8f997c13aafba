// Owns what the transmission phase decides about a request before it runs: the header's
// parse, the hard-close rules (bad magic, a WRITE payload over 32 MiB) and the checks that
// answer a request with an error instead of running it. Both transmission drivers (the event
// loop's, transmission.ts, and the polling threads', polled-connection.ts) decide through
// these functions, so a client meets the same rules whichever driver serves it.
//
// Checks run in a fixed order, because the order decides which error a client sees: magic
// (hard close), DISC, WRITE payload size (hard close above 32 MiB; the payload is always read
// before anything can reject the request), known command, valid flags, read-only (EPERM),
// negotiated command, range (ENOSPC for writes, EINVAL otherwise), alignment, READ size.

import {
  NBD_CMD_BLOCK_STATUS, NBD_CMD_FLAG_DF, NBD_CMD_FLAG_FAST_ZERO, NBD_CMD_FLAG_FUA,
  NBD_CMD_FLAG_NO_HOLE, NBD_CMD_FLAG_REQ_ONE, NBD_CMD_FLUSH, NBD_CMD_READ, NBD_CMD_TRIM,
  NBD_CMD_WRITE, NBD_CMD_WRITE_ZEROES, NBD_EINVAL, NBD_ENOSPC, NBD_EPERM, NBD_REQUEST_MAGIC,
} from '../nbd/protocol.js';
import type { NbdFailure } from './errno-map.js';
import type { Negotiated } from './handshake.js';
import { SERVER_REQUEST_BYTES_MAX } from './limits.js';

/** A parsed request header. */
export interface Request {
  readonly flags: number;
  readonly type: number;
  readonly cookie: bigint;
  readonly offsetBytes: bigint;
  readonly lengthBytes: number;
}

/** The client broke a rule that leaves the stream unusable (bad magic, oversized WRITE). */
export class TransmissionViolation extends Error {
  constructor(reason: string) {
    super(reason);
    this.name = 'TransmissionViolation';
  }
}

/** Parses a 28-byte request header. @throws TransmissionViolation for a bad magic. */
export function parseRequest(header: Buffer): Request {
  if (header.readUInt32BE(0) !== NBD_REQUEST_MAGIC) {
    throw new TransmissionViolation('bad request magic');
  }
  return {
    flags: header.readUInt16BE(4),
    type: header.readUInt16BE(6),
    cookie: header.readBigUInt64BE(8),
    offsetBytes: header.readBigUInt64BE(16),
    lengthBytes: header.readUInt32BE(24),
  };
}

/**
 * The payload length of a WRITE, to be read before the request is checked.
 * @throws TransmissionViolation above the maximum: the payload would have to be skipped unread.
 */
export function writePayloadBytes(request: Request): number {
  if (request.lengthBytes > SERVER_REQUEST_BYTES_MAX) {
    throw new TransmissionViolation(`WRITE of ${request.lengthBytes} bytes, ` +
      `at most ${SERVER_REQUEST_BYTES_MAX}`);
  }
  return request.lengthBytes;
}

/** The error a request gets before it runs, or `null` when it may run. */
export function checkRequest(request: Request, negotiated: Negotiated): NbdFailure | null {
  const { served, structuredReplies, baseAllocation, blockSizesAsked } = negotiated;
  const { type, flags } = request;
  const known = type === NBD_CMD_READ || type === NBD_CMD_WRITE || type === NBD_CMD_FLUSH ||
    type === NBD_CMD_TRIM || type === NBD_CMD_WRITE_ZEROES || type === NBD_CMD_BLOCK_STATUS;
  if (!known) return invalid(`unknown command ${type}`);
  if ((flags & ~allowedFlags(type, structuredReplies)) !== 0) {
    return invalid(`flags 0x${flags.toString(16)} are not valid for command ${type}`);
  }
  const writes = type === NBD_CMD_WRITE || type === NBD_CMD_TRIM || type === NBD_CMD_WRITE_ZEROES;
  if (writes && served.readOnly) {
    return { errorNumber: NBD_EPERM, message: 'the export is read-only' };
  }
  if (type === NBD_CMD_BLOCK_STATUS && !(structuredReplies && baseAllocation)) {
    return invalid('BLOCK_STATUS needs structured replies and the base:allocation context');
  }
  if (type === NBD_CMD_FLUSH) return null;
  const sizeBytes = BigInt(served.sizeBytes);
  if (request.offsetBytes > sizeBytes || BigInt(request.lengthBytes) > sizeBytes - request.offsetBytes) {
    const message = `${request.lengthBytes} bytes at ${request.offsetBytes} pass the end ` +
      `(${served.sizeBytes} bytes)`;
    const errorNumber = type === NBD_CMD_WRITE || type === NBD_CMD_WRITE_ZEROES ? NBD_ENOSPC : NBD_EINVAL;
    return { errorNumber, message };
  }
  const blockBytes = served.blockBytes;
  if (blockSizesAsked && type !== NBD_CMD_BLOCK_STATUS &&
      (Number(request.offsetBytes) % blockBytes !== 0 || request.lengthBytes % blockBytes !== 0)) {
    return invalid(`offset and length must be multiples of ${blockBytes} bytes`);
  }
  if (type === NBD_CMD_READ && request.lengthBytes > SERVER_REQUEST_BYTES_MAX) {
    return invalid(`READ of ${request.lengthBytes} bytes, at most ${SERVER_REQUEST_BYTES_MAX}`);
  }
  if (type === NBD_CMD_BLOCK_STATUS && request.lengthBytes === 0) {
    return invalid('BLOCK_STATUS needs a nonzero length');
  }
  return null;
}

/** The command flags a request of `type` may carry on this connection. */
function allowedFlags(type: number, structuredReplies: boolean): number {
  switch (type) {
    case NBD_CMD_READ:
      return NBD_CMD_FLAG_FUA | (structuredReplies ? NBD_CMD_FLAG_DF : 0);
    case NBD_CMD_WRITE_ZEROES:
      return NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FAST_ZERO;
    case NBD_CMD_BLOCK_STATUS:
      return NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_REQ_ONE;
    default:
      return NBD_CMD_FLAG_FUA;
  }
}

/** An EINVAL failure with `message`. */
export function invalid(message: string): NbdFailure {
  return { errorNumber: NBD_EINVAL, message };
}
