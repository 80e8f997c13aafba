// Owns every error the library throws or reports. Each class has one permanent literal `code`
// (messages may change, codes never do); docs/errors.md is the table of them. Three kinds:
// argument errors are thrown at the public boundary before anything is submitted; operating
// errors (IoError, NotSupportedError, NBD errors) come back per region; programmer errors are
// assertion failures the library never catches.

/** Every permanent error code of the library. */
export const ERROR_CODES = [
  'DMIO_ERR_INVALID_ARG_TYPE',
  'DMIO_ERR_OUT_OF_RANGE',
  'DMIO_ERR_INVALID_ARG_VALUE',
  'DMIO_ERR_MISALIGNED',
  'DMIO_ERR_TOO_MANY_REGIONS',
  'DMIO_ERR_MULTI_REGION_READ',
  'DMIO_ERR_UNKNOWN_MEMORY_TYPE',
  'DMIO_ERR_BUFFER_TOO_SHORT',
  'DMIO_ERR_INVALID_DEVICE_SPEC',
  'DMIO_ERR_OPEN_FAILED',
  'DMIO_ERR_DEVICE_CLOSED',
  'DMIO_ERR_CLIENT_DESTROYED',
  'DMIO_ERR_CLIENT_BUSY',
  'DMIO_ERR_READ_ONLY',
  'DMIO_ERR_CANNOT_BLOCK',
  'DMIO_ERR_NO_LEGACY_POOL',
  'DMIO_ERR_IO',
  'DMIO_ERR_NOT_SUPPORTED',
  'DMIO_ERR_KCOPYD_DESTROYED',
  'DMIO_ERR_KCOPYD_BUSY',
  'DMIO_ERR_ABORTED',
  'DMIO_ERR_NBD_PROTOCOL',
  'DMIO_ERR_NBD_DISCONNECTED',
  'DMIO_ERR_NBD_TIMEOUT',
  'DMIO_ERR_NBD_BROKEN',
  'DMIO_ERR_NBD_SERVER',
  'DMIO_ERR_INVALID_TABLE',
  'DMIO_ERR_TABLE_CYCLE',
] as const;

/** The union of every permanent error code. */
export type ErrorCode = (typeof ERROR_CODES)[number];

/** Options shared by every error constructor. */
export interface DmIoErrorOptions {
  /** The underlying error, kept unmodified. */
  cause?: unknown;
}

/**
 * Base of every error the library produces. Match on `code`, not on `instanceof`: two copies
 * of the library in one process have different classes but the same codes.
 */
export class DmIoError extends Error {
  /** The permanent code of this error. */
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options: DmIoErrorOptions = {}) {
    super(`${code}: ${message}`, options.cause === undefined ? {} : { cause: options.cause });
    this.code = code;
    this.name = new.target.name;
  }
}

/** An argument has the wrong type (`DMIO_ERR_INVALID_ARG_TYPE`). */
export class InvalidArgTypeError extends DmIoError {
  /** The argument's name, as a path such as `regions[2].sector`. */
  readonly argument: string;
  /** What the argument held. */
  readonly actual: unknown;

  constructor(argument: string, expected: string, actual: unknown) {
    super('DMIO_ERR_INVALID_ARG_TYPE', `${argument} must be ${expected}, got ${describe(actual)}`);
    this.argument = argument;
    this.actual = actual;
  }
}

/** An argument has the right type but a value outside its range (`DMIO_ERR_OUT_OF_RANGE`). */
export class OutOfRangeError extends DmIoError {
  /** The argument's name. */
  readonly argument: string;
  /** What the argument held. */
  readonly actual: unknown;
  /** The allowed range, in words. */
  readonly range: string;

  constructor(argument: string, range: string, actual: unknown) {
    super('DMIO_ERR_OUT_OF_RANGE', `${argument} must be ${range}, got ${describe(actual)}`);
    this.argument = argument;
    this.actual = actual;
    this.range = range;
  }
}

/** Argument errors that carry only a name and a message. */
type SimpleArgumentCode =
  | 'DMIO_ERR_INVALID_ARG_VALUE'
  | 'DMIO_ERR_MISALIGNED'
  | 'DMIO_ERR_TOO_MANY_REGIONS'
  | 'DMIO_ERR_MULTI_REGION_READ'
  | 'DMIO_ERR_UNKNOWN_MEMORY_TYPE'
  | 'DMIO_ERR_BUFFER_TOO_SHORT'
  | 'DMIO_ERR_INVALID_DEVICE_SPEC';

