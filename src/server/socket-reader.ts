// Owns reading exact byte counts from a client's stream with bounded buffering. The parser asks
// for `n` bytes at a time (a header, an option, a WRITE payload) and gets them whole; bytes the
// client sent ahead of the parser are kept up to SERVER_READ_AHEAD_BYTES, then the stream is
// paused until the parser catches up, so a client that floods the socket costs a bounded
// amount of memory. `detach` hands back what was buffered but not consumed (STARTTLS must
// give the first bytes of a pipelined ClientHello back to the TLS layer; a connection handed
// to a polling thread after its handshake takes the requests pipelined behind it).
//
// `fill` is the one way bytes are asked for: it completes at once from kept bytes, or later by
// calling back synchronously from inside the read that completed it, after that read's surplus
// is kept. A parser that asks for its next bytes from that callback (the transmission loop
// asks for a WRITE's payload as soon as its header is in) has its memory known before Node
// picks the next read's buffer, so the payload is read in place. `readInto` and `read` are
// the same with a promise, for the handshake.
//
// Two ways in, chosen when the connection opens (server-socket.ts):
// - `onread`: the socket reads into one staging buffer owned by the reader, or, while a read
//   of at least SERVER_DIRECT_READ_BYTES_MIN is waiting for bytes (a WRITE payload), straight
//   into the waiting memory, so the kernel copies the payload where it belongs. Node then
//   allocates nothing per read: no buffer to fault in, nothing for the garbage collector.
// - `'data'` events of any Duplex (a TLS stream), one buffer per read, allocated by Node.
// Bytes kept for later are copied into one reusable buffer either way.

import type { OnReadOpts } from 'node:net';
import type { Duplex } from 'node:stream';
import assert from '../assert.js';
import { SERVER_DIRECT_READ_BYTES_MIN, SERVER_READ_AHEAD_BYTES } from './limits.js';
import { KIB } from '../constants.js';

/** Bytes of the staging buffer an `onread` socket reads into (what Node allocates per read). */
const STAGING_BYTES = 64 * KIB;
/** Smallest buffer for bytes kept across reads: the first growth is at least this. */
const KEPT_BYTES_MIN = 4 * KIB;

/** The stream ended or was stopped before the bytes asked for arrived. */
export class StreamEndedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StreamEndedError';
  }
}

/**
 * Called when a `fill` that could not complete at once has: with `null`, or with the
 * StreamEndedError that ended the stream first.
 */
export type FillDone = (error: Error | null) => void;

/** A read in progress: `target` fills from `filledBytes`. */
interface PendingRead {
  readonly target: Uint8Array;
  filledBytes: number;
  readonly done: FillDone;
}

/** Exact-length reads from one stream. */
export class SocketReader {
  /** Pass as `onread` when creating a socket, then `attachOnread` it. */
  readonly onread: OnReadOpts;
  #stream: Duplex | null = null;
  #usesDataEvents = false;
  #staging: Buffer | null = null;
  /** Kept bytes live in `#kept[#keptStart, #keptEnd)`. */
  #kept: Buffer = Buffer.allocUnsafe(0);
  #keptStart = 0;
  #keptEnd = 0;
  #pending: PendingRead | null = null;
  /** The view of a pending read's memory handed to the socket for its next read. */
  #direct: Uint8Array | null = null;
  #ended: Error | null = null;
  readonly #onData = (chunk: Buffer): void => this.#push(chunk);
  readonly #onEnd = (): void => this.#end(new StreamEndedError('the client closed the connection'));

  private constructor() {
    this.onread = {
      buffer: () => this.#nextReadBuffer(),
      callback: (readBytes, buffer) => {
        this.#received(readBytes, buffer);
        return true;
      },
    };
  }

  /** A reader of `stream`'s `'data'` events. */
  static forStream(stream: Duplex): SocketReader {
    const reader = new SocketReader();
    reader.#listen(stream, true);
    return reader;
  }

  /** A reader for a socket still to be created with `reader.onread`; then `attachOnread`. */
  static forOnread(): SocketReader {
    const reader = new SocketReader();
    reader.#staging = Buffer.allocUnsafe(STAGING_BYTES);
    return reader;
  }

