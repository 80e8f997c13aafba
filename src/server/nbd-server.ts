// Owns the NBD server: its exports, its listening socket, the set of live connections and
// their cap, and an orderly close. Devices are opened by the caller and shared by every
// connection to their export; the server never opens or closes one. All I/O goes through one
// dm-io client (the server's own unless one is given), so the device requests in flight are
// bounded across all connections as well as per connection.
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
import { ServerConnection, type ConnectionContext } from './connection.js';
import { flushDevice } from './export-io.js';
import type { TlsMode } from './handshake.js';
import {
  SERVER_CONNECTION_BYTES_DEFAULT, SERVER_CONNECTIONS_DEFAULT, SERVER_CONNECTIONS_MAX,
  SERVER_HANDSHAKE_TIMEOUT_MS_DEFAULT, SERVER_INFLIGHT_REQUESTS_DEFAULT,
  SERVER_INFLIGHT_REQUESTS_MAX, SERVER_POOL_RETAINED_BYTES, SERVER_REQUEST_BYTES_MAX, SERVER_SHUTDOWN_GRACE_MS_DEFAULT,
  SERVER_STRING_BYTES_MAX,
} from './limits.js';
import { ServedExport, type NbdExportOptions } from './nbd-export.js';
import { createTlsUpgrade, type NbdServerTlsOptions } from './tls.js';
import { GIB } from '../constants.js';

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
  #closing: Promise<void> | null = null;
  #idle: (() => void) | null = null;

  /** @internal Use `createNbdServer`. */
  constructor(options: NbdServerOptions) {
    validateOptionsObject(options, 'options');
    this.#exports = validateExports(options.exports);
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
    this.#context = {
      lookup: (name) => this.#lookup(name),
      exports: () => this.#exports,
      shuttingDown: () => this.#closing !== null,
      client: this.#client,
      pool: new BufferPool(SERVER_POOL_RETAINED_BYTES, SERVER_REQUEST_BYTES_MAX),
      limits: { inflightRequestsMax, connectionBytesMax, handshakeTimeoutMs },
      tlsMode: tls.mode,
      upgradeTls: (raw: Duplex) => tls.upgrade(raw),
      log,
    };
  }

  /** The exports served, in order. */
  get exportNames(): string[] {
    return this.#exports.map((served) => served.name);
  }

  /** Connections open now. */
  get connectionCount(): number {
    return this.#connections.size;
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
    this.#listeners.push(listener);
    return listener;
  }

  /**
   * Serves one already connected socket (for sockets accepted elsewhere, such as an
   * inherited listener). Past the connection cap, or after `close()`, it is closed at once.
   */
  handleConnection(socket: Socket): void {
    if (this.#closing !== null || this.#connections.size >= this.#connectionsMax) {
      this.#context.log(this.#closing !== null ? 'refused a connection: shutting down' :
        `refused a connection: ${this.#connectionsMax} already open`);
      socket.on('error', () => undefined);
      socket.destroy();
      return;
    }
    const connection = new ServerConnection(socket, this.#context);
    this.#connections.add(connection);
    connection.socket.once('close', () => {
      this.#connections.delete(connection);
      if (this.#connections.size === 0) this.#idle?.();
    });
    void connection.serve();
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
      if (this.#connections.size === 0) resolve();
    });
    for (const connection of this.#connections) connection.shutdown();
    const grace = setTimeout(() => {
      for (const connection of this.#connections) connection.destroy();
    }, this.#shutdownGraceMs);
    await idle;
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

function validateExports(exports: unknown): ServedExport[] {
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
    return new ServedExport(given);
  });
}
