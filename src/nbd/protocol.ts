// Owns the numbers of the NBD wire protocol (fixed newstyle, simple and structured replies),
// shared by the client (src/nbd/) and the server (src/server/), and the client's own bounds on what it accepts from a server. Every integer on the wire is
// big-endian. Bounds exist because a server is untrusted input: no length read from the wire
// is used to allocate memory before it is checked against one of the `*_MAX` values here.

import assert from '../assert.js';
import { GIB, KIB, MIB } from '../constants.js';

/** "NBDMAGIC": the first 8 bytes of every handshake. */
export const NBD_INIT_MAGIC = 0x4e42444d41474943n;
/** "IHAVEOPT": newstyle servers send it after NBDMAGIC; clients prefix every option with it. */
export const NBD_OPTS_MAGIC = 0x49484156454f5054n;
/** Oldstyle servers send this after NBDMAGIC instead; this client refuses them. */
export const NBD_CLISERV_MAGIC = 0x00420281861253n;
/** Magic of every option reply. */
export const NBD_REP_MAGIC = 0x0003e889045565a9n;
/** Magic of every request (compact 28-byte header). */
export const NBD_REQUEST_MAGIC = 0x25609513;
/** Magic of a simple reply (16-byte header). */
export const NBD_SIMPLE_REPLY_MAGIC = 0x67446698;
/** Magic of a structured reply chunk (20-byte header). */
export const NBD_STRUCTURED_REPLY_MAGIC = 0x668e33ef;

/** Handshake flag: the server speaks fixed newstyle. */
export const NBD_FLAG_FIXED_NEWSTYLE = 1 << 0;
/** Handshake flag: the server can omit the 124 zero bytes after EXPORT_NAME. */
export const NBD_FLAG_NO_ZEROES = 1 << 1;

/** Option numbers. */
export const NBD_OPT_EXPORT_NAME = 1;
export const NBD_OPT_ABORT = 2;
export const NBD_OPT_LIST = 3;
export const NBD_OPT_STARTTLS = 5;
export const NBD_OPT_INFO = 6;
export const NBD_OPT_GO = 7;
export const NBD_OPT_STRUCTURED_REPLY = 8;
export const NBD_OPT_LIST_META_CONTEXT = 9;
export const NBD_OPT_SET_META_CONTEXT = 10;

/** Option reply types; errors have bit 31 set. */
export const NBD_REP_ACK = 1;
export const NBD_REP_SERVER = 2;
export const NBD_REP_INFO = 3;
export const NBD_REP_META_CONTEXT = 4;
export const NBD_REP_FLAG_ERROR = 0x80000000;
export const NBD_REP_ERR_UNSUP = NBD_REP_FLAG_ERROR + 1;
export const NBD_REP_ERR_POLICY = NBD_REP_FLAG_ERROR + 2;
export const NBD_REP_ERR_INVALID = NBD_REP_FLAG_ERROR + 3;
export const NBD_REP_ERR_PLATFORM = NBD_REP_FLAG_ERROR + 4;
export const NBD_REP_ERR_TLS_REQD = NBD_REP_FLAG_ERROR + 5;
export const NBD_REP_ERR_UNKNOWN = NBD_REP_FLAG_ERROR + 6;
export const NBD_REP_ERR_SHUTDOWN = NBD_REP_FLAG_ERROR + 7;
export const NBD_REP_ERR_BLOCK_SIZE_REQD = NBD_REP_FLAG_ERROR + 8;
export const NBD_REP_ERR_TOO_BIG = NBD_REP_FLAG_ERROR + 9;

/** Info types inside NBD_REP_INFO. */
export const NBD_INFO_EXPORT = 0;
export const NBD_INFO_NAME = 1;
export const NBD_INFO_DESCRIPTION = 2;
export const NBD_INFO_BLOCK_SIZE = 3;

/** Transmission flags (u16), from NBD_INFO_EXPORT or the EXPORT_NAME reply. */
export const NBD_FLAG_HAS_FLAGS = 1 << 0;
export const NBD_FLAG_READ_ONLY = 1 << 1;
export const NBD_FLAG_SEND_FLUSH = 1 << 2;
export const NBD_FLAG_SEND_FUA = 1 << 3;
export const NBD_FLAG_ROTATIONAL = 1 << 4;
export const NBD_FLAG_SEND_TRIM = 1 << 5;
export const NBD_FLAG_SEND_WRITE_ZEROES = 1 << 6;
export const NBD_FLAG_SEND_DF = 1 << 7;
export const NBD_FLAG_CAN_MULTI_CONN = 1 << 8;
export const NBD_FLAG_SEND_CACHE = 1 << 10;
export const NBD_FLAG_SEND_FAST_ZERO = 1 << 11;

/** Commands (request `type`). */
export const NBD_CMD_READ = 0;
export const NBD_CMD_WRITE = 1;
export const NBD_CMD_DISC = 2;
export const NBD_CMD_FLUSH = 3;
export const NBD_CMD_TRIM = 4;
export const NBD_CMD_CACHE = 5;
export const NBD_CMD_WRITE_ZEROES = 6;
export const NBD_CMD_BLOCK_STATUS = 7;