/**
 * A request was rejected at the boundary for a reason other than a type or a plain range:
 * misalignment, too many regions, a multi-region read, an unknown memory type, a buffer
 * shorter than the region, a malformed device spec. Nothing was submitted.
 */
export class InvalidRequestError extends DmIoError {
  /** The argument at fault. */
  readonly argument: string;

  constructor(code: SimpleArgumentCode, argument: string, message: string) {
    super(code, `${argument}: ${message}`);
    this.argument = argument;
  }
}

/** What an I/O error says about where it happened. */
export interface IoErrorDetails extends DmIoErrorOptions {
  /** The `errno` name, such as `EIO` or `ENOSPC`. */
  errno: string;
  /** The system call or protocol command that failed, such as `preadv` or `NBD_CMD_WRITE`. */
  syscall: string;
  /** The device's name, as `BlockDevice.name`. */
  device: string;
  /** The first sector of the failed request. */
  sector: number;
  /** The sectors the failed request covered. */
  countSectors: number;
  /** The region the request belonged to, when it belonged to one. */
  regionIndex?: number;
}

/**
 * An operating error from a device: the request failed at the OS, the server, or a fault
 * injector (`DMIO_ERR_IO`). Reported per region, never thrown at the boundary.
 */
export class IoError extends DmIoError {
  /** The `errno` name, such as `EIO`. */
  readonly errno: string;
  /** The system call or protocol command that failed. */
  readonly syscall: string;
  /** The device's name. */
  readonly device: string;
  /** The first sector of the failed request. */
  readonly sector: number;
  /** The sectors the failed request covered. */
  readonly countSectors: number;
  /** The region the request belonged to, or -1 outside a dm-io request. */
  readonly regionIndex: number;

  constructor(details: IoErrorDetails, code: ErrorCode = 'DMIO_ERR_IO') {
    const last = details.sector + Math.max(details.countSectors, 1) - 1;
    const range = details.countSectors === 0 ? `sector ${details.sector} (empty)` :
      `sectors ${details.sector}-${last}`;
    super(code, `${details.errno}, ${details.syscall} '${details.device}' ${range}`,
      details);
    this.errno = details.errno;
    this.syscall = details.syscall;
    this.device = details.device;
    this.sector = details.sector;
    this.countSectors = details.countSectors;
    this.regionIndex = details.regionIndex ?? -1;
  }

  /** A copy of this error that names the region it belonged to. */
  withRegion(regionIndex: number): IoError {
    const copy = Object.create(Object.getPrototypeOf(this) as object) as IoError;
    Object.assign(copy, this, { regionIndex });
    Object.defineProperty(copy, 'message', { value: this.message, enumerable: false });
    Object.defineProperty(copy, 'stack', { value: this.stack, enumerable: false });
    if (this.cause !== undefined) {
      Object.defineProperty(copy, 'cause', { value: this.cause, enumerable: false });
    }
    return copy;
  }
}

/**
 * The device cannot do this operation at all (`DMIO_ERR_NOT_SUPPORTED`): a discard or
 * write-zeroes region on a device whose limit is 0. Reported as that region's bit.
 */
export class NotSupportedError extends IoError {
  constructor(details: Omit<IoErrorDetails, 'errno'>) {
    super({ ...details, errno: 'EOPNOTSUPP' }, 'DMIO_ERR_NOT_SUPPORTED');
  }
}

/** Lifecycle errors: the object was closed or destroyed before the call. */
type LifecycleCode =
  | 'DMIO_ERR_DEVICE_CLOSED'
  | 'DMIO_ERR_CLIENT_DESTROYED'
  | 'DMIO_ERR_CLIENT_BUSY'
  | 'DMIO_ERR_KCOPYD_DESTROYED'
  | 'DMIO_ERR_KCOPYD_BUSY'
  | 'DMIO_ERR_NO_LEGACY_POOL'
  | 'DMIO_ERR_CANNOT_BLOCK'
  | 'DMIO_ERR_READ_ONLY';

/**
 * The call cannot run on this object in its current state: a closed device, a destroyed
 * client, a client whose waiting queue cannot hold the request, legacy calls without `dmIoGet`, a blocking call on a device that cannot block, a
 * write to a read-only device. Thrown at the boundary; nothing was submitted.
 */
export class StateError extends DmIoError {
  /** The object at fault: a device name, `client`, `kcopyd client` or `legacy pool`. */
  readonly target: string;

