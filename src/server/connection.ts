// Owns one client connection from accept to close: the handshake under its timeout, the
// optional TLS upgrade, the transmission phase, and every way it ends — DISC, ABORT, the
// client vanishing, a protocol violation (hard close), or the server shutting down (stop
// reading, let requests in flight reply, then close). A connection never throws out of
// `serve()`: whatever happens to one client stays with that client.

import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { DmIoClient } from '../core/client.js';
import type { BufferPool } from './buffer-pool.js';
import {
  HandshakeViolation, runHandshake, type HandshakeContext, type Negotiated, type TlsMode,
} from './handshake.js';
import type { ServedExport } from './nbd-export.js';
import {
  SERVER_CLOSE_LINGER_MS, SERVER_SEND_BUFFER_BYTES, SERVER_UNSENT_REPLIES_MS,
} from './limits.js';
import { adoptWithOnread } from './server-socket.js';
import { setSocketSendBufferBytes } from '../sys/socket-options.js';
import { SocketReader, StreamEndedError } from './socket-reader.js';
import { TransmissionViolation } from './request-rules.js';
import { Transmission, type TransmissionLimits } from './transmission.js';


/** What a connection needs from its server. */
export interface ConnectionContext {
  lookup(name: string): ServedExport | undefined;
  exports(): readonly ServedExport[];
  shuttingDown(): boolean;
  readonly client: DmIoClient;
  /** Memory for READ data and WRITE payloads, shared by the server's connections. */
  readonly pool: BufferPool;
  readonly limits: TransmissionLimits & { readonly handshakeTimeoutMs: number };
  readonly tlsMode: TlsMode;
  /** Upgrades a raw stream to TLS as the server side; resolves with the secure stream. */
  upgradeTls(raw: Duplex): Promise<Duplex>;
  /** Reports why a connection was closed hard (for logs). */
  log(message: string): void;
  /**
   * Where a server's polling threads serve the transmission phase: takes a plain connection
   * past its handshake. 'handed': the connection is theirs now (the socket is destroyed);
   * 'here': serve it on this thread; 'closed': close it.
   */
  handOff?(socket: Socket, reader: SocketReader, negotiated: Negotiated): Promise<HandOff>;
}

/** What became of a connection offered to `ConnectionContext.handOff`. */
export type HandOff = 'handed' | 'here' | 'closed';

/** One client connection. */
export class ServerConnection {
  readonly #socket: Socket;
  readonly #context: ConnectionContext;
  #stream: Duplex;
  #reader: SocketReader;
  #transmission: Transmission | null = null;
  #closed = false;

  /**
   * Takes over an accepted socket. Without TLS it is read through `onread` (see
   * server-socket.ts), so use `socket` from here on rather than the one passed in.
   */
  constructor(accepted: Socket, context: ConnectionContext) {
    this.#context = context;
    let socket = accepted;
    let reader: SocketReader | null = null;
    if (context.tlsMode === 'off') {
      const onreadReader = SocketReader.forOnread();
      const adopted = adoptWithOnread(accepted, onreadReader.onread);
      if (adopted !== null) {
        socket = adopted;
        onreadReader.attachOnread(adopted);
        reader = onreadReader;
      }
    }
    this.#socket = socket;
    this.#stream = socket;
    // An unhandled 'error' would end the process; a connection's errors end only it.
    socket.on('error', () => this.destroy());
    if (typeof socket.setNoDelay === 'function') socket.setNoDelay(true);
    setSocketSendBufferBytes(socket, SERVER_SEND_BUFFER_BYTES);
    this.#reader = reader ?? SocketReader.forStream(socket);
  }

  /** The socket of the connection (not the accepted one when it was taken over). */
  get socket(): Socket {
    return this.#socket;
  }

  /** True once in the transmission phase. */
  get transmitting(): boolean {
    return this.#transmission !== null;
  }

  /** Serves the connection to its end; never rejects. */
  async serve(): Promise<void> {
    const timer = setTimeout(() => {
      this.#context.log('handshake timed out');
      this.destroy();
    }, this.#context.limits.handshakeTimeoutMs);
    try {
      const negotiated = await runHandshake(this.#handshakeContext());
      if (negotiated === null || this.#closed) {
        clearTimeout(timer);
        this.#end();
        return;
      }
      // Only a plain socket is handed over; the handshake's timeout runs on while it waits.
      if (this.#context.handOff !== undefined && this.#stream === this.#socket) {
        const handOff = await this.#context.handOff(this.#socket, this.#reader, negotiated);
        if (handOff === 'handed') {
          this.#closed = true;
          return;
        }
        if (handOff === 'closed' || this.#closed) {
          this.destroy();
          return;
        }
      }
      clearTimeout(timer);
      this.#transmission = new Transmission(this.#reader, this.#stream, this.#context.client,
        negotiated, this.#context.limits, this.#context.pool);
      if (this.#context.shuttingDown()) this.#transmission.stop();
      const end = await this.#transmission.run();
      if (end === 'closed') this.destroy();
      else this.#end();
    } catch (error) {
      if (!(error instanceof StreamEndedError)) {
        if (error instanceof HandshakeViolation || error instanceof TransmissionViolation) {
          this.#context.log(`closing a connection: ${error.message}`);
        } else {
          this.#context.log(`closing a connection after an unexpected error: ${String(error)}`);
        }
      }
      this.destroy();
    } finally {
      clearTimeout(timer);
    }
  }

  /** Stops taking requests; running ones reply, then the connection closes. */
  shutdown(): void {
    if (this.#transmission !== null) this.#transmission.stop();
    // In the handshake, the next option is answered with ERR_SHUTDOWN and the loop ends.
  }

  /** Closes at once, dropping any replies still to come. Idempotent. */
  destroy(): void {
    this.#closed = true;
    this.#reader.stop('the connection was closed');
    this.#stream.destroy();
    this.#socket.destroy();
  }

  /**
   * A polite close: pending replies are flushed (TLS sends close_notify), then the client has
   * a moment to close its side before the socket is destroyed, so a client that never reads
   * or never closes cannot hold it open.
   */
  #end(): void {
    this.#closed = true;
    this.#stream.end(() => setTimeout(() => this.destroy(), SERVER_CLOSE_LINGER_MS).unref());
    setTimeout(() => this.destroy(), SERVER_CLOSE_LINGER_MS + SERVER_UNSENT_REPLIES_MS).unref();
  }

  #handshakeContext(): HandshakeContext {
    const context = this.#context;
    return {
      reader: () => this.#reader,
      send: (data) => {
        if (!this.#stream.destroyed && this.#stream.writable) this.#stream.write(data);
      },
      lookup: (name) => context.lookup(name),
      exports: () => context.exports(),
      shuttingDown: () => context.shuttingDown(),
      tlsMode: context.tlsMode,
      startTls: () => this.#startTls(),
    };
  }

  async #startTls(): Promise<void> {
    const rest = this.#reader.detach();
    if (rest.length > 0) this.#socket.unshift(rest);
    const secure = await this.#context.upgradeTls(this.#socket);
    secure.on('error', () => this.destroy());
    this.#stream = secure;
    this.#reader = SocketReader.forStream(secure);
  }
}
