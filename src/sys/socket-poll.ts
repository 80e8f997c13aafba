// Owns the socket calls of a thread that drives its own non-blocking sockets without libuv (an
// NBD connection thread polling its clients): `poll(2)` over a fixed `struct pollfd` array, an
// eventfd another thread signals to wake that poll, `recv`/`sendmsg` with MSG_DONTWAIT that
// answer "would block" as -1 instead of waiting, `shutdown` of the sending side for a polite
// close, and the fcntl that makes a descriptor
// non-blocking. Bound through koffi on the C library libc.ts loads once per thread; a failed
// call becomes libc.ts's `SysError`. Only `poll` (and only with a timeout) ever waits.
//
// This module's one default instance holds the bindings, the scratch buffer in which `sendNow`
// builds its `struct msghdr` and iovecs (rewritten by every call, never held across calls) and
// the addresses of buffers seen so far (native-memory.ts). It is made on first use; each
// worker thread loads its own instance of this module, so threads never share it.

import assert from '../assert.js';
import { errnoNumber } from './errno-name.js';
import { libcLibrary, SysError } from './libc.js';
import { BufferAddresses, writeWord64 } from './native-memory.js';

type LoadedLibrary = ReturnType<typeof libcLibrary>;
type NativeFunction = ReturnType<LoadedLibrary['library']['func']>;

/** `poll` event bits from `<poll.h>` (the same on x86-64 and arm64 Linux). */
export const POLLIN = 0x001;
export const POLLOUT = 0x004;
export const POLLERR = 0x008;
export const POLLHUP = 0x010;
export const POLLNVAL = 0x020;

/** Pieces one `sendNow` passes to the kernel; later ones wait for the next call. */
export const SEND_PIECES_MAX = 64;

/** `<fcntl.h>` and `<sys/eventfd.h>` values (generic Linux ABI: x86-64 and arm64). */
const O_NONBLOCK = 0o4000;
const O_CLOEXEC = 0o2000000;
const EFD_NONBLOCK = O_NONBLOCK;
const EFD_CLOEXEC = O_CLOEXEC;
const F_GETFL = 3;
const F_SETFL = 4;
/** `<sys/socket.h>` send/recv flags. */
const MSG_DONTWAIT = 0x40;
const MSG_NOSIGNAL = 0x4000;

const EAGAIN = errnoNumber('EAGAIN') ?? 11;
const EINTR = errnoNumber('EINTR') ?? 4;

/** Bytes of one `struct pollfd`: int fd, short events, short revents. */
const POLLFD_BYTES = 8;
/** Bytes of one `struct iovec` on 64-bit Linux: void *base, size_t length. */
const IOVEC_BYTES = 16;
/** Bytes of `struct msghdr` on 64-bit Linux (name, namelen, iov, iovlen, control, ...). */
const MSGHDR_BYTES = 56;
/** Offsets inside `struct msghdr` of `msg_iov` and `msg_iovlen`; every other field stays 0. */
const MSGHDR_IOV_OFFSET = 16;
const MSGHDR_IOVLEN_OFFSET = 24;
/** Bytes of an eventfd's counter, as read and written. */
const WAKE_COUNTER_BYTES = 8;
/**
 * Reads `drainWakeFd` makes at most. One read takes the whole counter; a second finds only
 * signals that arrived meanwhile, and a thread signalling nonstop must not hold this one (a
 * signal left behind just makes the next poll return at once).
 */
const WAKE_DRAIN_READS_MAX = 16;
/** Largest `int` timeout `poll` takes. */
const POLL_TIMEOUT_MS_MAX = 0x7fffffff;

assert.ok(SEND_PIECES_MAX * IOVEC_BYTES % 8 === 0, 'the msghdr after the iovecs is aligned');

interface SocketBindings {
  readonly koffi: LoadedLibrary['koffi'];
  readonly eventfd: NativeFunction;
  readonly read: NativeFunction;
  readonly write: NativeFunction;
  readonly close: NativeFunction;
  readonly fcntlInt: NativeFunction;
  readonly poll: NativeFunction;
  readonly recv: NativeFunction;
  readonly sendmsg: NativeFunction;
  readonly shutdown: NativeFunction;
}

/** The scratch `sendNow` rewrites on every call: iovecs, then the msghdr pointing at them. */
interface SendScratch {
  /** The whole scratch as 32-bit words (iovecs from word 0, then the msghdr). */
  readonly words: Uint32Array;
  /** The msghdr alone, as passed to `sendmsg`. */
  readonly msghdr: Uint8Array;
}