/** The commands this client sends, by number. */
export type NbdCommandType =
  | typeof NBD_CMD_READ
  | typeof NBD_CMD_WRITE
  | typeof NBD_CMD_FLUSH
  | typeof NBD_CMD_TRIM
  | typeof NBD_CMD_WRITE_ZEROES
  | typeof NBD_CMD_BLOCK_STATUS;

/** Command flag: force unit access. */
export const NBD_CMD_FLAG_FUA = 1 << 0;
/** Command flag (WRITE_ZEROES): keep the range allocated; do not punch a hole. */
export const NBD_CMD_FLAG_NO_HOLE = 1 << 1;
/** Command flag (READ): answer with one data chunk, no fragmentation. */
export const NBD_CMD_FLAG_DF = 1 << 2;
/** Command flag (BLOCK_STATUS): one extent descriptor only. */
export const NBD_CMD_FLAG_REQ_ONE = 1 << 3;
/** Command flag (WRITE_ZEROES): fail with ENOTSUP unless zeroing is fast. */
export const NBD_CMD_FLAG_FAST_ZERO = 1 << 4;

/** The meta context of allocation status, the one every server may offer. */
export const NBD_META_BASE_ALLOCATION = 'base:allocation';
/** `base:allocation` status flag: the extent is unallocated. */
export const NBD_STATE_HOLE = 1 << 0;
/** `base:allocation` status flag: the extent reads as zeros. */
export const NBD_STATE_ZERO = 1 << 1;

/** Structured reply chunk flag: the last chunk of a request. */
export const NBD_REPLY_FLAG_DONE = 1 << 0;
/** Structured reply chunk types. */
export const NBD_REPLY_TYPE_NONE = 0;
export const NBD_REPLY_TYPE_OFFSET_DATA = 1;
export const NBD_REPLY_TYPE_OFFSET_HOLE = 2;
export const NBD_REPLY_TYPE_BLOCK_STATUS = 5;
export const NBD_REPLY_TYPE_ERROR = 0x8001;
export const NBD_REPLY_TYPE_ERROR_OFFSET = 0x8002;
/** Bit 15 of a chunk type marks an error chunk, even one of an unknown type. */
export const NBD_REPLY_TYPE_ERROR_BIT = 0x8000;

/** Bytes of a request header. */
export const REQUEST_HEADER_BYTES = 28;
/** Bytes of a simple reply header. */
export const SIMPLE_REPLY_HEADER_BYTES = 16;
/** Bytes of a structured reply chunk header. */
export const STRUCTURED_REPLY_HEADER_BYTES = 20;
/** Bytes of an option reply header. */
export const OPTION_REPLY_HEADER_BYTES = 20;

/**
 * Largest READ or WRITE the client sends (32 MiB): the portable limit every server accepts,
 * qemu-nbd's advertised maximum, and half of nbdkit's hard cap.
 */
export const NBD_REQUEST_BYTES_MAX = 32 * MIB;
/** Largest TRIM or WRITE_ZEROES the client sends (1 GiB); the wire allows 4 GiB - 1. */
export const NBD_SPECIAL_REQUEST_BYTES_MAX = GIB;
/** Largest minimum block size the protocol allows (64 KiB). */
export const NBD_MIN_BLOCK_BYTES_MAX = 64 * KIB;
/**
 * Largest BLOCK_STATUS length the client asks for (4 GiB - 64 KiB): the u32 length field of
 * a compact request, rounded down to the largest minimum block so it stays block-aligned.
 * The server's maximum block size does not bound it: BLOCK_STATUS carries no payload the
 * client controls, and the spec lets such commands exceed the maximum.
 */
export const NBD_BLOCK_STATUS_BYTES_MAX = 2 ** 32 - NBD_MIN_BLOCK_BYTES_MAX;
/**
 * Largest BLOCK_STATUS chunk accepted (a context id and 2^20 descriptors, 8 MiB + 4 bytes),
 * the spec's bound on descriptors per chunk. The client streams descriptors rather than
 * buffering them, so the cap bounds the work a hostile server can cause, not memory.
 */
export const BLOCK_STATUS_CHUNK_BYTES_MAX = 4 + 8 * 2 ** 20;
/** Longest text (export name, error message) the protocol allows. */
export const NBD_STRING_BYTES_MAX = 4 * KIB;
/**
 * Largest option reply payload accepted (64 KiB). The longest legitimate one this client
 * asks for is an error with a 4096-byte message; the cap keeps a hostile server from making
 * the client buffer gigabytes during the handshake.
 */
