// Owns the one socket option Node does not expose for stream sockets: the kernel send buffer
// size (SO_SNDBUF) of a Unix-domain socket, set through koffi's libc like the calls of
// libc.ts (whose bindings these are). Node offers `setSendBufferSize` only on UDP sockets. The
// bindings load on first use; a platform without them (or a descriptor that is not a Unix
// socket) is left as it is.

import type { Socket } from 'node:net';
import { socketOptionCalls } from './libc.js';

/** `<sys/socket.h>` and `<asm/socket.h>` values, the same on x86-64 and arm64 Linux. */
const SOL_SOCKET = 1;
const SO_SNDBUF = 7;
const SO_DOMAIN = 39;
const AF_UNIX = 1;

/**
 * Asks for a send buffer of `bytes` on `fd` when it is a Unix-domain stream socket (the kernel
 * doubles the value for its bookkeeping and caps it at `net.core.wmem_max`). Returns true when
 * the option was set; false, having changed nothing, for any other descriptor or failure.
 * TCP sockets are never touched: setting SO_SNDBUF there would turn off the kernel's own
 * send-buffer autotuning.
 */
export function setUnixSendBufferBytes(fd: number, bytes: number): boolean {
  if (!Number.isSafeInteger(fd) || fd < 0 || !Number.isSafeInteger(bytes) || bytes <= 0) {
    return false;
  }
  const native = socketOptionCalls();
  if (native === null) return false;
  const domain = [0];
  const domainBytes = [4];
  if (native.getsockopt(fd, SOL_SOCKET, SO_DOMAIN, domain, domainBytes) !== 0 ||
      domain[0] !== AF_UNIX) {
    return false;
  }
  return native.setsockopt(fd, SOL_SOCKET, SO_SNDBUF, [bytes], 4) === 0;
}

/**
 * The descriptor behind a connected `net.Socket`, from its handle (`_handle.fd`, a Node 20
 * internal), or null where Node does not show one.
 */
export function socketFd(socket: Socket): number | null {
  const fd = (socket as unknown as { _handle?: { fd?: unknown } | null })._handle?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : null;
}

/**
 * `setUnixSendBufferBytes` for a connected `net.Socket`, through `socketFd`; sockets whose
 * descriptor Node does not show are left as they are. Returns true when the option was set.
 */
export function setSocketSendBufferBytes(socket: Socket, bytes: number): boolean {
  const fd = socketFd(socket);
  return fd !== null && setUnixSendBufferBytes(fd, bytes);
}

/** The send buffer the kernel keeps for `fd` (SO_SNDBUF as read back), or null. */
export function sendBufferBytes(fd: number): number | null {
  const native = socketOptionCalls();
  if (native === null) return null;
  const value = [0];
  const valueBytes = [4];
  if (native.getsockopt(fd, SOL_SOCKET, SO_SNDBUF, value, valueBytes) !== 0) return null;
  return value[0] ?? null;
}