/** What this module keeps for its thread. */
interface SocketNative {
  readonly bindings: SocketBindings;
  readonly scratch: SendScratch;
  /** Addresses of the buffers passed to `sendNow` or `receiveNow` (native-memory.ts). */
  readonly addresses: BufferAddresses;
}

/** The default instance, made on first use (see the header). */
let instance: SocketNative | undefined;

function native(): SocketNative {
  if (instance === undefined) {
    const bindings = bindSocketCalls(libcLibrary());
    instance = { bindings, scratch: makeSendScratch(bindings),
      addresses: new BufferAddresses(bindings.koffi) };
  }
  return instance;
}

function bindSocketCalls({ koffi, library }: LoadedLibrary): SocketBindings {
  return {
    koffi,
    eventfd: library.func('int eventfd(unsigned int initval, int flags)'),
    read: library.func('intptr_t read(int fd, void *buffer, size_t count)'),
    write: library.func('intptr_t write(int fd, const void *buffer, size_t count)'),
    close: library.func('int close(int fd)'),
    // fcntl is variadic; F_GETFL and F_SETFL take one int, which travels in the same register
    // as a fixed int argument on the x86-64 and arm64 Linux ABIs.
    fcntlInt: library.func('int fcntl(int fd, int command, int argument)'),
    poll: library.func('int poll(void *fds, unsigned long count, int timeoutMs)'),
    recv: library.func('intptr_t recv(int fd, void *buffer, size_t length, int flags)'),
    sendmsg: library.func('intptr_t sendmsg(int fd, const void *message, int flags)'),
    shutdown: library.func('int shutdown(int fd, int how)'),
  };
}

function makeSendScratch(bindings: SocketBindings): SendScratch {
  const msghdrOffsetBytes = SEND_PIECES_MAX * IOVEC_BYTES;
  // Over 64 bytes, so V8 keeps it outside its moving heap and its address stays fixed.
  const words = new Uint32Array((msghdrOffsetBytes + MSGHDR_BYTES) / 4);
  const bytes = new Uint8Array(words.buffer);
  const baseAddress = Number(bindings.koffi.address(bytes) as number | bigint);
  writeWord64(words, (msghdrOffsetBytes + MSGHDR_IOV_OFFSET) / 4, baseAddress);
  return { words, msghdr: bytes.subarray(msghdrOffsetBytes) };
}


function errnoNow(bindings: SocketBindings, syscall: string): number {
  const errnoValue = bindings.koffi.errno() as number;
  assert.ok(errnoValue > 0, `${syscall} returned -1 without errno`);
  return errnoValue;
}

/**
 * A new eventfd (counter 0, non-blocking, close-on-exec) for `signalWakeFd` to wake a
 * `PollSet.wait` that polls it for POLLIN. The caller closes it with `closeFd`.
 * @throws SysError when the kernel refuses (EMFILE, ENFILE, ENOMEM) or libc cannot load.
 */
export function createWakeFd(): number {
  const { bindings } = native();
  const fd = bindings.eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC) as number;
  if (fd < 0) throw new SysError(errnoNow(bindings, 'eventfd'), 'eventfd');
  return fd;
}

/** The counter `signalWakeFd` adds: 1, in host byte order. Never written. */
const WAKE_ONE = new BigUint64Array([1n]);

/**
 * Adds 1 to the eventfd's counter, making it readable; any thread may call it. A counter
 * already at its maximum (EAGAIN) is readable anyway, so that is not an error.
 * @throws SysError for anything else (EBADF: not an open descriptor).
 */
export function signalWakeFd(fd: number): void {
  const { bindings } = native();
  for (;;) {
    if (Number(bindings.write(fd, WAKE_ONE, WAKE_COUNTER_BYTES)) >= 0) return;
    const errnoValue = errnoNow(bindings, 'write eventfd');
    if (errnoValue === EAGAIN) return;
    if (errnoValue !== EINTR) throw new SysError(errnoValue, 'write eventfd');
  }
}

/**
 * Reads the eventfd's counter back to 0 (until EAGAIN, at most WAKE_DRAIN_READS_MAX reads),
 * so the next poll waits again.
 * @throws SysError for anything but EAGAIN and EINTR (EBADF, EINVAL: not an eventfd).
 */