export const OPTION_REPLY_BYTES_MAX = 64 * KIB;
/** Most option replies accepted for one option before the server is declared hostile. */
export const OPTION_REPLIES_MAX = 64;
/** Largest payload of an error chunk: u32 error, u16 length, message, u64 offset. */
export const ERROR_CHUNK_BYTES_MAX = 4 + 2 + NBD_STRING_BYTES_MAX + 8;
/** Largest payload of an unknown error-typed chunk, which the client skips unread (64 KiB). */
export const UNKNOWN_CHUNK_BYTES_MAX = 64 * KIB;
/**
 * Most separate ranges a READ reply may arrive in before the client gives up on it. In-order
 * chunks merge into one range; the cap bounds the bookkeeping a hostile server can cause.
 */
export const READ_REPLY_RANGES_MAX = 1024;
/** Largest cookie the client issues: cookies are safe integers, split into two u32 halves. */
export const NBD_COOKIE_MAX = Number.MAX_SAFE_INTEGER;

/** NBD error numbers and the errno names they stand for. */
const NBD_ERRNO_NAMES: ReadonlyMap<number, string> = new Map([
  [1, 'EPERM'],
  [5, 'EIO'],
  [12, 'ENOMEM'],
  [22, 'EINVAL'],
  [28, 'ENOSPC'],
  [75, 'EOVERFLOW'],
  [95, 'ENOTSUP'],
  [108, 'ESHUTDOWN'],
]);

/** NBD error numbers (Linux errno values, as on the wire). */
export const NBD_EPERM = 1;
export const NBD_EIO = 5;
export const NBD_ENOMEM = 12;
export const NBD_EINVAL = 22;
export const NBD_ENOSPC = 28;
export const NBD_EOVERFLOW = 75;
export const NBD_ENOTSUP = 95;
/** The NBD error number for `ESHUTDOWN`: the server is going away. */
export const NBD_ESHUTDOWN = 108;

/** The errno name for an NBD error number; unknown numbers count as `EINVAL`, per the spec. */
export function nbdErrnoName(errorNumber: number): string {
  return NBD_ERRNO_NAMES.get(errorNumber) ?? 'EINVAL';
}

/** The protocol name of a command, for `IoError.syscall`. */
export function nbdCommandName(type: NbdCommandType): string {
  switch (type) {
    case NBD_CMD_READ:
      return 'NBD_CMD_READ';
    case NBD_CMD_WRITE:
      return 'NBD_CMD_WRITE';
    case NBD_CMD_FLUSH:
      return 'NBD_CMD_FLUSH';
    case NBD_CMD_TRIM:
      return 'NBD_CMD_TRIM';
    case NBD_CMD_WRITE_ZEROES:
      return 'NBD_CMD_WRITE_ZEROES';
    case NBD_CMD_BLOCK_STATUS:
      return 'NBD_CMD_BLOCK_STATUS';
  }
}

/** Payload bytes a command moves on the wire: its length for READ and WRITE, else 0. */
export function payloadBytesOf(type: NbdCommandType, lengthBytes: number): number {
  return type === NBD_CMD_READ || type === NBD_CMD_WRITE ? lengthBytes : 0;
}

/** A name for an option reply type, for messages. */
export function optionReplyName(replyType: number): string {
  const names: Record<number, string> = {
    [NBD_REP_ACK]: 'NBD_REP_ACK',
    [NBD_REP_INFO]: 'NBD_REP_INFO',
    [NBD_REP_META_CONTEXT]: 'NBD_REP_META_CONTEXT',
    [NBD_REP_ERR_UNSUP]: 'NBD_REP_ERR_UNSUP',
    [NBD_REP_ERR_POLICY]: 'NBD_REP_ERR_POLICY',
    [NBD_REP_ERR_INVALID]: 'NBD_REP_ERR_INVALID',
    [NBD_REP_ERR_PLATFORM]: 'NBD_REP_ERR_PLATFORM',
    [NBD_REP_ERR_TLS_REQD]: 'NBD_REP_ERR_TLS_REQD',
    [NBD_REP_ERR_UNKNOWN]: 'NBD_REP_ERR_UNKNOWN',
    [NBD_REP_ERR_SHUTDOWN]: 'NBD_REP_ERR_SHUTDOWN',
    [NBD_REP_ERR_BLOCK_SIZE_REQD]: 'NBD_REP_ERR_BLOCK_SIZE_REQD',
    [NBD_REP_ERR_TOO_BIG]: 'NBD_REP_ERR_TOO_BIG',
  };
  return names[replyType] ?? `reply type 0x${replyType.toString(16)}`;
}

assert.ok(NBD_REQUEST_BYTES_MAX % NBD_MIN_BLOCK_BYTES_MAX === 0, 'max request holds whole blocks');
assert.ok(NBD_SPECIAL_REQUEST_BYTES_MAX < 2 ** 32, 'special requests fit a u32 length');
assert.ok(NBD_BLOCK_STATUS_BYTES_MAX < 2 ** 32, 'block status fits a u32 length');
assert.ok(NBD_BLOCK_STATUS_BYTES_MAX % NBD_MIN_BLOCK_BYTES_MAX === 0, 'block status is aligned');
assert.ok(ERROR_CHUNK_BYTES_MAX <= OPTION_REPLY_BYTES_MAX);
