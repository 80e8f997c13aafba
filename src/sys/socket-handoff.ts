// Owns taking a connected socket's descriptor out of Node so another thread can serve it: a
// close-on-exec duplicate (`fcntl(F_DUPFD_CLOEXEC)` through libc.ts) of the descriptor behind
// a `net.Socket`. The socket keeps its own descriptor; the caller closes the socket and hands
// the duplicate on. Reading the descriptor takes the socket's `_handle.fd`, which Node 20 has
// but does not document; anything unexpected gives null and the caller serves the socket
// where it is.

import type { Socket } from 'node:net';
import { duplicateFdSync, libcAvailable, SysError } from './libc.js';

/** A duplicate of `socket`'s descriptor, or why there is none. */
export function duplicateSocketFd(socket: Socket): number | string {
  const fd = (socket as unknown as { _handle?: { fd?: unknown } | null })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) return 'the socket has no descriptor';
  if (!libcAvailable()) return 'libc is not available';
  const copy = duplicateFdSync(fd);
  return copy instanceof SysError ? copy.message : copy;
}
