// Owns what the server does to an accepted socket below Node's API: giving a plain socket an
// `onread` reader. (Its larger kernel send buffer on Unix sockets is set by connection.ts
// through sys/socket-options.ts, as the NBD client's is.)
//
// `onread`: Node offers it (reads into memory the caller provides, no buffer allocated per
// read) only to sockets it creates with
// `new net.Socket({ onread })`, never to those a `net.Server` accepts; the server therefore
// moves the accepted connection's handle to a new socket made with `onread`. That takes two
// things Node 20 does not document: the `_handle` of a socket, and the `handle` option of the
// Socket constructor (which is how `net.Server` itself wraps each connection). Anything
// unexpected — no handle, a handle that cannot read into user memory, a socket that already
// read or is not paused — leaves the socket as it is and the caller reads it through
// `'data'` events instead, which is slower but equivalent.
//
// The listener must be created with `pauseOnConnect: true`, so the handle has not read
// anything when it moves. The old socket is destroyed without its handle: that only tells
// its `net.Server` the connection left its count (`server.close()` then does not wait for
// it; the NbdServer tracks its connections itself).
//
// Why the send buffer: a Unix socket's default (net.core.wmem_default, about 208 KiB) holds less
// than one of nbdcopy's 256 KiB READ replies, so every reply went out in two or more pieces,
// each after the client had drained the socket and the event loop had woken up again; on a
// busy machine each of those wake-ups waits for a core. A larger buffer lets one wake-up hand
// the kernel several replies (measured in docs/performance.md, "Serve").

import net, { type OnReadOpts, type Socket } from 'node:net';

/** The parts of a Node 20 `net.Socket` this module relies on. */
interface SocketInternals {
  _handle?: { useUserBuffer?: unknown; readStart?: unknown } | null;
}

/**
 * Returns a socket that owns `socket`'s connection and reads through `onread`, or `null`
 * (and `socket` untouched) when that is not possible.
 */
export function adoptWithOnread(socket: Socket, onread: OnReadOpts): Socket | null {
  if (!(socket instanceof net.Socket) || socket.destroyed || socket.connecting ||
      socket.readableFlowing !== false || socket.readableLength !== 0) return null;
  const internals = socket as unknown as SocketInternals;
  const handle = internals._handle;
  if (handle === null || handle === undefined || typeof handle.useUserBuffer !== 'function' ||
      typeof handle.readStart !== 'function') return null;
  internals._handle = null;
  socket.destroy();
  return new net.Socket({ handle, onread, readable: true, writable: true } as
    net.SocketConstructorOpts);
}
