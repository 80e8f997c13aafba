// Owns the few libc calls Node does not expose: `ioctl` on block devices (size, block sizes,
// discard, zero-out), `fallocate` (punch hole, zero range), `preadv2` with RWF_NOWAIT (a
// read from the page cache that never blocks), `copy_file_range` (a copy between files
// inside the kernel), `setsockopt`/`getsockopt` (socket-options.ts), `pread64`/`pwrite64`
// for the blocking engine's one-buffer transfer (cheaper than `fs.readSync`), and `lseek` with
// SEEK_DATA/SEEK_HOLE (where a file holds data, for extent queries). Reads and writes on
// the event loop go through Node's `fs` or dmio's io_uring, not here.
// Bindings go through koffi and are loaded on first use, so code that never touches a local
// device never loads the native addon; the one loaded library is this module's default
// instance, shared with the io_uring bindings. Every call has a blocking form (for open-time
// probes and `submitSync`) and, where the event loop needs one, a callback form that runs the
// call on the libuv threadpool (a long discard must not stall everything else). A failed call
// becomes a `SysError` shaped like Node's own system errors (`code` is the errno name), so
// `errnoOf` reads it unchanged.
//
// koffi captures errno on the worker thread right after an async call and restores it while
// the callback runs, so `koffi.errno()` is only read synchronously at the start of a callback,
// and only when the call returned -1 (errno is not cleared on success).

import assert from '../assert.js';
import { SECTOR_SIZE } from '../constants.js';
import { errnoName, errnoNumber } from './errno-name.js';
import koffi from 'koffi';

type Koffi = typeof koffi;
type NativeFunction = ReturnType<ReturnType<Koffi['load']>['func']>;

/** `ioctl` requests this module knows, from `<linux/fs.h>` (x86-64 and arm64 encodings). */
export const BLOCK_IOCTL = {
  /** `_IOR(0x12, 114, size_t)`: device size in bytes, as uint64. */
  BLKGETSIZE64: 0x80081272,
  /** `_IO(0x12, 104)`: logical block size in bytes, as int. */
  BLKSSZGET: 0x1268,
  /** `_IO(0x12, 123)`: physical block size in bytes, as unsigned int. */
  BLKPBSZGET: 0x127b,
  /** `_IO(0x12, 94)`: 1 when the device is read-only, as int. */
  BLKROGET: 0x125e,
  /** `_IO(0x12, 119)`: discard the byte range `{start, length}` (uint64[2]). */
  BLKDISCARD: 0x1277,
  /** `_IO(0x12, 127)`: zero the byte range `{start, length}` (uint64[2]). */
  BLKZEROOUT: 0x127f,
} as const;

/** The two range ioctls. */
export type BlockRangeIoctl = 'BLKDISCARD' | 'BLKZEROOUT';

/** `fallocate` mode bits from `<linux/falloc.h>`. */
export const FALLOC_FL = {
  /** Do not change the file size. */
  KEEP_SIZE: 0x01,
  /** Deallocate the range; it then reads as zeros. Requires KEEP_SIZE. */
  PUNCH_HOLE: 0x02,
  /** Zero the range, converting it to unwritten extents where the filesystem can. */
  ZERO_RANGE: 0x10,
} as const;

/** A failed libc call, shaped like Node's system errors. */
export class SysError extends Error {
  /** The errno name, such as `EOPNOTSUPP`. */
  readonly code: string;
  /** The negated errno number, as Node reports it. */
  readonly errno: number;
  /** The call that failed, such as `fallocate` or `ioctl BLKZEROOUT`. */
  readonly syscall: string;

  constructor(errnoValue: number, syscall: string) {
    const code = errnoName(errnoValue);
    super(`${code}: ${syscall} failed (errno ${errnoValue})`);
    this.name = 'SysError';
    this.code = code;
    this.errno = -errnoValue;
    this.syscall = syscall;
  }
}

/** Completion of a callback-form call: `null` on success. */
export type SysCallback = (error: SysError | null) => void;

