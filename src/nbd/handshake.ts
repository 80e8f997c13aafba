// Owns the fixed-newstyle handshake, from the server's greeting to the transmission phase:
//   greeting → client flags → STRUCTURED_REPLY (if wanted) → SET_META_CONTEXT base:allocation
//   (once structured replies are agreed) → GO asking for BLOCK_SIZE
// falling back to EXPORT_NAME when the server answers GO with ERR_UNSUP or does not speak
// fixed newstyle at all. A server that refuses the meta context, or selects none, is fine:
// the connection then has no block status. Every length from the server is checked before
// it is read; every refusal becomes an `NbdError` that says what the server refused and why.

import type { Socket } from 'node:net';
import { NbdError } from '../errors.js';
import type { HandshakeReader } from './handshake-reader.js';
import {
  NBD_CLISERV_MAGIC, NBD_FLAG_FIXED_NEWSTYLE, NBD_FLAG_HAS_FLAGS, NBD_FLAG_NO_ZEROES,
  NBD_INFO_BLOCK_SIZE, NBD_INFO_EXPORT, NBD_INIT_MAGIC, NBD_MIN_BLOCK_BYTES_MAX,
  NBD_META_BASE_ALLOCATION, NBD_OPT_ABORT, NBD_OPT_EXPORT_NAME, NBD_OPT_GO,
  NBD_OPT_SET_META_CONTEXT, NBD_OPT_STARTTLS, NBD_OPT_STRUCTURED_REPLY, NBD_OPTS_MAGIC,
  NBD_REP_ACK, NBD_REP_ERR_TLS_REQD, NBD_REP_ERR_UNKNOWN, NBD_REP_ERR_UNSUP,
  NBD_REP_FLAG_ERROR, NBD_REP_INFO, NBD_REP_MAGIC, NBD_REP_META_CONTEXT, OPTION_REPLIES_MAX,
  OPTION_REPLY_BYTES_MAX, OPTION_REPLY_HEADER_BYTES, optionReplyName,
} from './protocol.js';

/** Block sizes a server advertised with NBD_INFO_BLOCK_SIZE. */
export interface NbdBlockSizes {
  /** Offsets and lengths must be multiples of this (a power of two, at most 64 KiB). */
  readonly minimumBytes: number;
  /** The size the server handles best (a power of two). */
  readonly preferredBytes: number;
  /** The largest READ or WRITE payload the server accepts (0xffffffff: no limit). */
  readonly maximumBytes: number;
}

/** What the handshake learned about the export. */
export interface NbdExportInfo {
  /** The export's size in bytes. */
  readonly sizeBytes: number;
  /** The u16 transmission flags (NBD_FLAG_*). */
  readonly transmissionFlags: number;
  /** True when the server agreed to structured replies. */
  readonly structuredReplies: boolean;
  /** Advertised block sizes, or null when the server sent none. */
  readonly blockSizes: NbdBlockSizes | null;
  /** The id the server gave `base:allocation`, or null when it selected none. */
  readonly baseAllocationContextId: number | null;
  /** How the export was selected. */
  readonly negotiation: 'go' | 'export-name';
}

/** What the client wants from the handshake. */
export interface HandshakeRequest {
  /** The URI, for error messages. */
  readonly uri: string;
  /** The export to open. */
  readonly exportName: string;
  /** Ask for structured replies (default in the device: true). */
  readonly structuredReplies: boolean;
}

interface OptionReply {
  readonly replyType: number;
  readonly payload: Buffer;
}

/** Takes the socket over after the server acknowledged STARTTLS; the handshake goes on over it. */
export type TlsUpgrade = () => Promise<{ socket: Socket; reader: HandshakeReader }>;

/**
 * Runs the handshake on a connected socket. On success both sides are in transmission. With
 * `upgrade` (an nbds URI), STARTTLS comes first and a server that refuses it ends the
 * connection: the client never goes on in plaintext.
 * @throws NbdError DMIO_ERR_NBD_PROTOCOL / _SERVER / _DISCONNECTED.
 */
