// Owns reading exact byte counts from a client's stream with bounded buffering. The parser asks
// for `n` bytes at a time (a header, an option, a WRITE payload) and gets them whole; bytes the
// client sent ahead of the parser are kept up to SERVER_READ_AHEAD_BYTES, then the stream is
// paused until the parser catches up, so a client that floods the socket costs a bounded
// amount of memory. `detach` hands back what was buffered but not consumed (STARTTLS must
// give the first bytes of a pipelined ClientHello back to the TLS layer).

import type { Duplex } from 'node:stream';
import assert from '../assert.js';
import { SERVER_READ_AHEAD_BYTES } from './limits.js';

/** The stream ended or was stopped before the bytes asked for arrived. */
export class StreamEndedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StreamEndedError';
  }
}

/** A read in progress: `target` fills from `filledBytes`. */
interface PendingRead {
  readonly target: Uint8Array;
  filledBytes: number;
  readonly resolve: () => void;
  readonly reject: (error: Error) => void;
}

/** Exact-length reads from one stream. */
export class SocketReader {
  readonly #stream: Duplex;
  readonly #chunks: Buffer[] = [];
  #bufferedBytes = 0;
  #pending: PendingRead | null = null;
  #ended: Error | null = null;
  readonly #onData = (chunk: Buffer): void => this.#push(chunk);
  readonly #onEnd = (): void => this.#end(new StreamEndedError('the client closed the connection'));

  constructor(stream: Duplex) {
    this.#stream = stream;
    stream.on('data', this.#onData);
    stream.on('end', this.#onEnd);
    stream.on('close', this.#onEnd);
  }

  /** Bytes received and not yet consumed. */
  get bufferedBytes(): number {
    return this.#bufferedBytes;
  }

  /**
   * Returns the next `lengthBytes` bytes if they are already buffered, else `null`, consuming
   * nothing then. Lets the request loop parse pipelined headers without awaiting.
   */
  take(lengthBytes: number): Buffer | null {
    if (this.#pending !== null || this.#bufferedBytes < lengthBytes) return null;
    const out = Buffer.allocUnsafe(lengthBytes);
    this.#drainInto(out, 0);
    this.#resumeIfRoom();
    return out;
  }

  /** Reads exactly `lengthBytes` bytes into a new buffer. */
  async read(lengthBytes: number): Promise<Buffer> {
    const out = Buffer.allocUnsafe(lengthBytes);
    await this.readInto(out);
    return out;
  }

  /** Fills `target` completely; rejects with StreamEndedError if the stream ends first. */
  readInto(target: Uint8Array): Promise<void> {
    assert.ok(this.#pending === null, 'one read at a time');
    const filledBytes = this.#drainInto(target, 0);
    if (filledBytes === target.length) {
      this.#resumeIfRoom();
      return Promise.resolve();
    }
    if (this.#ended !== null) return Promise.reject(this.#ended);
    return new Promise((resolve, reject) => {
      this.#pending = { target, filledBytes, resolve, reject };
      this.#stream.resume();
    });
  }

  /** Fails the read in progress (and every later one) with `reason`; used to stop a loop. */
  stop(reason: string): void {
    this.#end(new StreamEndedError(reason));
  }

  /** Stops listening to the stream and returns the bytes buffered but not consumed. */
  detach(): Buffer {
    assert.ok(this.#pending === null, 'no read in progress');
    this.#stream.off('data', this.#onData);
    this.#stream.off('end', this.#onEnd);
    this.#stream.off('close', this.#onEnd);
    this.#stream.pause();
    const rest = Buffer.concat(this.#chunks);
    this.#chunks.length = 0;
    this.#bufferedBytes = 0;
    this.#ended = new StreamEndedError('the reader was detached');
    return rest;
  }

  #push(chunk: Buffer): void {
    const pending = this.#pending;
    if (pending !== null) {
      const copyBytes = Math.min(chunk.length, pending.target.length - pending.filledBytes);
      pending.target.set(chunk.subarray(0, copyBytes), pending.filledBytes);
      pending.filledBytes += copyBytes;
      if (copyBytes < chunk.length) this.#keep(chunk.subarray(copyBytes));
      if (pending.filledBytes === pending.target.length) {
        this.#pending = null;
        pending.resolve();
      }
    } else {
      this.#keep(chunk);
    }
    if (this.#pending === null && this.#bufferedBytes >= SERVER_READ_AHEAD_BYTES) {
      this.#stream.pause();
    }
  }

  #keep(chunk: Buffer): void {
    this.#chunks.push(chunk);
    this.#bufferedBytes += chunk.length;
  }

  /** Moves buffered bytes into `target` from `offset`; returns the offset reached. */
  #drainInto(target: Uint8Array, offset: number): number {
    let filled = offset;
    while (filled < target.length && this.#chunks.length > 0) {
      const chunk = this.#chunks[0] as Buffer;
      const copyBytes = Math.min(chunk.length, target.length - filled);
      target.set(copyBytes === chunk.length ? chunk : chunk.subarray(0, copyBytes), filled);
      filled += copyBytes;
      this.#bufferedBytes -= copyBytes;
      if (copyBytes === chunk.length) this.#chunks.shift();
      else this.#chunks[0] = chunk.subarray(copyBytes);
    }
    return filled;
  }

  #resumeIfRoom(): void {
    if (this.#ended === null && this.#bufferedBytes < SERVER_READ_AHEAD_BYTES) {
      this.#stream.resume();
    }
  }

  #end(error: Error): void {
    if (this.#ended !== null) return;
    this.#ended = error;
    const pending = this.#pending;
    this.#pending = null;
    pending?.reject(error);
  }
}
