// Owns the server's bounds on what one client may make it do. Every client is untrusted: no
// length read from the wire is used to allocate memory before it is checked against one of
// these, and every resource a connection holds (options, requests, bytes, time) has a cap.

import assert from '../assert.js';
import { NBD_REQUEST_BYTES_MAX, NBD_STRING_BYTES_MAX } from '../nbd/protocol.js';
import { KIB, MIB } from '../constants.js';

/**
 * Largest option payload accepted during the handshake (64 KiB); a larger one closes the
 * connection. The longest real option, a META request with a 4 KiB name and several 4 KiB
 * queries, fits many times over (qemu's CVE-2017-15119 was a 4 GiB option).
 */
export const SERVER_OPTION_BYTES_MAX = 64 * KIB;
/** Most options one connection may send before the server hangs up. */
export const SERVER_OPTIONS_MAX = 64;
/** The whole handshake must end within this (qemu's CVE-2024-7409 was an idle handshake). */
export const SERVER_HANDSHAKE_TIMEOUT_MS_DEFAULT = 10_000;
/** Longest string (export name, description, query) accepted or sent. */
export const SERVER_STRING_BYTES_MAX = NBD_STRING_BYTES_MAX;
/** Largest READ or WRITE served (32 MiB), advertised as the maximum block size. */
export const SERVER_REQUEST_BYTES_MAX = NBD_REQUEST_BYTES_MAX;
/**
 * Requests one connection may have running at once; beyond it the socket is not read. On a
 * polling thread, where one runs at a time, the most one connection runs in a turn of the
 * thread's loop before its other connections are served.
 */
export const SERVER_INFLIGHT_REQUESTS_DEFAULT = 64;
/** Upper end of the configurable in-flight request count. */
export const SERVER_INFLIGHT_REQUESTS_MAX = 1024;
/**
 * Payload bytes (READ buffers, WRITE payloads, replies not yet taken by the kernel) one
 * connection may hold (64 MiB): two maximal requests. Beyond it the socket is not read.
 */
export const SERVER_CONNECTION_BYTES_DEFAULT = 64 * MIB;
/** After the last reply of an ending connection has left, how long the client has to close. */
export const SERVER_CLOSE_LINGER_MS = 500;
/**
 * How long replies may take to drain to a client that reads slowly once its connection is
 * ending (DISC, the server stopping); then the connection is closed with them unsent.
 */
export const SERVER_UNSENT_REPLIES_MS = 5_000;
/** Connections served at once by default; more are closed at accept. */
export const SERVER_CONNECTIONS_DEFAULT = 16;
/** Upper end of the configurable connection count. */
export const SERVER_CONNECTIONS_MAX = 1024;
/** After a shutdown began, connections still open this long are closed hard. */
export const SERVER_SHUTDOWN_GRACE_MS_DEFAULT = 5_000;
/**
 * Free request buffers the server keeps for reuse, across connections (64 MiB): enough for
 * four connections each running 64 requests of 256 KiB (nbdcopy's defaults).
 */
export const SERVER_POOL_RETAINED_BYTES = 64 * MIB;
/** Bytes the socket reader buffers ahead of what the parser asked for before pausing. */
export const SERVER_READ_AHEAD_BYTES = 256 * KIB;
/**
 * A WRITE payload with at least this much (16 KiB) still to come is read by the socket
 * straight into the payload's memory; smaller remainders go through the staging buffer.
 */
export const SERVER_DIRECT_READ_BYTES_MIN = 16 * KIB;
/**
 * Kernel send buffer asked for on Unix sockets (1 MiB; the kernel keeps twice that for its
 * bookkeeping): room for several 256 KiB READ replies per event-loop wake-up, where the
 * default holds less than one. Kernel memory, at most 2 MiB per connection.
 */
export const SERVER_SEND_BUFFER_BYTES = MIB;
/** Preferred block size advertised at least (4 KiB), as clients assume without one. */
export const SERVER_PREFERRED_BLOCK_BYTES_MIN = 4 * KIB;
/**
 * Most descriptors in one BLOCK_STATUS reply (1024, an 8 KiB chunk): one device answer's worth
 * (EXTENTS_PER_QUERY_MAX). A longer range gets a prefix, as the protocol allows.
 */
export const SERVER_STATUS_DESCRIPTORS_MAX = 1024;
/**
 * Most device `extents` queries one BLOCK_STATUS makes (16): a device that answers in small
 * pieces still fills a reply, and a slow one cannot hold a request for long.
 */
export const SERVER_STATUS_QUERIES_MAX = 16;
/** Bytes of one write of zeros when a device cannot write zeroes natively (1 MiB). */
export const SERVER_ZERO_CHUNK_BYTES = MIB;

assert.ok(SERVER_CONNECTION_BYTES_DEFAULT >= 2 * SERVER_REQUEST_BYTES_MAX,
  'one maximal request always fits beside the replies of another');
assert.ok(SERVER_OPTION_BYTES_MAX >= 4 + SERVER_STRING_BYTES_MAX + 4 + 4 + SERVER_STRING_BYTES_MAX);
assert.ok(SERVER_INFLIGHT_REQUESTS_DEFAULT <= SERVER_INFLIGHT_REQUESTS_MAX);
assert.ok(SERVER_CONNECTIONS_DEFAULT <= SERVER_CONNECTIONS_MAX);
assert.ok(4 + 8 * SERVER_STATUS_DESCRIPTORS_MAX <= SERVER_REQUEST_BYTES_MAX,
  'a status chunk stays within the advertised maximum payload');