export async function negotiate(
  plainSocket: Socket,
  plainReader: HandshakeReader,
  request: HandshakeRequest,
  upgrade?: TlsUpgrade,
): Promise<NbdExportInfo> {
  let socket = plainSocket;
  let reader = plainReader;
  const read = (lengthBytes: number): Promise<Buffer> =>
    readOrDisconnected(reader, request, lengthBytes);
  const greeting = await read(16);
  if (greeting.readBigUInt64BE(0) !== NBD_INIT_MAGIC) protocol(request, 'bad greeting magic');
  const second = greeting.readBigUInt64BE(8);
  if (second === NBD_CLISERV_MAGIC) protocol(request, 'oldstyle servers are not supported');
  if (second !== NBD_OPTS_MAGIC) protocol(request, 'bad IHAVEOPT magic');
  const serverFlags = (await read(2)).readUInt16BE(0);
  const clientFlags = serverFlags & (NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
  const clientFlagsBytes = Buffer.alloc(4);
  clientFlagsBytes.writeUInt32BE(clientFlags, 0);
  socket.write(clientFlagsBytes);
  const noZeroes = (clientFlags & NBD_FLAG_NO_ZEROES) !== 0;
  if (upgrade !== undefined) {
    if ((serverFlags & NBD_FLAG_FIXED_NEWSTYLE) === 0) {
      throw new NbdError('DMIO_ERR_NBD_SERVER', request.uri,
        'TLS was asked for, but the server is not fixed newstyle and cannot start TLS');
    }
    sendOption(socket, NBD_OPT_STARTTLS, Buffer.alloc(0));
    const reply = await readOptionReply(read, request, NBD_OPT_STARTTLS);
    if (reply.replyType !== NBD_REP_ACK) refuse(socket, request, 'STARTTLS', reply);
    ({ socket, reader } = await upgrade());
  }
  if ((serverFlags & NBD_FLAG_FIXED_NEWSTYLE) === 0) {
    // Plain newstyle: an unknown option would make the server hang up, so only EXPORT_NAME.
    return exportNameFallback(socket, read, request, false, null, noZeroes);
  }
  let structuredReplies = false;
  if (request.structuredReplies) {
    sendOption(socket, NBD_OPT_STRUCTURED_REPLY, Buffer.alloc(0));
    const reply = await readOptionReply(read, request, NBD_OPT_STRUCTURED_REPLY);
    structuredReplies = reply.replyType === NBD_REP_ACK;
    if (!structuredReplies && (reply.replyType & NBD_REP_FLAG_ERROR) === 0) {
      protocol(request, `STRUCTURED_REPLY answered with ${optionReplyName(reply.replyType)}`);
    }
  }
  const contextId = structuredReplies ? await optionSetMetaContext(socket, read, request) : null;
  const info = await optionGo(socket, read, request, structuredReplies, contextId);
  return info ??
    exportNameFallback(socket, read, request, structuredReplies, contextId, noZeroes);
}

/**
 * NBD_OPT_SET_META_CONTEXT for `base:allocation` on the export GO will name (the server ties
 * the selection to that name). Resolves with the context id the server chose, or null when it
 * selected nothing or refused the option (any error reply).
 */
async function optionSetMetaContext(
  socket: Socket,
  read: (lengthBytes: number) => Promise<Buffer>,
  request: HandshakeRequest,
): Promise<number | null> {
  const name = Buffer.from(request.exportName, 'utf8');
  const query = Buffer.from(NBD_META_BASE_ALLOCATION, 'utf8');
  const data = Buffer.alloc(4 + name.length + 4 + 4 + query.length);
  data.writeUInt32BE(name.length, 0);
  name.copy(data, 4);
  data.writeUInt32BE(1, 4 + name.length);
  data.writeUInt32BE(query.length, 8 + name.length);
  query.copy(data, 12 + name.length);
  sendOption(socket, NBD_OPT_SET_META_CONTEXT, data);
  let contextId: number | null = null;
  for (let replies = 0; replies < OPTION_REPLIES_MAX; replies += 1) {
    const reply = await readOptionReply(read, request, NBD_OPT_SET_META_CONTEXT);
    if (reply.replyType === NBD_REP_ACK) return contextId;
    if ((reply.replyType & NBD_REP_FLAG_ERROR) !== 0) return null;
    if (reply.replyType !== NBD_REP_META_CONTEXT || reply.payload.length < 4) {
      protocol(request, `SET_META_CONTEXT answered with ${optionReplyName(reply.replyType)} ` +
        `of ${reply.payload.length} bytes`);
    }
    // Contexts not asked for are ignored; only base:allocation's id is kept.
    if (reply.payload.toString('utf8', 4) === NBD_META_BASE_ALLOCATION) {
      contextId = reply.payload.readUInt32BE(0);
    }
  }
  return protocol(request, `more than ${OPTION_REPLIES_MAX} replies to SET_META_CONTEXT`);
}

/** NBD_OPT_GO; resolves null when the server does not support it. */
async function optionGo(
  socket: Socket,
  read: (lengthBytes: number) => Promise<Buffer>,
  request: HandshakeRequest,
  structuredReplies: boolean,
  baseAllocationContextId: number | null,
): Promise<NbdExportInfo | null> {
  const name = Buffer.from(request.exportName, 'utf8');
  const data = Buffer.alloc(4 + name.length + 2 + 2);
  data.writeUInt32BE(name.length, 0);
  name.copy(data, 4);
  data.writeUInt16BE(1, 4 + name.length);
  data.writeUInt16BE(NBD_INFO_BLOCK_SIZE, 6 + name.length);
  sendOption(socket, NBD_OPT_GO, data);
  let exportInfo: { sizeBytes: number; transmissionFlags: number } | null = null;
  let blockSizes: NbdBlockSizes | null = null;
  for (let replies = 0; replies < OPTION_REPLIES_MAX; replies += 1) {
    const reply = await readOptionReply(read, request, NBD_OPT_GO);
    if (reply.replyType === NBD_REP_INFO) {
      if (reply.payload.length < 2) protocol(request, 'NBD_REP_INFO shorter than 2 bytes');
      const infoType = reply.payload.readUInt16BE(0);
      if (infoType === NBD_INFO_EXPORT) exportInfo = parseInfoExport(request, reply.payload);
      if (infoType === NBD_INFO_BLOCK_SIZE) blockSizes = parseBlockSizes(request, reply.payload);
      continue;
    }
    if (reply.replyType === NBD_REP_ACK) {
      if (exportInfo === null) protocol(request, 'GO succeeded without NBD_INFO_EXPORT');
      return { ...exportInfo, structuredReplies, blockSizes, baseAllocationContextId,
        negotiation: 'go' };
    }
    if (reply.replyType === NBD_REP_ERR_UNSUP) return null;
    refuse(socket, request, 'GO', reply);
  }
  return protocol(request, `more than ${OPTION_REPLIES_MAX} replies to GO`);
}

async function exportNameFallback(
  socket: Socket,
  read: (lengthBytes: number) => Promise<Buffer>,
  request: HandshakeRequest,
  structuredReplies: boolean,
  baseAllocationContextId: number | null,
  noZeroes: boolean,
): Promise<NbdExportInfo> {
  sendOption(socket, NBD_OPT_EXPORT_NAME, Buffer.from(request.exportName, 'utf8'));
  let reply: Buffer;
  try {
    reply = await reader10(read, noZeroes);
  } catch (error) {
    // A server that cannot serve the export just hangs up: there is no error text.
    throw new NbdError('DMIO_ERR_NBD_SERVER', request.uri,
      `server closed the connection after EXPORT_NAME "${request.exportName}" (no such export?)`,
      { cause: error });
  }
  const sizeBytes = checkedSize(request, reply.readBigUInt64BE(0));
  const transmissionFlags = reply.readUInt16BE(8);
  checkTransmissionFlags(request, transmissionFlags);
  return { sizeBytes, transmissionFlags, structuredReplies, blockSizes: null,
    baseAllocationContextId, negotiation: 'export-name' };
}

async function reader10(read: (n: number) => Promise<Buffer>, noZeroes: boolean): Promise<Buffer> {
  const reply = await read(10);
  if (!noZeroes) await read(124);
  return reply;
}

function parseInfoExport(request: HandshakeRequest, payload: Buffer): {
  sizeBytes: number; transmissionFlags: number;
} {
  if (payload.length !== 12) protocol(request, `NBD_INFO_EXPORT of ${payload.length} bytes`);
  const transmissionFlags = payload.readUInt16BE(10);
  checkTransmissionFlags(request, transmissionFlags);
  return { sizeBytes: checkedSize(request, payload.readBigUInt64BE(2)), transmissionFlags };
}

/** Validates NBD_INFO_BLOCK_SIZE against the protocol's rules. */
function parseBlockSizes(request: HandshakeRequest, payload: Buffer): NbdBlockSizes {
  if (payload.length !== 14) protocol(request, `NBD_INFO_BLOCK_SIZE of ${payload.length} bytes`);
  const minimumBytes = payload.readUInt32BE(2);
  const preferredBytes = payload.readUInt32BE(6);
  const maximumBytes = payload.readUInt32BE(10);
  const powerOfTwo = (value: number): boolean => value > 0 && (value & (value - 1)) === 0;
  if (!powerOfTwo(minimumBytes) || minimumBytes > NBD_MIN_BLOCK_BYTES_MAX) {
    protocol(request, `minimum block size ${minimumBytes} is not a power of two ≤ 64 KiB`);
  }
  if (!powerOfTwo(preferredBytes) || preferredBytes < minimumBytes) {
    protocol(request, `preferred block size ${preferredBytes} is invalid`);
  }
  const maximumValid = maximumBytes >= minimumBytes && maximumBytes % minimumBytes === 0;
  if (maximumBytes !== 0xffffffff && !maximumValid) {
    protocol(request, `maximum block size ${maximumBytes} is not a multiple of ${minimumBytes}`);
  }
  return { minimumBytes, preferredBytes, maximumBytes };
}

function checkedSize(request: HandshakeRequest, sizeBytes: bigint): number {
  if (sizeBytes > BigInt(Number.MAX_SAFE_INTEGER)) {
    protocol(request, `export size ${sizeBytes} too large`);
  }
  return Number(sizeBytes);
}

function checkTransmissionFlags(request: HandshakeRequest, transmissionFlags: number): void {
  if ((transmissionFlags & NBD_FLAG_HAS_FLAGS) === 0) {
    protocol(request, 'transmission flags lack NBD_FLAG_HAS_FLAGS');
  }
}

async function readOptionReply(
  read: (lengthBytes: number) => Promise<Buffer>,
  request: HandshakeRequest,
  option: number,
): Promise<OptionReply> {
  const header = await read(OPTION_REPLY_HEADER_BYTES);
  if (header.readBigUInt64BE(0) !== NBD_REP_MAGIC) protocol(request, 'bad option reply magic');
  const echoed = header.readUInt32BE(8);
  if (echoed !== option) {
    protocol(request, `reply for option ${echoed} while waiting for ${option}`);
  }
  const replyType = header.readUInt32BE(12);
  const lengthBytes = header.readUInt32BE(16);
  if (lengthBytes > OPTION_REPLY_BYTES_MAX) {
    protocol(request, `option reply of ${lengthBytes} bytes exceeds ${OPTION_REPLY_BYTES_MAX}`);
  }
  return { replyType, payload: await read(lengthBytes) };
}

function sendOption(socket: Socket, option: number, data: Buffer): void {
  const header = Buffer.alloc(16);
  header.writeBigUInt64BE(NBD_OPTS_MAGIC, 0);
  header.writeUInt32BE(option, 8);
  header.writeUInt32BE(data.length, 12);
  socket.write(data.length === 0 ? header : Buffer.concat([header, data]));
}

/** Throws the error a refused option deserves, after a polite NBD_OPT_ABORT. */
function refuse(
  socket: Socket,
  request: HandshakeRequest,
  what: string,
  reply: OptionReply,
): never {
  if ((reply.replyType & NBD_REP_FLAG_ERROR) === 0) {
    protocol(request, `${what} answered with unexpected ${optionReplyName(reply.replyType)}`);
  }
  sendOption(socket, NBD_OPT_ABORT, Buffer.alloc(0));
  const text = reply.payload.toString('utf8').replace(/[^\x20-\x7e]/g, '?');
  const detail = text === '' ? '' : `: ${text}`;
  let reason = `server refused ${what} with ${optionReplyName(reply.replyType)}`;
  if (reply.replyType === NBD_REP_ERR_UNKNOWN) reason = `no such export "${request.exportName}"`;
  if (reply.replyType === NBD_REP_ERR_TLS_REQD) reason = 'server requires TLS (use an nbds URI)';
  throw new NbdError('DMIO_ERR_NBD_SERVER', request.uri, `${reason}${detail}`);
}

async function readOrDisconnected(
  reader: HandshakeReader,
  request: HandshakeRequest,
  lengthBytes: number,
): Promise<Buffer> {
  try {
    return await reader.read(lengthBytes);
  } catch (error) {
    throw new NbdError('DMIO_ERR_NBD_DISCONNECTED', request.uri,
      'connection lost during the handshake', { cause: error });
  }
}

function protocol(request: HandshakeRequest, message: string): never {
  throw new NbdError('DMIO_ERR_NBD_PROTOCOL', request.uri, `handshake: ${message}`);
}