interface LibcBindings {
  readonly koffi: Koffi;
  readonly ioctl: NativeFunction;
  readonly fallocate: NativeFunction;
  readonly preadv2: NativeFunction;
  readonly pread: NativeFunction;
  readonly pwrite: NativeFunction;
  readonly copyFileRange: NativeFunction;
  readonly lseek: NativeFunction;
  readonly setsockopt: NativeFunction;
  readonly getsockopt: NativeFunction;
  readonly fstatfs: NativeFunction;
  readonly fcntlInt: NativeFunction;
}

/** koffi and the C library, as loaded once and shared with the io_uring bindings. */
interface LoadedLibrary {
  readonly koffi: Koffi;
  readonly library: ReturnType<Koffi['load']>;
}

/**
 * The default instance: the C library and its bindings, loaded on first use; null where they
 * cannot load (not Linux/glibc, no koffi build). A cache of a fact fixed for the process.
 */
let loaded: { readonly library: LoadedLibrary; readonly bindings: LibcBindings } | null |
  undefined;

/** Loads the library and its bindings once; throws (every time) where they cannot load. */
function load(): { readonly library: LoadedLibrary; readonly bindings: LibcBindings } {
  if (loaded === undefined) {
    try {
      loaded = bindLibc();
    } catch (error) {
      loaded = null;
      throw error;
    }
  }
  if (loaded === null) {
    throw new SysError(errnoNumber('ENOSYS') ?? 38, `libc on ${process.platform}`);
  }
  return loaded;
}

/** koffi and libc.so.6 on first use. @throws SysError (ENOSYS) where they cannot load. */
export function libcLibrary(): LoadedLibrary {
  return load().library;
}

function libc(): LibcBindings {
  return load().bindings;
}

function bindLibc(): { readonly library: LoadedLibrary; readonly bindings: LibcBindings } {
  if (process.platform !== 'linux') {
    throw new SysError(errnoNumber('ENOSYS') ?? 38, `libc on ${process.platform}`);
  }
  const library = koffi.load('libc.so.6');
  // ioctl is variadic in C; declaring the one pointer argument as fixed is safe on the
  // x86-64 and arm64 Linux ABIs, where a variadic pointer travels in the same register.
  const ioctl = library.func('int ioctl(int fd, unsigned long request, void *argument)');
  const fallocate = library.func('int fallocate(int fd, int mode, int64_t offset, int64_t len)');
  const preadv2 = library.func(
    'intptr_t preadv2(int fd, void *iov, int iovcnt, int64_t offset, int flags)');
  const pread = library.func('intptr_t pread64(int fd, void *buffer, size_t count, int64_t offset)');
  const pwrite = library.func(
    'intptr_t pwrite64(int fd, const void *buffer, size_t count, int64_t offset)');
  const copyFileRange = library.func('intptr_t copy_file_range(int fd_in, int64_t *off_in, ' +
    'int fd_out, int64_t *off_out, size_t len, unsigned int flags)');
  const lseek = library.func('int64_t lseek(int fd, int64_t offset, int whence)');
  const setsockopt = library.func(
    'int setsockopt(int fd, int level, int name, const int *value, uint32_t valueBytes)');
  const getsockopt = library.func(
    'int getsockopt(int fd, int level, int name, _Out_ int *value, _Inout_ uint32_t *valueBytes)');
  // `struct statfs` is 120 bytes on 64-bit Linux; f_type, a long, comes first.
  const fstatfs = library.func('int fstatfs(int fd, _Out_ uint8_t *buffer)');
  // fcntl is variadic; every command used here takes one int, which travels in the same
  // register as a fixed int argument on the x86-64 and arm64 Linux ABIs.
  const fcntlInt = library.func('int fcntl(int fd, int command, int argument)');
  return {
    library: { koffi, library },
    bindings: {
      koffi, ioctl, fallocate, preadv2, pread, pwrite, copyFileRange, lseek, setsockopt,
      getsockopt, fstatfs, fcntlInt,
    },
  };
}

/** `setsockopt` and `getsockopt` (socket-options.ts), or null where libc does not load. */
export function socketOptionCalls(): Pick<LibcBindings, 'setsockopt' | 'getsockopt'> | null {
  return libcAvailable() ? libc() : null;
}

/** Loads the bindings now; throws a SysError when the platform has none. */
export function loadLibc(): void {
  libc();
}

function lastError(bindings: LibcBindings, syscall: string): SysError {
  const errnoValue = bindings.koffi.errno();
  assert.ok(errnoValue > 0, `${syscall} returned -1 without errno`);
  return new SysError(errnoValue, syscall);
}

