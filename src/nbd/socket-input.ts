// Owns where a connection's socket reads land. The socket is created with `onread`, so Node
// neither allocates a buffer per read nor runs its Readable-stream machinery: each read goes
// into one fixed staging buffer, or, when the current sink asks for it, straight into a view
// of destination memory (a large READ payload), so the kernel copies the bytes where they
// belong and nothing copies them again. Exactly one sink receives reads at a time: the
// handshake reader first, then the reply parser. Memory is bounded by the staging buffer plus
// the views the sink hands out, which lie inside memory its requests already own.

import assert from '../assert.js';
import type { OnReadOpts } from 'node:net';
import { KIB } from '../constants.js';

/**
 * Bytes in the staging buffer (64 KiB, what Node itself allocates per read). It receives
 * headers, small payloads and the first bytes of large ones; a larger buffer would only move
 * more payload through an extra copy before a direct read takes over.
 */
export const STAGING_BYTES = 64 * KIB;

/** Receives what the socket reads. */
export interface InputSink {
  /** Bytes read into the staging buffer; `data` is reused after the call, so copy what you keep. */
  feed(data: Buffer): void;
  /** Destination memory the next read may fill directly, or null to read into staging. */
  directView(): Uint8Array | null;
  /** The last read put `lengthBytes` into the start of the view `directView()` returned. */
  feedDirect(lengthBytes: number): void;
}

/** Routes one socket's reads to its current sink. */
export class SocketInput {
  /** Pass this as `onread` when creating the socket. */
  readonly onread: OnReadOpts;
  readonly #staging = Buffer.allocUnsafe(STAGING_BYTES);
  /** Null only between creating the socket and attaching the first sink (no read can happen). */
  #sink: InputSink | null = null;
  /** The view handed to the socket for its next read, or null when that is staging. */
  #direct: Uint8Array | null = null;
  #directReadBytes = 0;

  constructor() {
    this.onread = {
      buffer: () => this.#nextBuffer(),
      // Returning false would pause the socket; pausing is the sinks' own call (socket.pause).
      callback: (readBytes, buffer) => {
        this.#received(readBytes, buffer);
        return true;
      },
    };
  }

  /**
   * Feeds bytes that arrived as a stream's `'data'` chunk (a TLS socket, which cannot take
   * `onread` once it wraps another socket): everything goes through the sink's `feed`.
   */
  feedChunk(chunk: Buffer): void {
    assert.ok(this.#sink !== null, 'a chunk before any sink was attached');
    this.#sink.feed(chunk);
  }

  /** Bytes the socket has read straight into destination memory so far. */
  get directBytes(): number {
    return this.#directReadBytes;
  }

  /**
   * Hands later reads to `sink`. Only valid while the next read goes to staging (the previous
   * sink handed out no view), so no read can land in memory the new sink does not know.
   */
  attach(sink: InputSink): void {
    assert.equal(this.#direct, null, 'attach while a direct view is out');
    this.#sink = sink;
  }

  /** Called by Node before each read: the memory the read fills. Never empty. */
  #nextBuffer(): Uint8Array {
    const view = this.#sink === null ? null : this.#sink.directView();
    if (view === null) {
      this.#direct = null;
      return this.#staging;
    }
    assert.ok(view.length > 0, 'a direct view must not be empty');
    this.#direct = view;
    return view;
  }

  /** Called by Node after each read of `readBytes` > 0 bytes into `buffer`. */
  #received(readBytes: number, buffer: Uint8Array): void {
    assert.ok(this.#sink !== null, 'a read before any sink was attached');
    if (buffer === this.#staging) {
      this.#sink.feed(this.#staging.subarray(0, readBytes));
      return;
    }
    assert.ok(buffer === this.#direct, 'a read landed in a view nobody handed out');
    assert.ok(readBytes <= buffer.length);
    this.#direct = null;
    this.#directReadBytes += readBytes;
    this.#sink.feedDirect(readBytes);
  }
}
