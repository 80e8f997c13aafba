// Owns reading exact byte counts from a socket during the handshake, where the protocol is
// strictly request/response and a promise per read is cheap. It is an `InputSink`: the
// connection's `SocketInput` feeds it (and a plain socket's 'data' events can, as the tests'
// fake server does). Fed bytes are copied, since the staging buffer they arrive in is reused.
// Memory is bounded: once more than `HANDSHAKE_BUFFER_BYTES_MAX` bytes wait unread the socket
// is paused, so a server that floods the handshake cannot grow the buffer. After the
// handshake, `detach()` hands any leftover bytes to the transmission-phase parser and removes
// every listener it added.

import assert from '../assert.js';
import type { Socket } from 'node:net';
import type { InputSink } from './socket-input.js';
import { KIB } from '../constants.js';

/** Unread bytes buffered before the socket is paused (128 KiB). */
const HANDSHAKE_BUFFER_BYTES_MAX = 128 * KIB;

interface PendingRead {
  readonly lengthBytes: number;
  readonly resolve: (bytes: Buffer) => void;
  readonly reject: (error: Error) => void;
}

/** Reads exact lengths from a socket; fails every read once the socket ends or errors. */
export class HandshakeReader implements InputSink {
  readonly #socket: Socket;
  #chunks: Buffer[] = [];
  #bufferedBytes = 0;
  #pending: PendingRead | null = null;
  #ended: Error | null = null;
  readonly #onEnd = (): void => this.#end(new Error('server closed the connection'));
  readonly #onError = (error: Error): void => this.#end(error);

  /** Watches `socket` for its end; bytes arrive through `feed`. */
  constructor(socket: Socket) {
    this.#socket = socket;
    socket.on('end', this.#onEnd);
    socket.on('close', this.#onEnd);
    socket.on('error', this.#onError);
  }

  /** Resolves with exactly `lengthBytes` bytes; rejects if the connection ends first. */
  read(lengthBytes: number): Promise<Buffer> {
    assert.equal(this.#pending, null, 'one handshake read at a time');
    assert.ok(Number.isSafeInteger(lengthBytes) && lengthBytes >= 0);
    return new Promise((resolve, reject) => {
      this.#pending = { lengthBytes, resolve, reject };
      this.#settle();
    });
  }

  /** InputSink: bytes from the socket, copied because the caller may reuse `data`. */
  feed(data: Buffer): void {
    if (data.length === 0) return;
    this.#chunks.push(Buffer.from(data));
    this.#bufferedBytes += data.length;
    if (this.#bufferedBytes > HANDSHAKE_BUFFER_BYTES_MAX) this.#socket.pause();
    this.#settle();
  }

  /** InputSink: the handshake never reads into destination memory. */
  directView(): null {
    return null;
  }

  /** InputSink: unreachable, since `directView` hands out nothing. */
  feedDirect(): void {
    assert.fail('the handshake reader hands out no direct views');
  }

  /**
   * Stops watching the socket and returns bytes that arrived but were not read. A socket the
   * reader paused stays paused: the next owner resumes it once it can take bytes.
   */
  detach(): Buffer {
    assert.equal(this.#pending, null, 'detach with a read pending');
    this.#socket.off('end', this.#onEnd);
    this.#socket.off('close', this.#onEnd);
    this.#socket.off('error', this.#onError);
    const leftover = Buffer.concat(this.#chunks);
    this.#chunks = [];
    this.#bufferedBytes = 0;
    return leftover;
  }

  #end(error: Error): void {
    if (this.#ended === null) this.#ended = error;
    this.#settle();
  }

  #settle(): void {
    const pending = this.#pending;
    if (pending === null) return;
    if (this.#bufferedBytes >= pending.lengthBytes) {
      this.#pending = null;
      pending.resolve(this.#take(pending.lengthBytes));
    } else if (this.#ended !== null) {
      this.#pending = null;
      pending.reject(this.#ended);
    } else if (this.#socket.isPaused()) {
      this.#socket.resume();
    }
  }

  #take(lengthBytes: number): Buffer {
    const out = Buffer.allocUnsafe(lengthBytes);
    let filledBytes = 0;
    while (filledBytes < lengthBytes) {
      const head = this.#chunks[0];
      assert.ok(head !== undefined);
      const takeBytes = Math.min(head.length, lengthBytes - filledBytes);
      head.copy(out, filledBytes, 0, takeBytes);
      filledBytes += takeBytes;
      if (takeBytes === head.length) this.#chunks.shift();
      else this.#chunks[0] = head.subarray(takeBytes);
    }
    this.#bufferedBytes -= lengthBytes;
    if (this.#bufferedBytes <= HANDSHAKE_BUFFER_BYTES_MAX && this.#socket.isPaused()) {
      this.#socket.resume();
    }
    return out;
  }
}
