// Owns taking a connected socket's descriptor out of Node so another thread can serve it: a
// close-on-exec duplicate (`fcntl(F_DUPFD_CLOEXEC)` through libc.ts) of the descriptor behind
// a `net.Socket`. The socket keeps its own descriptor; the caller closes the socket and hands
// the duplicate on. The descriptor is read as socket-options.ts reads it (`socketFd`, a Node 20
// internal); anything unexpected gives the reason instead, and the caller decides what to do
// with the socket.

import type { Socket } from 'node:net';
import { duplicateFdSync, libcAvailable, SysError } from './libc.js';
import { socketFd } from './socket-options.js';

/** A duplicate of `socket`'s descriptor, or why there is none. */
export function duplicateSocketFd(socket: Socket): number | string {
  const fd = socketFd(socket);
  if (fd === null) return 'the socket has no descriptor';
  if (!libcAvailable()) return 'libc is not available';
  const copy = duplicateFdSync(fd);
  return copy instanceof SysError ? copy.message : copy;
}