export function drainWakeFd(fd: number): void {
  const { bindings } = native();
  const counter = new BigUint64Array(1);
  for (let reads = 0; reads < WAKE_DRAIN_READS_MAX; reads += 1) {
    if (Number(bindings.read(fd, counter, WAKE_COUNTER_BYTES)) >= 0) continue;
    const errnoValue = errnoNow(bindings, 'read eventfd');
    if (errnoValue === EAGAIN) return;
    if (errnoValue !== EINTR) throw new SysError(errnoValue, 'read eventfd');
  }
}

/** `shutdown(2)` how: no more sends (the peer reads the end of the stream). */
const SHUT_WR = 1;

/**
 * Ends the sending side of a socket (the peer sees the end of the stream) while it can still
 * receive; errors (ENOTCONN: the peer is gone) are ignored, as there is nothing left to end.
 */
export function shutdownWrite(fd: number): void {
  native().bindings.shutdown(fd, SHUT_WR);
}

/** close(2); errors are ignored (the descriptor is gone either way on Linux). */
export function closeFd(fd: number): void {
  native().bindings.close(fd);
}

/**
 * Sets O_NONBLOCK on `fd` (fcntl F_GETFL, then F_SETFL), keeping its other status flags.
 * @throws SysError (EBADF: not an open descriptor).
 */
export function setNonBlocking(fd: number): void {
  const { bindings } = native();
  const flags = bindings.fcntlInt(fd, F_GETFL, 0) as number;
  if (flags < 0) throw new SysError(errnoNow(bindings, 'fcntl F_GETFL'), 'fcntl F_GETFL');
  if ((flags & O_NONBLOCK) !== 0) return;
  if ((bindings.fcntlInt(fd, F_SETFL, flags | O_NONBLOCK) as number) < 0) {
    throw new SysError(errnoNow(bindings, 'fcntl F_SETFL'), 'fcntl F_SETFL');
  }
}

/** A `struct pollfd` array of a fixed capacity and the `poll(2)` over its first entries. */
export class PollSet {
  /** Entries the array holds. */
  readonly capacity: number;
  readonly #bytes: Uint8Array;
  readonly #fds: Int32Array;
  readonly #shorts: Uint16Array;
  readonly #bindings: SocketBindings;

  /** @throws SysError (ENOSYS) where libc cannot load. */
  constructor(capacity: number) {
    assert.ok(Number.isSafeInteger(capacity) && capacity >= 1, 'capacity');
    this.capacity = capacity;
    const buffer = new ArrayBuffer(capacity * POLLFD_BYTES);
    this.#bytes = new Uint8Array(buffer);
    this.#fds = new Int32Array(buffer);
    this.#shorts = new Uint16Array(buffer);
    this.#bindings = native().bindings;
  }

  /** Entry `index` watches `fd` for `events` (POLLIN | POLLOUT ...); a negative fd is skipped. */
  set(index: number, fd: number, events: number): void {
    this.#assertIndex(index);
    assert.ok(Number.isInteger(fd), 'fd');
    assert.ok(Number.isInteger(events) && events >= 0 && events <= 0xffff, 'events');
    this.#fds[index * 2] = fd;
    this.#shorts[index * 4 + 2] = events;
    this.#shorts[index * 4 + 3] = 0;
  }

  /**
   * `poll(2)` over entries `[0, count)`, waiting at most `timeoutMs` (-1: until one is ready,
   * 0: not at all). Returns how many entries have events (0 on timeout, and when a signal
   * interrupted the wait: EINTR, with every `revents` cleared).
   * @throws SysError for anything else (EFAULT, EINVAL, ENOMEM).
   */
  wait(count: number, timeoutMs: number): number {
    assert.ok(Number.isSafeInteger(count) && count >= 0 && count <= this.capacity, 'count');
    assert.ok(Number.isInteger(timeoutMs) && timeoutMs >= -1 &&
      timeoutMs <= POLL_TIMEOUT_MS_MAX,
      'timeoutMs');
    const ready = this.#bindings.poll(this.#bytes, count, timeoutMs) as number;
    if (ready >= 0) return ready;
    const errnoValue = errnoNow(this.#bindings, 'poll');
    if (errnoValue !== EINTR) throw new SysError(errnoValue, 'poll');
    for (let index = 0; index < count; index += 1) this.#shorts[index * 4 + 3] = 0;
    return 0;
  }

  /** The events `wait` found on entry `index` (POLLIN, POLLOUT, POLLERR, POLLHUP, POLLNVAL). */
  revents(index: number): number {
    this.#assertIndex(index);
    return this.#shorts[index * 4 + 3] ?? 0;
  }

  #assertIndex(index: number): void {
    assert.ok(Number.isSafeInteger(index) && index >= 0 && index < this.capacity, 'index');
  }
}