function assertRange(offsetBytes: number, lengthBytes: number): void {
  assert.ok(Number.isSafeInteger(offsetBytes) && offsetBytes >= 0, 'offsetBytes');
  assert.ok(Number.isSafeInteger(lengthBytes) && lengthBytes > 0, 'lengthBytes');
}

/** `fallocate(fd, mode, offsetBytes, lengthBytes)`, blocking; returns the error or null. */
export function fallocateSync(
  fd: number, mode: number, offsetBytes: number, lengthBytes: number,
): SysError | null {
  assertRange(offsetBytes, lengthBytes);
  const bindings = libc();
  const result = bindings.fallocate(fd, mode, offsetBytes, lengthBytes) as number;
  return result === 0 ? null : lastError(bindings, 'fallocate');
}

/** `fallocate` on a threadpool thread; `callback` runs on the event loop. */
export function fallocateAsync(
  fd: number, mode: number, offsetBytes: number, lengthBytes: number, callback: SysCallback,
): void {
  assertRange(offsetBytes, lengthBytes);
  const bindings = libc();
  bindings.fallocate.async(fd, mode, offsetBytes, lengthBytes,
    (failure: unknown, result: number) => {
      assert.equal(failure, null, 'koffi could not run fallocate');
      callback(result === 0 ? null : lastError(bindings, 'fallocate'));
    });
}

function rangeArgument(offsetBytes: number, lengthBytes: number): BigUint64Array {
  // Host byte order, as the kernel reads `uint64_t range[2]`.
  return new BigUint64Array([BigInt(offsetBytes), BigInt(lengthBytes)]);
}

/** `ioctl(fd, BLKDISCARD | BLKZEROOUT, {offsetBytes, lengthBytes})`, blocking. */
export function blockRangeIoctlSync(
  fd: number, request: BlockRangeIoctl, offsetBytes: number, lengthBytes: number,
): SysError | null {
  assertRange(offsetBytes, lengthBytes);
  const bindings = libc();
  const argument = rangeArgument(offsetBytes, lengthBytes);
  const result = bindings.ioctl(fd, BLOCK_IOCTL[request], argument) as number;
  return result === 0 ? null : lastError(bindings, `ioctl ${request}`);
}

/** The range ioctl on a threadpool thread; `callback` runs on the event loop. */
export function blockRangeIoctlAsync(
  fd: number, request: BlockRangeIoctl, offsetBytes: number, lengthBytes: number,
  callback: SysCallback,
): void {
  assertRange(offsetBytes, lengthBytes);
  const bindings = libc();
  // `argument` stays referenced by this closure until the call has finished with it.
  const argument = rangeArgument(offsetBytes, lengthBytes);
  bindings.ioctl.async(fd, BLOCK_IOCTL[request], argument, (failure: unknown, result: number) => {
    assert.equal(failure, null, 'koffi could not run ioctl');
    assert.equal(argument.length, 2);
    callback(result === 0 ? null : lastError(bindings, `ioctl ${request}`));
  });
}

/** `preadv2` flag: fail with EAGAIN rather than wait for I/O (data not in the page cache). */
export const RWF_NOWAIT = 0x08;

/**
 * `preadv2(fd, [buffer], 1, positionBytes, RWF_NOWAIT)` on the calling thread: copies from the
 * page cache, or fails at once (EAGAIN) where that would need I/O; it never blocks. Returns
 * the bytes read, or the error.
 */
export function preadNowaitSync(
  fd: number, buffer: Uint8Array, positionBytes: number,
): number | SysError {
  assertRange(positionBytes, buffer.length);
  // V8 keeps only typed arrays of at most 64 bytes inside its moving heap; a sector-sized or
  // larger buffer lives outside it, so its address stays valid for the call.
  assert.ok(buffer.length >= SECTOR_SIZE, 'a read of at least one sector');
  const bindings = libc();
  const nowaitIovec = new BigUint64Array(2); // One iovec: `{ base, length }`.
  nowaitIovec[0] = BigInt(bindings.koffi.address(buffer) as number | bigint);
  nowaitIovec[1] = BigInt(buffer.length);
  const result = Number(bindings.preadv2(fd, nowaitIovec, 1, positionBytes, RWF_NOWAIT));
  return result >= 0 ? result : lastError(bindings, 'preadv2');
}

