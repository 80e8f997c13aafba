// Owns the NBD server: its exports, its listening socket, the set of live connections and
// their cap, and an orderly close. Devices are opened by the caller and shared by every
// connection to their export; the server never opens or closes one. All I/O goes through one
// dm-io client (the server's own unless one is given), so the device requests in flight are
// bounded across all connections as well as per connection.
//
// With `threads`, connections run on that many worker threads instead (connection-threads.ts),
// over their own openings of the same files. Threads that poll (no TLS, every export one that
// runs blocking: files and block devices) take each connection after its handshake, which
// this server runs (`#handOff`); threads with an event loop (TLS, tables) take it at accept.
// This server then accepts, counts, hands over and, at close, stops the threads and flushes.
//
// Close: stop accepting; connections in the handshake get ERR_SHUTDOWN on their next option;
// connections in transmission stop reading, their requests in flight finish and reply; then
// every export's device is flushed. Connections still open after the grace period are closed
// hard.

import net, { type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { DmIoClient } from '../core/client.js';
import { dmIoClientCreate, dmIoClientDestroy } from '../core/client.js';
import { validateIntegerInRange, validateOptionsObject } from '../validate.js';
import { InvalidArgTypeError, InvalidRequestError, IoError, StateError } from '../errors.js';
import { nbdErrnoName } from '../nbd/protocol.js';
import { BufferPool } from './buffer-pool.js';
import { ServerConnection, type ConnectionContext, type HandOff } from './connection.js';
import { flushDevice } from './export-io.js';
import type { Negotiated, TlsMode } from './handshake.js';
import type { SocketReader } from './socket-reader.js';
import {
  SERVER_CONNECTION_BYTES_DEFAULT, SERVER_CONNECTIONS_DEFAULT, SERVER_CONNECTIONS_MAX,
  SERVER_HANDSHAKE_TIMEOUT_MS_DEFAULT, SERVER_INFLIGHT_REQUESTS_DEFAULT,
  SERVER_INFLIGHT_REQUESTS_MAX, SERVER_POOL_RETAINED_BYTES, SERVER_REQUEST_BYTES_MAX, SERVER_SHUTDOWN_GRACE_MS_DEFAULT,
  SERVER_STRING_BYTES_MAX,
} from './limits.js';
import { ServedExport, type NbdExportOptions } from './nbd-export.js';
import { createTlsUpgrade, type NbdServerTlsOptions } from './tls.js';
import { GIB } from '../constants.js';
import { ConnectionThreads } from './connection-threads.js';
import { runsBlocking } from './io-program.js';
import { describeForThread, threadableDevice } from './thread-exports.js';
import { createWriteGateState, type ThreadWriteGate } from './thread-write-gate.js';

const EMPTY = new Uint8Array(0);

/** Most connection threads one server may start. */
export const SERVER_THREADS_MAX = 64;

/** @internal What a connection thread's own server is given besides its options. */
export interface ServerThreadRole {
  /** Per export, the thread's view of the export's write gate. */
  readonly gates: readonly ThreadWriteGate[];
  /** Free request buffers this thread keeps (its share of SERVER_POOL_RETAINED_BYTES). */
  readonly poolRetainedBytes: number;
  /** Runs once for every connection that ends. */
  onConnectionClosed(): void;
}

/** Options of `createNbdServer`. */
export interface NbdServerOptions {
  /** The exports, first one default: a client asking for "" gets it unless one is named "". */
  exports: NbdExportOptions[];
  /** Connections served at once (default 16, 1 to 1024); more are closed at accept. */
  connectionsMax?: number;
  /** Requests one connection may have running (default 64, 1 to 1024). */
  inflightRequestsMax?: number;
  /** Request and reply bytes one connection may hold (default 64 MiB, 64 MiB to 1 GiB). */
  connectionBytesMax?: number;
  /** Time a client has to finish the handshake (default 10000 ms). */
  handshakeTimeoutMs?: number;
  /** How long `close()` lets connections finish before closing them hard (default 5000 ms). */
  shutdownGraceMs?: number;
  /** TLS: off (default), offered, or required; see `NbdServerTlsOptions`. */
  tls?: NbdServerTlsOptions;
  /** The dm-io client for all I/O (default: the server's own, destroyed by `close()`). */
  client?: DmIoClient;
  /** Receives one line per connection closed hard, and why (default: dropped). */
  log?: (message: string) => void;
  /**
   * Serve connections on this many worker threads (default 0: on the calling thread), each
   * handed to the thread with the fewest. Every export's device must then be a file or block
   * device (`FileDevice`), or a table whose targets are all linear, zero or error over
   * such devices: each thread opens it again (files through `/proc/self/fd`) and has a dm-io
   * client of its own; `client` then only makes the final flush. Without TLS and with only
   * files and block devices, the handshake runs on the calling thread and the threads poll
   * their connections, running each request to completion (a FLUSH holds the thread's other
   * connections meanwhile); otherwise each connection is handed over at accept to a thread
   * that serves it on its own event loop and io_uring engine. Threads are started by
   * `listen()` or the first `handleConnection()`.
   */
  threads?: number;
}

/** Where to listen: a Unix socket path, or a TCP host and port (0 picks a free port). */
export type NbdListenAddress =
  | { readonly socketPath: string }
  | { readonly host: string; readonly port: number };

/** An NBD server over already opened devices. Create with `createNbdServer`. */
export class NbdServer {
  readonly #exports: readonly ServedExport[];
  readonly #byName: ReadonlyMap<string, ServedExport>;
  readonly #connections = new Set<ServerConnection>();
  readonly #connectionsMax: number;
  readonly #shutdownGraceMs: number;
  readonly #client: DmIoClient;
  readonly #ownsClient: boolean;
  readonly #context: ConnectionContext;
  readonly #listeners: net.Server[] = [];
  readonly #role: ServerThreadRole | null;
  readonly #threadsWanted: number;
  readonly #threadSetup: (() => Promise<ConnectionThreads>) | null;
  #threads: Promise<ConnectionThreads> | null = null;
  /** True when the threads poll: handshakes run here, transmissions there. */
  readonly #polling: boolean;
  /** Connections handed (or being handed) to threads and not yet ended. */
  #threadedCount = 0;
  #closing: Promise<void> | null = null;
  #idle: (() => void) | null = null;

  /** @internal Use `createNbdServer`. */
  constructor(options: NbdServerOptions, role: ServerThreadRole | null = null) {
    validateOptionsObject(options, 'options');
    this.#role = role;
    this.#threadsWanted = validateIntegerInRange(options.threads ?? 0, 'options.threads', 0,
      SERVER_THREADS_MAX);
    const gateStates = this.#threadsWanted === 0 ? null :
      (options.exports ?? []).map(() => createWriteGateState(this.#threadsWanted));
    this.#exports = validateExports(options.exports, role?.gates ?? null);
    if (this.#threadsWanted > 0) requireReopenable(this.#exports);
    this.#byName = new Map(this.#exports.map((served) => [served.name, served]));
    this.#connectionsMax = validateIntegerInRange(options.connectionsMax ??
      SERVER_CONNECTIONS_DEFAULT, 'options.connectionsMax', 1, SERVER_CONNECTIONS_MAX);
    const inflightRequestsMax = validateIntegerInRange(options.inflightRequestsMax ??
      SERVER_INFLIGHT_REQUESTS_DEFAULT, 'options.inflightRequestsMax', 1,
    SERVER_INFLIGHT_REQUESTS_MAX);
    const connectionBytesMax = validateIntegerInRange(options.connectionBytesMax ??
      SERVER_CONNECTION_BYTES_DEFAULT, 'options.connectionBytesMax',
    2 * SERVER_REQUEST_BYTES_MAX, GIB);
    const handshakeTimeoutMs = validateIntegerInRange(options.handshakeTimeoutMs ??
      SERVER_HANDSHAKE_TIMEOUT_MS_DEFAULT, 'options.handshakeTimeoutMs', 1, 600_000);
    this.#shutdownGraceMs = validateIntegerInRange(options.shutdownGraceMs ??
      SERVER_SHUTDOWN_GRACE_MS_DEFAULT, 'options.shutdownGraceMs', 0, 600_000);
    const tls = createTlsUpgrade(options.tls);
    this.#ownsClient = options.client === undefined;
    this.#client = options.client ?? dmIoClientCreate();
    const log = options.log ?? ((): void => undefined);
    // Described now, while every device is known open: the threads check they open the same.
    const threadExports = gateStates === null ? [] : this.#exports.map((served, index) =>
      describeForThread(served.name, served.description, served.readOnly, served.device,
        gateStates[index] as SharedArrayBuffer));
    // Threads poll their sockets when every connection is plain and every export a file or
    // block device (whose every request can run on the thread); else each runs an event loop.
    // (No threads, no thread exports: polling implies threads.)
    const polling = (options.tls?.mode ?? 'off') === 'off' && threadExports.length > 0 &&
      this.#exports.every((served) => runsBlocking(served.device));
    this.#threadSetup = gateStates === null ? null : () => ConnectionThreads.start(
      this.#threadsWanted, {
        exports: threadExports,
        inflightRequestsMax, connectionBytesMax, handshakeTimeoutMs,
        shutdownGraceMs: this.#shutdownGraceMs,
        poolRetainedBytes: Math.ceil(SERVER_POOL_RETAINED_BYTES / this.#threadsWanted),
        tls: options.tls?.mode === 'off' ? undefined : options.tls,
        driver: polling ? 'poll' : 'events',
      }, log, () => this.#threadedConnectionClosed());
    this.#context = {
      lookup: (name) => this.#lookup(name),
      exports: () => this.#exports,
      shuttingDown: () => this.#closing !== null,
      client: this.#client,
      pool: new BufferPool(role?.poolRetainedBytes ?? SERVER_POOL_RETAINED_BYTES,
        SERVER_REQUEST_BYTES_MAX),
      limits: { inflightRequestsMax, connectionBytesMax, handshakeTimeoutMs },
      tlsMode: tls.mode,
      upgradeTls: (raw: Duplex) => tls.upgrade(raw),
      log,
      ...(polling ? {
        handOff: (socket: Socket, reader: SocketReader, negotiated: Negotiated) =>
          this.#handOff(socket, reader, negotiated),
      } : {}),
    };
    this.#polling = polling;
  }

  /** The exports served, in order. */
  get exportNames(): string[] {
    return this.#exports.map((served) => served.name);
  }

  /** Connections open now. */
  get connectionCount(): number {
    return this.#connections.size + this.#threadedCount;
  }

  /** @internal Connections each thread serves now (empty without threads running). */
  async connectionCountsByThread(): Promise<number[]> {
    const threads = await this.#threads?.catch(() => null);
    return threads?.connectionCounts ?? [];
  }

  /** The TLS mode clients meet. */
  get tlsMode(): TlsMode {
    return this.#context.tlsMode;
  }

  /**
   * Listens on a Unix socket or a TCP address; resolves with the `net.Server` once it
   * accepts (its `address()` gives the port chosen for port 0).
   * @throws StateError `DMIO_ERR_DEVICE_CLOSED` after `close()`; the listen error otherwise.
   */
  async listen(address: NbdListenAddress): Promise<net.Server> {
    this.#assertOpen();
    if (this.#threadSetup !== null) await this.#startThreads().catch(() => null);
    // A close() while the threads started: nothing may listen after it.
    this.#assertOpen();
    // Paused, so a connection's handle can move to a socket that reads through onread.
    const listener = net.createServer({ pauseOnConnect: true },
      (socket) => this.handleConnection(socket));
    listener.on('error', () => undefined);
    await new Promise<void>((resolve, reject) => {
      listener.once('error', reject);
      const onListening = (): void => {
        listener.off('error', reject);
        resolve();
      };
      if ('socketPath' in address) listener.listen(address.socketPath, onListening);
      else listener.listen(address.port, address.host, onListening);
    });
    if (this.#closing !== null) {
      listener.close();
      this.#assertOpen();
    }
    this.#listeners.push(listener);
    return listener;
  }

  /**
   * Serves one already connected socket (for sockets accepted elsewhere, such as an
   * inherited listener). Past the connection cap, or after `close()`, it is closed at once.
   */
  handleConnection(socket: Socket): void {
    if (this.#closing !== null || this.connectionCount >= this.#connectionsMax) {
      this.#context.log(this.#closing !== null ? 'refused a connection: shutting down' :
        `refused a connection: ${this.#connectionsMax} already open`);
      socket.on('error', () => undefined);
      socket.destroy();
      return;
    }
    if (this.#threadSetup !== null && !this.#polling) {
      this.#threadedCount += 1;
      void this.#handToThread(socket);
      return;
    }
    // Polling threads take connections after the handshake, which runs here (`#handOff`).
    if (this.#polling) void this.#startThreads().catch(() => null);
    this.#serveHere(socket);
  }

  #serveHere(socket: Socket): void {
    const connection = new ServerConnection(socket, this.#context);
    this.#connections.add(connection);
    connection.socket.once('close', () => {
      this.#connections.delete(connection);
      this.#role?.onConnectionClosed();
      if (this.connectionCount === 0) this.#idle?.();
    });
    void connection.serve();
  }

  /**
   * Starts the threads once. When they cannot start (no /proc, a device that changed), the
   * server logs why and serves every connection on this thread instead.
   */
  #startThreads(): Promise<ConnectionThreads> {
    if (this.#threads === null && this.#threadSetup !== null) {
      this.#threads = this.#threadSetup();
      this.#threads.catch((error: unknown) => this.#context.log('connection threads did not ' +
        `start, serving on the main thread: ${(error as Error).message}`));
    }
    return this.#threads as Promise<ConnectionThreads>;
  }

  /**
   * Hands a connection counted in #threadedCount to a thread. Without a live thread it is
   * served here, on the server's own devices (no thread writes then, so no write gate is
   * needed); while threads live, a connection that cannot be handed over is closed, since here
   * it would write past their write gate.
   */
  async #handToThread(socket: Socket): Promise<void> {
    const threads = await this.#startThreads().catch(() => null);
    const handed = threads === null || this.#closing !== null ? 'no thread' : threads.hand(socket);
    if (handed === 'handed') return;
    this.#threadedCount -= 1;
    if (this.#closing !== null || handed === 'failed') {
      socket.on('error', () => undefined);
      socket.destroy();
      if (this.connectionCount === 0) this.#idle?.();
      return;
    }
    this.#serveHere(socket);
  }

  /**
   * Hands a connection past its handshake to a polling thread, once the handshake's last
   * reply has left: the thread then reads the socket from the first request on, with the
   * bytes the handshake read ahead. Without a live thread the connection is served here (no
   * thread writes then, so no gate is passed); while threads live, one that cannot be handed
   * over is closed (here its merges would pass their gate).
   */
  async #handOff(socket: Socket, reader: SocketReader, negotiated: Negotiated): Promise<HandOff> {
    const threads = await this.#startThreads().catch(() => null);
    if (threads === null || !threads.anyAlive) return 'here';
    await new Promise<void>((resolve) => socket.write(EMPTY, () => resolve()));
    if (this.#closing !== null || socket.destroyed) return 'closed';
    if (!threads.anyAlive) return 'here';
    // Copied into a buffer of its own, which moves to the thread instead of being cloned.
    const kept = new Uint8Array(reader.detach());
    const handed = threads.handTransmission(socket, {
      exportIndex: this.#exports.indexOf(negotiated.served),
      structuredReplies: negotiated.structuredReplies,
      baseAllocation: negotiated.baseAllocation,
      blockSizesAsked: negotiated.blockSizesAsked,
      kept,
    });
    if (handed !== 'handed') return 'closed';
    // Counted on its thread from now on, not here: its socket's 'close' comes later.
    for (const connection of this.#connections) {
      if (connection.socket === socket) this.#connections.delete(connection);
    }
    this.#threadedCount += 1;
    return 'handed';
  }

  #threadedConnectionClosed(): void {
    this.#threadedCount -= 1;
    if (this.connectionCount === 0) this.#idle?.();
  }

  /**
   * Stops the server: no new connections, requests in flight finish and reply, then every
   * export's device is flushed and the server's own dm-io client destroyed. Rejects with an
   * IoError when a flush failed. Idempotent.
   */
  close(): Promise<void> {
    this.#closing ??= this.#shutdown();
    return this.#closing;
  }

  async #shutdown(): Promise<void> {
    for (const listener of this.#listeners) listener.close();
    const idle = new Promise<void>((resolve) => {
      this.#idle = resolve;
      if (this.connectionCount === 0) resolve();
    });
    for (const connection of this.#connections) connection.shutdown();
    const grace = setTimeout(() => {
      for (const connection of this.#connections) connection.destroy();
    }, this.#shutdownGraceMs);
    // Each thread drains under the same grace, flushes and closes its devices, and exits.
    const threadsStopped = this.#threads?.then((threads) => threads.stop(), () => undefined);
    await idle;
    await threadsStopped;
    clearTimeout(grace);
    const failure = await this.flush();
    if (this.#ownsClient) await dmIoClientDestroy(this.#client);
    if (failure !== null) throw failure;
  }

  /**
   * Flushes every writable export's device. Resolves with `null`, or with an IoError for the
   * first device whose flush failed (the others are still flushed).
   */
  async flush(): Promise<IoError | null> {
    let first: IoError | null = null;
    for (const served of this.#exports) {
      if (served.readOnly) continue;
      const failure = await flushDevice(this.#client, served);
      first ??= failure === null ? null : new IoError({
        errno: nbdErrnoName(failure.errorNumber), syscall: 'flush', device: served.device.name,
        sector: 0, countSectors: 0, cause: failure.message,
      });
    }
    return first;
  }

  #lookup(name: string): ServedExport | undefined {
    return this.#byName.get(name) ?? (name === '' ? this.#exports[0] : undefined);
  }

  #assertOpen(): void {
    if (this.#closing !== null) {
      throw new StateError('DMIO_ERR_DEVICE_CLOSED', 'nbd server', 'the server was closed');
    }
  }
}

/**
 * Creates an NBD server over already opened devices. Nothing listens until `listen()`.
 *
 * @throws InvalidArgTypeError, OutOfRangeError, InvalidRequestError for bad options (no
 * exports, duplicate or overlong names, limits out of range, unreadable TLS material).
 * @example
 * const device = await openDevice('disk.img');
 * const server = createNbdServer({ exports: [{ name: '', device }] });
 * await server.listen({ socketPath: '/tmp/nbd.sock' });
 * // nbdinfo 'nbd+unix:///?socket=/tmp/nbd.sock'
 * await server.close();
 * await device.close();
 */
export function createNbdServer(options: NbdServerOptions): NbdServer {
  return new NbdServer(options);
}

function validateExports(
  exports: unknown, gates: readonly ThreadWriteGate[] | null,
): ServedExport[] {
  if (!Array.isArray(exports) || exports.length === 0) {
    throw new InvalidArgTypeError('options.exports', 'a non-empty array', exports);
  }
  const names = new Set<string>();
  return exports.map((entry: unknown, index) => {
    const argument = `options.exports[${index}]`;
    validateOptionsObject(entry, argument);
    const given = entry as NbdExportOptions;
    if (typeof given.name !== 'string') {
      throw new InvalidArgTypeError(`${argument}.name`, 'a string', given.name);
    }
    if (Buffer.byteLength(given.name) > SERVER_STRING_BYTES_MAX || given.name.includes('\0') ||
        Buffer.byteLength(given.description ?? '') > SERVER_STRING_BYTES_MAX) {
      throw new InvalidRequestError('DMIO_ERR_INVALID_ARG_VALUE', argument,
        `names and descriptions are at most ${SERVER_STRING_BYTES_MAX} bytes, without NUL`);
    }
    if (names.has(given.name)) {
      throw new InvalidRequestError('DMIO_ERR_INVALID_ARG_VALUE', argument,
        `export name '${given.name}' is used twice`);
    }
    names.add(given.name);
    if (typeof given.device !== 'object' || given.device === null ||
        typeof given.device.submit !== 'function') {
      throw new InvalidArgTypeError(`${argument}.device`, 'a BlockDevice', given.device);
    }
    return new ServedExport(given, gates?.[index] ?? null);
  });
}

/** Threads open every export again: each must be a device `threadableDevice` accepts. */
function requireReopenable(exports: readonly ServedExport[]): void {
  for (const [index, served] of exports.entries()) {
    if (!threadableDevice(served.device)) {
      throw new InvalidRequestError('DMIO_ERR_INVALID_ARG_VALUE',
        `options.exports[${index}].device`,
        'with options.threads, every export must be an open file or block device, or a ' +
        'table of linear, zero and error targets over such devices');
    }
  }
}