/**
 * One `recv(2)` with MSG_DONTWAIT into `target[offsetBytes, offsetBytes + lengthBytes)`.
 * Returns the bytes received (at least 1), 0 at the end of the stream, or -1 when nothing is
 * there yet (EAGAIN). A signal before any byte arrived calls again.
 * @throws SysError for any other error (ECONNRESET, EBADF, ENOTSOCK).
 */
export function receiveNow(
  fd: number, target: Uint8Array, offsetBytes: number, lengthBytes: number,
): number {
  assert.ok(Number.isSafeInteger(offsetBytes) && offsetBytes >= 0, 'offsetBytes');
  assert.ok(Number.isSafeInteger(lengthBytes) && lengthBytes > 0, 'lengthBytes');
  assert.ok(offsetBytes + lengthBytes <= target.length, 'the range lies inside target');
  const state = native();
  const { bindings } = state;
  const address = state.addresses.addressOf(target) + offsetBytes;
  for (;;) {
    const receivedBytes = Number(bindings.recv(fd, address, lengthBytes, MSG_DONTWAIT));
    if (receivedBytes >= 0) return receivedBytes;
    const errnoValue = errnoNow(bindings, 'recv');
    if (errnoValue === EAGAIN) return -1;
    if (errnoValue !== EINTR) throw new SysError(errnoValue, 'recv');
  }
}

/**
 * One `sendmsg(2)` with MSG_DONTWAIT | MSG_NOSIGNAL of `pieces` in order, the first from
 * `firstOffsetBytes` (at most its length); empty pieces are skipped and at most
 * SEND_PIECES_MAX others go in one call. Returns the bytes the kernel took (fewer than offered
 * when its buffer filled; 0 when nothing was offered), or -1 when it took none (EAGAIN). A
 * signal before any byte was taken calls again.
 * @throws SysError for any other error (EPIPE, ECONNRESET: the peer is gone).
 */
export function sendNow(
  fd: number, pieces: readonly Uint8Array[], firstOffsetBytes: number,
): number {
  const first = pieces[0];
  assert.ok(Number.isSafeInteger(firstOffsetBytes) && firstOffsetBytes >= 0 &&
    firstOffsetBytes <= (first?.length ?? 0), 'firstOffsetBytes lies inside the first piece');
  const state = native();
  const { bindings, scratch } = state;
  const iovecCount = fillIovecs(state, scratch.words, pieces, firstOffsetBytes);
  if (iovecCount === 0) return 0;
  writeWord64(scratch.words, (scratch.msghdr.byteOffset + MSGHDR_IOVLEN_OFFSET) / 4, iovecCount);
  for (;;) {
    const sentBytes = Number(bindings.sendmsg(fd, scratch.msghdr, MSG_DONTWAIT | MSG_NOSIGNAL));
    if (sentBytes >= 0) return sentBytes;
    const errnoValue = errnoNow(bindings, 'sendmsg');
    if (errnoValue === EAGAIN) return -1;
    if (errnoValue !== EINTR) throw new SysError(errnoValue, 'sendmsg');
  }
}

/** Writes the iovecs of the non-empty pieces (at most SEND_PIECES_MAX); returns how many. */
function fillIovecs(
  state: SocketNative, words: Uint32Array, pieces: readonly Uint8Array[],
  firstOffsetBytes: number,
): number {
  let iovecCount = 0;
  for (let index = 0; index < pieces.length && iovecCount < SEND_PIECES_MAX; index += 1) {
    const piece = pieces[index] as Uint8Array;
    const skipBytes = index === 0 ? firstOffsetBytes : 0;
    const lengthBytes = piece.length - skipBytes;
    if (lengthBytes === 0) continue;
    const word = iovecCount * (IOVEC_BYTES / 4);
    writeWord64(words, word, state.addresses.addressOf(piece) + skipBytes);
    writeWord64(words, word + 2, lengthBytes);
    iovecCount += 1;
  }
  return iovecCount;
}