/**
 * One `pread64` or `pwrite64` of all of `buffer` at `positionBytes` on the calling thread: the
 * bytes moved (fewer at the end of a file), or the error; a signal before any byte moved calls
 * again. The same system call as `fs.readSync`/`fs.writeSync` for about 0.45 µs less per call
 * (1.9 against 2.3 µs for a cached 4 KiB read here): the blocking engine's one-buffer transfer.
 */
export function transferOneSync(
  fd: number, op: 'read' | 'write', buffer: Uint8Array, positionBytes: number,
): number | SysError {
  const bindings = libc();
  const call = op === 'read' ? bindings.pread : bindings.pwrite;
  for (;;) {
    const result = call(fd, buffer, buffer.length, positionBytes) as number;
    if (result >= 0) return result;
    const error = lastError(bindings, op === 'read' ? 'pread64' : 'pwrite64');
    if (error.code !== 'EINTR') return error;
  }
}

/** Bytes of `struct statfs` on 64-bit Linux (x86-64, arm64). */
const STATFS_BYTES = 120;

/**
 * The magic number of the filesystem holding `fd` (`fstatfs`'s `f_type`, such as 0xEF53 for
 * ext2/3/4), or the error.
 */
export function filesystemMagicSync(fd: number): number | SysError {
  const bindings = libc();
  const buffer = new Uint8Array(STATFS_BYTES);
  const result = bindings.fstatfs(fd, buffer) as number;
  if (result !== 0) return lastError(bindings, 'fstatfs');
  return Number(new DataView(buffer.buffer).getBigUint64(0, true));
}

/** fcntl's F_DUPFD_CLOEXEC. */
const F_DUPFD_CLOEXEC = 1030;

/**
 * A second descriptor for what `fd` refers to, close-on-exec (`fcntl(F_DUPFD_CLOEXEC)`), or
 * the error. The caller owns it and closes it.
 */
export function duplicateFdSync(fd: number): number | SysError {
  const bindings = libc();
  const result = bindings.fcntlInt(fd, F_DUPFD_CLOEXEC, 0) as number;
  return result < 0 ? lastError(bindings, 'fcntl F_DUPFD_CLOEXEC') : result;
}

/** True when the libc bindings are usable; false (never a throw) where they cannot load. */
export function libcAvailable(): boolean {
  try {
    load();
    return true;
  } catch {
    return false; // Not Linux/glibc, or no koffi build for this platform.
  }
}

/** The size of a block device in bytes (`BLKGETSIZE64`). @throws SysError */
export function blockDeviceSizeBytesSync(fd: number): number {
  const bindings = libc();
  const output = new BigUint64Array(1);
  const result = bindings.ioctl(fd, BLOCK_IOCTL.BLKGETSIZE64, output) as number;
  if (result !== 0) throw lastError(bindings, 'ioctl BLKGETSIZE64');
  const sizeBytes = Number(output[0]);
  assert.ok(Number.isSafeInteger(sizeBytes), 'device larger than 2^53 bytes');
  return sizeBytes;
}

/** Logical (`BLKSSZGET`) or physical (`BLKPBSZGET`) block size in bytes. @throws SysError */
export function blockSizeBytesSync(fd: number, request: 'BLKSSZGET' | 'BLKPBSZGET'): number {
  const bindings = libc();
  const output = new Int32Array(1);
  const result = bindings.ioctl(fd, BLOCK_IOCTL[request], output) as number;
  if (result !== 0) throw lastError(bindings, `ioctl ${request}`);
  const blockBytes = output[0] ?? 0;
  assert.ok(blockBytes >= SECTOR_SIZE, `${request} gave ${blockBytes}`);
  return blockBytes;
}

/** True when the block device is read-only (`BLKROGET`). @throws SysError */
export function blockReadOnlySync(fd: number): boolean {
  const bindings = libc();
  const output = new Int32Array(1);
  const result = bindings.ioctl(fd, BLOCK_IOCTL.BLKROGET, output) as number;
  if (result !== 0) throw lastError(bindings, 'ioctl BLKROGET');
  return output[0] !== 0;
}