  constructor(code: LifecycleCode, target: string, message: string) {
    super(code, `${target}: ${message}`);
    this.target = target;
  }
}

/**
 * Work was cancelled before it finished (`DMIO_ERR_ABORTED`): thrown at the boundary when a
 * kcopyd job's `signal` is already aborted (nothing is submitted), and reported as
 * `writeErrors[d]` of a kcopyd job cancelled while running (its signal fired, or its
 * `onProgress` or `onChunkRead` threw) for each destination it did not finish. `cause` is the
 * signal's reason or the value the callback threw.
 */
export class AbortedError extends DmIoError {
  /** What was cancelled: a device name, or `kcopyd job`. */
  readonly target: string;

  constructor(target: string, message: string, options: DmIoErrorOptions = {}) {
    super('DMIO_ERR_ABORTED', `${target}: ${message}`, options);
    this.target = target;
  }
}

/** Opening a device failed at the OS (`DMIO_ERR_OPEN_FAILED`). */
export class OpenError extends DmIoError {
  /** The `errno` name. */
  readonly errno: string;
  /** The path or spec that was being opened. */
  readonly path: string;

  constructor(path: string, errno: string, message: string, options: DmIoErrorOptions = {}) {
    super('DMIO_ERR_OPEN_FAILED', `${errno}, open '${path}': ${message}`, options);
    this.errno = errno;
    this.path = path;
  }
}

/** Codes of the NBD family. */
type NbdCode =
  | 'DMIO_ERR_NBD_PROTOCOL'
  | 'DMIO_ERR_NBD_DISCONNECTED'
  | 'DMIO_ERR_NBD_TIMEOUT'
  | 'DMIO_ERR_NBD_BROKEN'
  | 'DMIO_ERR_NBD_SERVER';

/**
 * A failure of the NBD connection itself rather than of one request: a malformed reply, a
 * disconnect, a timeout, a handshake the server refused. Every request in flight fails with it.
 */
export class NbdError extends DmIoError {
  /** The server, as the URI it was opened with. */
  readonly server: string;

  constructor(code: NbdCode, server: string, message: string, options: DmIoErrorOptions = {}) {
    super(code, `${server}: ${message}`, options);
    this.server = server;
  }
}

/** Codes of device-mapper table errors. */
type TableCode = 'DMIO_ERR_INVALID_TABLE' | 'DMIO_ERR_TABLE_CYCLE';

/**
 * A device-mapper table was refused while it was being opened: a malformed line, a gap or
 * overlap, an unknown target, bad target arguments, a device too small for its extent
 * (`DMIO_ERR_INVALID_TABLE`), or a `table:` file that names itself through its devices
 * (`DMIO_ERR_TABLE_CYCLE`). Everything the table had opened is closed again before it is thrown.
 */
export class TableError extends DmIoError {
  /** The table: its file path, or `<text>` for a table given as text. */
  readonly source: string;
  /** The 1-based line at fault, or 0 when the table as a whole is at fault (empty). */
  readonly line: number;
  /** Why, without the source and line. */
  readonly reason: string;

  constructor(code: TableCode, source: string, line: number, reason: string,
    options: DmIoErrorOptions = {}) {
    super(code, `${source}${line > 0 ? `:${line}` : ''}: ${reason}`, options);
    this.source = source;
    this.line = line;
    this.reason = reason;
  }
}

/** Maps a Node system error (with `code` such as `EIO`) to its errno name. */
export function errnoOf(error: unknown): string {
  if (typeof error === 'object' && error !== null && 'code' in error) {
    const code = (error as { code: unknown }).code;
    if (typeof code === 'string' && /^E[A-Z0-9]+$/.test(code)) return code;
  }
  return 'EIO';
}

/** True when `error` is a library error with the given code; works across library copies. */
export function isDmIoError(error: unknown, code?: ErrorCode): error is DmIoError {
  if (typeof error !== 'object' || error === null) return false;
  const actual = (error as { code?: unknown }).code;
  if (typeof actual !== 'string' || !actual.startsWith('DMIO_ERR_')) return false;
  return code === undefined || actual === code;
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (typeof value === 'bigint') return `${value}n`;
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  if (typeof value === 'string') {
    return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value);
  }
  if (typeof value === 'function') return 'a function';
  if (Array.isArray(value)) return `an array of length ${value.length}`;
  if (value instanceof Uint8Array) return `a ${value.constructor.name} of ${value.length} bytes`;
  if (typeof value === 'object') return `an object (${value.constructor?.name ?? 'null prototype'})`;
  return typeof value;
}
