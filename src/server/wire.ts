// Owns the bytes the server sends: the greeting, option replies, the INFO bodies, the reply to
// EXPORT_NAME, simple replies and structured reply chunks. Every function returns a complete
// message (header and fixed body) so the caller writes it in one piece; READ data travels as
// a second buffer written right after its header, with nothing awaited in between.

import {
  NBD_FLAG_FIXED_NEWSTYLE, NBD_FLAG_NO_ZEROES, NBD_INFO_BLOCK_SIZE, NBD_INFO_EXPORT,
  NBD_INIT_MAGIC, NBD_OPTS_MAGIC, NBD_REP_INFO, NBD_REP_MAGIC, NBD_REP_META_CONTEXT,
  NBD_REP_SERVER, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_BLOCK_STATUS, NBD_REPLY_TYPE_ERROR,
  NBD_REPLY_TYPE_NONE, NBD_REPLY_TYPE_OFFSET_DATA, NBD_REPLY_TYPE_OFFSET_HOLE,
  NBD_SIMPLE_REPLY_MAGIC,
  NBD_STRUCTURED_REPLY_MAGIC, OPTION_REPLY_HEADER_BYTES, SIMPLE_REPLY_HEADER_BYTES,
  STRUCTURED_REPLY_HEADER_BYTES,
} from '../nbd/protocol.js';
import { SERVER_STRING_BYTES_MAX } from './limits.js';

/** Bytes of the 124 zeros that follow the EXPORT_NAME reply unless the client opted out. */
const EXPORT_NAME_PADDING_BYTES = 124;

/** The 18-byte greeting: NBDMAGIC, IHAVEOPT and the handshake flags the server offers. */
export function greeting(): Buffer {
  const out = Buffer.alloc(18);
  out.writeBigUInt64BE(NBD_INIT_MAGIC, 0);
  out.writeBigUInt64BE(NBD_OPTS_MAGIC, 8);
  out.writeUInt16BE(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES, 16);
  return out;
}

/** An option reply: header plus `data`. */
export function optionReply(option: number, replyType: number, data: Uint8Array = EMPTY): Buffer {
  const out = Buffer.allocUnsafe(OPTION_REPLY_HEADER_BYTES + data.length);
  out.writeBigUInt64BE(NBD_REP_MAGIC, 0);
  out.writeUInt32BE(option, 8);
  out.writeUInt32BE(replyType, 12);
  out.writeUInt32BE(data.length, 16);
  out.set(data, OPTION_REPLY_HEADER_BYTES);
  return out;
}

/** An error option reply with a message (cut to 4096 bytes; nbdinfo prints it). */
export function optionError(option: number, replyType: number, message: string): Buffer {
  return optionReply(option, replyType, utf8Bounded(message));
}

/** `NBD_REP_SERVER`: one export in answer to LIST. */
export function serverReply(option: number, name: string, description: string): Buffer {
  const nameBytes = utf8Bounded(name);
  const descriptionBytes = utf8Bounded(description);
  const data = Buffer.allocUnsafe(4 + nameBytes.length + descriptionBytes.length);
  data.writeUInt32BE(nameBytes.length, 0);
  data.set(nameBytes, 4);
  data.set(descriptionBytes, 4 + nameBytes.length);
  return optionReply(option, NBD_REP_SERVER, data);
}

/** `NBD_REP_INFO` with `NBD_INFO_EXPORT`: size and transmission flags. */
export function infoExport(option: number, sizeBytes: number, transmissionFlags: number): Buffer {
  const data = Buffer.allocUnsafe(12);
  data.writeUInt16BE(NBD_INFO_EXPORT, 0);
  data.writeBigUInt64BE(BigInt(sizeBytes), 2);
  data.writeUInt16BE(transmissionFlags, 10);
  return optionReply(option, NBD_REP_INFO, data);
}

/** `NBD_REP_INFO` with a text body (`NBD_INFO_NAME` or `NBD_INFO_DESCRIPTION`). */
export function infoText(option: number, infoType: number, text: string): Buffer {
  const textBytes = utf8Bounded(text);
  const data = Buffer.allocUnsafe(2 + textBytes.length);
  data.writeUInt16BE(infoType, 0);
  data.set(textBytes, 2);
  return optionReply(option, NBD_REP_INFO, data);
}

/** Block sizes advertised in `NBD_INFO_BLOCK_SIZE`, in bytes. */
export interface BlockSizes {
  readonly minimumBytes: number;
  readonly preferredBytes: number;
  readonly maximumBytes: number;
}

/** `NBD_REP_INFO` with `NBD_INFO_BLOCK_SIZE`. */
export function infoBlockSize(option: number, sizes: BlockSizes): Buffer {
  const data = Buffer.allocUnsafe(14);
  data.writeUInt16BE(NBD_INFO_BLOCK_SIZE, 0);
  data.writeUInt32BE(sizes.minimumBytes, 2);
  data.writeUInt32BE(sizes.preferredBytes, 6);
  data.writeUInt32BE(sizes.maximumBytes, 10);
  return optionReply(option, NBD_REP_INFO, data);
}

/** `NBD_REP_META_CONTEXT`: a context id and its name. */
export function metaContextReply(option: number, contextId: number, name: string): Buffer {
  const nameBytes = Buffer.from(name, 'utf8');
  const data = Buffer.allocUnsafe(4 + nameBytes.length);
  data.writeUInt32BE(contextId, 0);
  data.set(nameBytes, 4);
  return optionReply(option, NBD_REP_META_CONTEXT, data);
}