/** Completion of `copyFileRangeAsync`: the bytes copied (fewer than asked at EOF), or the error. */
export type CopyRangeCallback = (error: SysError | null, copiedBytes: number) => void;

/**
 * `copy_file_range(fdIn, &offsetIn, fdOut, &offsetOut, lengthBytes, 0)` on a threadpool thread:
 * the kernel copies between the two files without the data passing through this process.
 * One call may copy fewer bytes than asked; the caller loops.
 */
export function copyFileRangeAsync(
  fdIn: number, offsetInBytes: number, fdOut: number, offsetOutBytes: number,
  lengthBytes: number, callback: CopyRangeCallback,
): void {
  assertRange(offsetInBytes, lengthBytes);
  assertRange(offsetOutBytes, lengthBytes);
  const bindings = libc();
  const { koffi } = bindings;
  // The kernel writes the offsets back, so they live in native memory that cannot move or be
  // collected while the worker thread runs; they are freed in the completion.
  const offsetIn: unknown = koffi.alloc('int64_t', 1);
  const offsetOut: unknown = koffi.alloc('int64_t', 1);
  const release = (): void => {
    koffi.free(offsetIn);
    koffi.free(offsetOut);
  };
  try {
    koffi.encode(offsetIn, 'int64_t', offsetInBytes);
    koffi.encode(offsetOut, 'int64_t', offsetOutBytes);
    bindings.copyFileRange.async(fdIn, offsetIn, fdOut, offsetOut, lengthBytes, 0,
      (failure: unknown, result: number | bigint) => {
        assert.equal(failure, null, 'koffi could not run copy_file_range');
        const copiedBytes = Number(result);
        // errno is read before anything else can make a call that changes it.
        const error = copiedBytes < 0 ? lastError(bindings, 'copy_file_range') : null;
        release();
        callback(error, error === null ? copiedBytes : 0);
      });
  } catch (error) {
    release();
    throw error;
  }
}

/** `lseek` whence values that find allocation, from `<unistd.h>` (Linux 3.1+). */
export const SEEK_WHENCE = {
  /** The first offset at or after the given one that holds data; ENXIO when none does. */
  SEEK_DATA: 3,
  /** The first offset at or after the given one inside a hole (end of file counts as one). */
  SEEK_HOLE: 4,
} as const;

/** Completion of `seekAsync`: the offset found, or the error (ENXIO: none past the offset). */
export type SeekCallback = (error: SysError | null, foundBytes: number) => void;

/**
 * `lseek(fd, offsetBytes, SEEK_DATA | SEEK_HOLE)` on a threadpool thread: a filesystem may
 * walk its extent tree to answer, so the event loop does not wait for it. The descriptor's
 * own position moves, which no dmio path reads (transfers are positioned).
 */
export function seekAsync(
  fd: number, offsetBytes: number, whence: keyof typeof SEEK_WHENCE, callback: SeekCallback,
): void {
  assertSeekOffset(offsetBytes);
  const bindings = libc();
  bindings.lseek.async(fd, offsetBytes, SEEK_WHENCE[whence],
    (failure: unknown, result: number | bigint) => {
      assert.equal(failure, null, 'koffi could not run lseek');
      const foundBytes = Number(result);
      if (foundBytes < 0) callback(lastError(bindings, `lseek ${whence}`), 0);
      else callback(null, foundBytes);
    });
}

/**
 * `lseek(fd, offsetBytes, SEEK_DATA | SEEK_HOLE)` on the calling thread, which waits while the
 * filesystem answers: the offset found, or the error (ENXIO: none past the offset). For
 * threads that may block (`extentsSync`); the event loop uses `seekAsync`.
 */
export function seekSync(
  fd: number, offsetBytes: number, whence: keyof typeof SEEK_WHENCE,
): number | SysError {
  assertSeekOffset(offsetBytes);
  const bindings = libc();
  const foundBytes = Number(bindings.lseek(fd, offsetBytes, SEEK_WHENCE[whence]));
  return foundBytes < 0 ? lastError(bindings, `lseek ${whence}`) : foundBytes;
}

function assertSeekOffset(offsetBytes: number): void {
  assert.ok(Number.isSafeInteger(offsetBytes) && offsetBytes >= 0, 'offsetBytes');
}