  /** Connects the reader to the socket made with its `onread` (before any read can land). */
  attachOnread(socket: Duplex): void {
    assert.ok(this.#staging !== null && this.#stream === null, 'a reader made for onread');
    this.#listen(socket, false);
  }

  /** Bytes received and not yet consumed. */
  get bufferedBytes(): number {
    return this.#keptEnd - this.#keptStart;
  }

  /** Reads exactly `lengthBytes` bytes into a new buffer. */
  async read(lengthBytes: number): Promise<Buffer> {
    const out = Buffer.allocUnsafe(lengthBytes);
    await this.readInto(out);
    return out;
  }

  /**
   * Fills `target` completely; rejects with StreamEndedError if the stream ends first. After
   * a rejection the socket may still hold a view of `target` for a read that never comes
   * (the connection is ending): do not reuse `target` for anything else.
   */
  readInto(target: Uint8Array): Promise<void> {
    return new Promise((resolve, reject) => {
      const filled = this.fill(target, (error) => {
        if (error === null) resolve();
        else reject(error);
      });
      if (filled) resolve();
    });
  }

  /**
   * Fills `target` completely. Returns true when buffered bytes did (`done` is then never
   * called); else returns false and calls `done` once, from the read that completes it (or
   * with the error that ends the stream first). Throws StreamEndedError when the stream has
   * ended already. One fill at a time; the caveat of `readInto` about `target` applies.
   */
  fill(target: Uint8Array, done: FillDone): boolean {
    assert.ok(this.#pending === null, 'one read at a time');
    const filledBytes = this.#drainInto(target, 0);
    if (filledBytes === target.length) {
      this.#resumeIfRoom();
      return true;
    }
    if (this.#ended !== null) throw this.#ended;
    this.#pending = { target, filledBytes, done };
    this.#stream?.resume();
    return false;
  }

  /** Fails the read in progress (and every later one) with `reason`; used to stop a loop. */
  stop(reason: string): void {
    this.#end(new StreamEndedError(reason));
  }

  /**
   * Stops listening to the stream (paused) and returns every byte it delivered that was not
   * consumed, for whoever reads the stream or its descriptor next: the bytes kept here and,
   * for a `'data'` reader, those the paused stream holds in its own buffer.
   */
  detach(): Buffer {
    assert.ok(this.#pending === null, 'no read in progress');
    const stream = this.#stream;
    const parts: Uint8Array[] = [this.#kept.subarray(this.#keptStart, this.#keptEnd)];
    if (stream !== null) {
      if (this.#usesDataEvents) stream.off('data', this.#onData);
      stream.off('end', this.#onEnd);
      stream.off('close', this.#onEnd);
      stream.pause();
      if (this.#usesDataEvents) {
        for (let chunk = readBuffered(stream); chunk !== null; chunk = readBuffered(stream)) {
          parts.push(chunk);
        }
      }
    }
    const rest = Buffer.concat(parts);
    this.#keptStart = 0;
    this.#keptEnd = 0;
    this.#ended = new StreamEndedError('the reader was detached');
    return rest;
  }

  #listen(stream: Duplex, dataEvents: boolean): void {
    this.#stream = stream;
    this.#usesDataEvents = dataEvents;
    stream.on('end', this.#onEnd);
    stream.on('close', this.#onEnd);
    if (dataEvents) {
      stream.on('data', this.#onData);
      // A socket accepted with pauseOnConnect stays paused until asked.
      stream.resume();
    }
  }

  /** Called by Node before each read of an `onread` socket: where the read lands. */
  #nextReadBuffer(): Uint8Array {
    const pending = this.#pending;
    const staging = this.#staging as Buffer;
    if (pending === null || this.#ended !== null) return staging;
    const leftBytes = pending.target.length - pending.filledBytes;
    if (leftBytes < SERVER_DIRECT_READ_BYTES_MIN) return staging;
    this.#direct = pending.target.subarray(pending.filledBytes);
    return this.#direct;
  }

  /** Called by Node after each read of `readBytes` > 0 bytes of an `onread` socket. */
  #received(readBytes: number, buffer: Uint8Array): void {
    if (buffer === this.#staging) {
      this.#push(this.#staging.subarray(0, readBytes), true);
      return;
    }
    assert.ok(buffer === this.#direct, 'a read landed in a view nobody handed out');
    this.#direct = null;
    const pending = this.#pending;
    // Stopped meanwhile (nothing can become pending after that): dropped with the connection.
    if (pending === null) return;
    pending.filledBytes += readBytes;
    if (pending.filledBytes === pending.target.length) {
      this.#pending = null;
      pending.done(null);
    }
  }

  /**
   * New bytes: into the waiting read first, the rest kept (copied: `chunk` may be reused, except
   * a chunk of the staging buffer, which `#keep` may take over instead), and only then the
   * waiting read told, so that it can ask for its next bytes from what is kept.
   */
  #push(chunk: Uint8Array, staged = false): void {
    if (this.#ended !== null) return;
    let usedBytes = 0;
    const pending = this.#pending;
    if (pending !== null) {
      usedBytes = Math.min(chunk.length, pending.target.length - pending.filledBytes);
      pending.target.set(usedBytes === chunk.length ? chunk : chunk.subarray(0, usedBytes),
        pending.filledBytes);
      pending.filledBytes += usedBytes;
    }
    if (usedBytes < chunk.length) {
      const rest = chunk.subarray(usedBytes);
      if (!staged || !this.#adoptStaging(rest)) this.#keep(rest);
    }
    if (pending !== null && pending.filledBytes === pending.target.length) {
      this.#pending = null;
      pending.done(null);
    }
    if (this.#pending === null && this.bufferedBytes >= SERVER_READ_AHEAD_BYTES) {
      this.#stream?.pause();
    }
  }

  /**
   * Keeps `rest`, the end of what the last read put in the staging buffer, without copying it
   * when nothing else is kept: the staging buffer becomes the kept one and the old kept buffer
   * (or a new one, once) the staging buffer. A read that stopped inside a WRITE payload leaves
   * up to a staging buffer of it behind its header, which is then copied once, into the
   * payload, instead of twice. Returns false, having done nothing, when bytes are kept already.
   */
  #adoptStaging(rest: Uint8Array): boolean {
    const staging = this.#staging;
    if (staging === null || this.bufferedBytes > 0) return false;
    const previous = this.#kept;
    this.#kept = staging;
    this.#keptStart = rest.byteOffset - staging.byteOffset;
    this.#keptEnd = this.#keptStart + rest.length;
    this.#staging = previous.length >= STAGING_BYTES ? previous.subarray(0, STAGING_BYTES) :
      Buffer.allocUnsafe(STAGING_BYTES);
    return true;
  }

  /**
   * Appends to the kept bytes, moving them to the front (or into a larger buffer) when they
   * do not fit behind. At most SERVER_READ_AHEAD_BYTES plus one read are ever kept, so the
   * buffer stops growing after the first flood.
   */
  #keep(bytes: Uint8Array): void {
    if (this.#keptEnd + bytes.length > this.#kept.length) {
      const keptBytes = this.bufferedBytes;
      const target = keptBytes + bytes.length > this.#kept.length ?
        Buffer.allocUnsafe(Math.max(2 * this.#kept.length, keptBytes + bytes.length, KEPT_BYTES_MIN)) :
        this.#kept;
      this.#kept.copy(target, 0, this.#keptStart, this.#keptEnd);
      this.#kept = target;
      this.#keptStart = 0;
      this.#keptEnd = keptBytes;
    }
    this.#kept.set(bytes, this.#keptEnd);
    this.#keptEnd += bytes.length;
  }

  /** Moves buffered bytes into `target` from `offset`; returns the offset reached. */
  #drainInto(target: Uint8Array, offset: number): number {
    const copyBytes = Math.min(this.bufferedBytes, target.length - offset);
    if (copyBytes > 0) {
      target.set(this.#kept.subarray(this.#keptStart, this.#keptStart + copyBytes), offset);
      this.#keptStart += copyBytes;
      if (this.#keptStart === this.#keptEnd) {
        this.#keptStart = 0;
        this.#keptEnd = 0;
      }
    }
    return offset + copyBytes;
  }

  #resumeIfRoom(): void {
    if (this.#ended === null && this.bufferedBytes < SERVER_READ_AHEAD_BYTES) {
      this.#stream?.resume();
    }
  }

  #end(error: Error): void {
    if (this.#ended !== null) return;
    this.#ended = error;
    const pending = this.#pending;
    this.#pending = null;
    pending?.done(error);
  }
}

/** What a paused stream holds in its own buffer, a chunk at a time; null once empty. */
function readBuffered(stream: Duplex): Buffer | null {
  return stream.read() as Buffer | null;
}