/** The reply to `NBD_OPT_EXPORT_NAME`: size, flags and, unless refused, 124 zero bytes. */
export function exportNameReply(
  sizeBytes: number, transmissionFlags: number, noZeroes: boolean,
): Buffer {
  const out = Buffer.alloc(10 + (noZeroes ? 0 : EXPORT_NAME_PADDING_BYTES));
  out.writeBigUInt64BE(BigInt(sizeBytes), 0);
  out.writeUInt16BE(transmissionFlags, 8);
  return out;
}

/** A simple reply header (16 bytes); a successful READ's data follows it. */
export function simpleReply(errorNumber: number, cookie: bigint): Buffer {
  const out = Buffer.allocUnsafe(SIMPLE_REPLY_HEADER_BYTES);
  out.writeUInt32BE(NBD_SIMPLE_REPLY_MAGIC, 0);
  out.writeUInt32BE(errorNumber, 4);
  out.writeBigUInt64BE(cookie, 8);
  return out;
}

/** A structured chunk header (20 bytes) for a payload of `payloadBytes`. */
export function chunkHeader(
  flags: number, chunkType: number, cookie: bigint, payloadBytes: number,
): Buffer {
  const out = Buffer.allocUnsafe(STRUCTURED_REPLY_HEADER_BYTES);
  writeChunkHeader(out, flags, chunkType, cookie, payloadBytes);
  return out;
}

/**
 * The header of a final `OFFSET_DATA` chunk plus its 8-byte offset (28 bytes); the data
 * (`dataBytes` long) must be written right after it.
 */
export function offsetDataHeader(
  cookie: bigint, offsetBytes: number, dataBytes: number, final = true,
): Buffer {
  const out = Buffer.allocUnsafe(STRUCTURED_REPLY_HEADER_BYTES + 8);
  writeChunkHeader(out, final ? NBD_REPLY_FLAG_DONE : 0, NBD_REPLY_TYPE_OFFSET_DATA, cookie,
    8 + dataBytes);
  out.writeBigUInt64BE(BigInt(offsetBytes), STRUCTURED_REPLY_HEADER_BYTES);
  return out;
}

/** An `OFFSET_HOLE` chunk: `lengthBytes` from `offsetBytes` read as zeros (32 bytes). */
export function offsetHoleChunk(
  cookie: bigint, offsetBytes: number, lengthBytes: number, final: boolean,
): Buffer {
  const out = Buffer.allocUnsafe(STRUCTURED_REPLY_HEADER_BYTES + 12);
  writeChunkHeader(out, final ? NBD_REPLY_FLAG_DONE : 0, NBD_REPLY_TYPE_OFFSET_HOLE, cookie, 12);
  out.writeBigUInt64BE(BigInt(offsetBytes), STRUCTURED_REPLY_HEADER_BYTES);
  out.writeUInt32BE(lengthBytes, STRUCTURED_REPLY_HEADER_BYTES + 8);
  return out;
}

/** A final `NONE` chunk: success with nothing to say (a zero-length READ). */
export function noneChunk(cookie: bigint): Buffer {
  return chunkHeader(NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE, cookie, 0);
}

/** A final `ERROR` chunk: the whole request failed with `errorNumber`. */
export function errorChunk(cookie: bigint, errorNumber: number, message: string): Buffer {
  const messageBytes = utf8Bounded(message);
  const out = Buffer.allocUnsafe(STRUCTURED_REPLY_HEADER_BYTES + 6 + messageBytes.length);
  writeChunkHeader(out, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_ERROR, cookie,
    6 + messageBytes.length);
  out.writeUInt32BE(errorNumber, STRUCTURED_REPLY_HEADER_BYTES);
  out.writeUInt16BE(messageBytes.length, STRUCTURED_REPLY_HEADER_BYTES + 4);
  out.set(messageBytes, STRUCTURED_REPLY_HEADER_BYTES + 6);
  return out;
}

/** One extent of a block status reply. */
export interface Extent {
  readonly lengthBytes: number;
  readonly flags: number;
}

/** A final `BLOCK_STATUS` chunk for one meta context. */
export function blockStatusChunk(
  cookie: bigint, contextId: number, extents: readonly Extent[],
): Buffer {
  const payloadBytes = 4 + 8 * extents.length;
  const out = Buffer.allocUnsafe(STRUCTURED_REPLY_HEADER_BYTES + payloadBytes);
  writeChunkHeader(out, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_BLOCK_STATUS, cookie, payloadBytes);
  out.writeUInt32BE(contextId, STRUCTURED_REPLY_HEADER_BYTES);
  let at = STRUCTURED_REPLY_HEADER_BYTES + 4;
  for (const extent of extents) {
    out.writeUInt32BE(extent.lengthBytes, at);
    out.writeUInt32BE(extent.flags, at + 4);
    at += 8;
  }
  return out;
}

const EMPTY = new Uint8Array(0);

function writeChunkHeader(
  out: Buffer, flags: number, chunkType: number, cookie: bigint, payloadBytes: number,
): void {
  out.writeUInt32BE(NBD_STRUCTURED_REPLY_MAGIC, 0);
  out.writeUInt16BE(flags, 4);
  out.writeUInt16BE(chunkType, 6);
  out.writeBigUInt64BE(cookie, 8);
  out.writeUInt32BE(payloadBytes, 16);
}

/** UTF-8 bytes of `text`, cut to the protocol's 4096-byte string limit. */
function utf8Bounded(text: string): Buffer {
  const bytes = Buffer.from(text, 'utf8');
  return bytes.length <= SERVER_STRING_BYTES_MAX ? bytes : bytes.subarray(0, SERVER_STRING_BYTES_MAX);
}
