// Owns the transmission phase of one connection: reading requests, checking each against the
// protocol and the export, running it through dm-io and sending its reply. Requests run
// concurrently and reply in completion order. The loop reads the socket only while the
// connection has room — fewer than `inflightRequestsMax` requests running and fewer than
// `connectionBytesMax` bytes held in request buffers and unsent replies — so a fast client
// fills the kernel's socket buffer, not the server's memory.
//
// The loop (`#pump`) is synchronous: it parses every request whose bytes are in, and when it
// needs more it leaves a `fill` with the socket reader and returns; the reader calls it back
// from inside the socket read that brought the bytes. So a WRITE's payload memory is handed
// to the reader in the same read callback that brought its header, before Node picks the next
// read's buffer: the rest of the payload is read in place, and no promise hop sits between a
// header and its payload. Completions and drained replies call the loop again (`#poke`).
//
// What a request means (its checks, in their fixed order, and the program it runs with its
// reply) is decided by request-rules.ts and request-program.ts, which the polling threads'
// driver (polled-connection.ts) runs too; this file is the event loop's driver of them.
//
// Replies made in one turn of the event loop leave in one `writev`: the first reply of a turn
// corks the socket and the turn's end (`setImmediate`, after the poll phase that read the
// requests) uncorks it. Each write syscall wakes the client, and on a 2-vCPU VM a 16-byte
// reply cost 25 µs of the server's CPU that way (docs/performance.md, "Replies per turn").

import type { Duplex } from 'node:stream';
import assert from '../assert.js';
import type { DmIoClient } from '../core/client.js';
import { NBD_CMD_DISC, NBD_CMD_READ, NBD_CMD_WRITE, REQUEST_HEADER_BYTES } from '../nbd/protocol.js';
import type { BufferPool } from './buffer-pool.js';
import type { Negotiated } from './handshake.js';
import { runIoProgram } from './io-program.js';
import { requestProgram, statusReply, type Reply } from './request-program.js';
import {
  checkRequest, invalid, parseRequest, writePayloadBytes, type Request,
} from './request-rules.js';
import { StreamEndedError, type FillDone, type SocketReader } from './socket-reader.js';

/** How the request loop ended. */
export type TransmissionEnd = 'disconnect' | 'closed' | 'stopped';

/** A WRITE whose payload is being read. */
interface IncomingWrite {
  readonly request: Request;
  readonly payload: Uint8Array;
}

/** How `run` learns that the request loop ended. */
interface LoopEnd {
  readonly resolve: (end: TransmissionEnd) => void;
  readonly reject: (error: unknown) => void;
}

/** Bounds of one connection's transmission phase. */
export interface TransmissionLimits {
  readonly inflightRequestsMax: number;
  readonly connectionBytesMax: number;
}

/** One connection's request loop. */
export class Transmission {
  readonly #reader: SocketReader;
  readonly #stream: Duplex;
  readonly #client: DmIoClient;
  readonly #negotiated: Negotiated;
  readonly #limits: TransmissionLimits;
  readonly #pool: BufferPool;
  #inflightRequests = 0;
  #inflightBytes = 0;
  #stopping = false;
  #wake: (() => void) | null = null;
  /** Set while the loop runs; cleared once it has ended. */
  #loopEnd: LoopEnd | null = null;
  /** True while `#pump` is on the stack (it is not re-entered). */
  #pumping = false;
  /** True while the reader holds a fill of `#header` or of `#incoming`'s payload. */
  #filling = false;
  /** True when `#header` holds a request header not yet parsed. */
  #headerReady = false;
  /** The WRITE whose payload is being read, between its header and its last byte. */
  #incoming: IncomingWrite | null = null;
  readonly #header = Buffer.allocUnsafe(REQUEST_HEADER_BYTES);
  readonly #filled: FillDone = (error) => this.#onFilled(error);
  /** True while the socket is corked until the end of this turn (`#batchReplies`). */
  #batching = false;

  constructor(
    reader: SocketReader, stream: Duplex, client: DmIoClient, negotiated: Negotiated,
    limits: TransmissionLimits, pool: BufferPool,
  ) {
    this.#reader = reader;
    this.#stream = stream;
    this.#client = client;
    this.#negotiated = negotiated;
    this.#limits = limits;
    this.#pool = pool;
    stream.on('drain', () => this.#poke());
    // A destroyed stream never drains: a loop waiting for room would wait for ever.
    stream.once('close', () => this.stop());
  }

  /** Requests running now. */
  get inflightRequests(): number {
    return this.#inflightRequests;
  }

  /**
   * Reads and runs requests until DISC, the end of the stream, or `stop()`; then waits for
   * the requests in flight to reply. Throws TransmissionViolation for a hard close.
   */
  async run(): Promise<TransmissionEnd> {
    const end = await new Promise<TransmissionEnd>((resolve, reject) => {
      this.#loopEnd = { resolve, reject };
      this.#pump();
    });
    while (this.#inflightRequests > 0) await this.#nextWake();
    return end;
  }

  /** Stops reading requests; those already read still run and reply. */
  stop(): void {
    this.#stopping = true;
    this.#reader.stop('the server is shutting down');
    this.#poke();
  }

  /**
   * Parses and starts requests while their bytes are in and the connection has room; returns
   * when it must wait (for bytes: a fill is left with the reader; for room: `#poke` calls it
   * again) or when the loop has ended.
   */
  #pump(): void {
    if (this.#pumping || this.#filling || this.#loopEnd === null) return;
    this.#pumping = true;
    try {
      this.#parseRequests();
    } catch (error) {
      this.#endLoop(error);
    } finally {
      this.#pumping = false;
    }
  }

  #parseRequests(): void {
    for (;;) {
      if (this.#stopping) {
        this.#endLoop(new StreamEndedError('the server is shutting down'));
        return;
      }
      // With a WRITE incoming here, its payload is in (the loop only runs without a fill).
      if (this.#incoming === null) {
        if (!this.#headerReady) {
          if (!this.#hasRoom()) return;
          if (!this.#startFill(this.#header)) return;
        }
        this.#headerReady = false;
        const request = parseRequest(this.#header);
        if (request.type === NBD_CMD_DISC) {
          this.#endLoop(null);
          return;
        }
        if (request.type !== NBD_CMD_WRITE) {
          this.#accept(request, null);
          continue;
        }
        this.#incoming = this.#receiveWrite(request);
        if (!this.#startFill(this.#incoming.payload)) return;
      }
      const { request, payload } = this.#incoming;
      this.#incoming = null;
      this.#inflightBytes -= payload.length;
      this.#accept(request, payload);
    }
  }

  /** Asks the reader for `target`; true when it is filled already, false when it will be. */
  #startFill(target: Uint8Array): boolean {
    const filled = this.#reader.fill(target, this.#filled);
    this.#filling = !filled;
    return filled;
  }

  /**
   * The reader's callback for a fill that did not complete at once: the header or the
   * payload of `#incoming` is in, and the loop goes on from there.
   */
  #onFilled(error: Error | null): void {
    this.#filling = false;
    if (error !== null) {
      this.#endLoop(error);
      return;
    }
    assert.ok(!this.#pumping, 'a fill completes from a read, not from inside the loop');
    if (this.#incoming === null) this.#headerReady = true;
    this.#pump();
  }

  /**
   * A WRITE's payload memory, counted before it is read so the next request waits for room.
   * Hard close above the maximum: its payload would have to be skipped unread.
   */
  #receiveWrite(request: Request): IncomingWrite {
    const payload = this.#pool.take(writePayloadBytes(request));
    this.#inflightBytes += payload.length;
    return { request, payload };
  }

  /**
   * Ends the loop: with `null` at DISC, a StreamEndedError when the stream ended or the
   * server stopped it, else (a violation, a bug) by rejecting `run`.
   */
  #endLoop(error: unknown): void {
    const loopEnd = this.#loopEnd;
    if (loopEnd === null) return;
    this.#loopEnd = null;
    const incoming = this.#incoming;
    if (incoming !== null) {
      // Not given back to the pool: the socket may still hold a view of it for a read that
      // never comes; the connection is ending and the buffer goes with it.
      this.#incoming = null;
      this.#inflightBytes -= incoming.payload.length;
    }
    if (error === null) loopEnd.resolve('disconnect');
    else if (error instanceof StreamEndedError) loopEnd.resolve(this.#stopping ? 'stopped' : 'closed');
    else loopEnd.reject(error);
  }

  /** Checks a request whose bytes are all in, then answers it or starts it. */
  #accept(request: Request, payload: Uint8Array | null): void {
    const refusal = checkRequest(request, this.#negotiated);
    if (refusal !== null) {
      if (payload !== null) this.#pool.give(payload);
      this.#send(statusReply(request, refusal, this.#negotiated.structuredReplies));
      return;
    }
    this.#start(request, payload);
  }

  #start(request: Request, payload: Uint8Array | null): void {
    const costBytes = request.type === NBD_CMD_READ || request.type === NBD_CMD_WRITE ?
      request.lengthBytes : 0;
    this.#inflightRequests += 1;
    this.#inflightBytes += costBytes;
    const program = requestProgram(request, payload, this.#negotiated, this.#pool);
    const done = (reply: Reply): void => {
      this.#send(reply);
      this.#inflightRequests -= 1;
      this.#inflightBytes -= costBytes;
      this.#poke();
    };
    // The program answers every device error itself; a throw out of it is a bug, answered
    // rather than left hanging.
    void runIoProgram(this.#client, this.#negotiated.served, program).then(done, (error: unknown) =>
      done(statusReply(request, invalid(String(error)), this.#negotiated.structuredReplies)));
  }

  /**
   * Writes a reply's frames back to back; dropped if the client left. Its pooled data goes
   * back to the pool once the stream is done with the last frame (writes complete in order).
   */
  #send(reply: Reply): void {
    const stream = this.#stream;
    const { frames, pooled } = reply;
    if (stream.destroyed || !stream.writable) {
      if (pooled !== null) this.#pool.give(pooled);
      return;
    }
    this.#batchReplies();
    const last = frames.length - 1;
    for (let index = 0; index < last; index += 1) stream.write(frames[index]);
    stream.write(frames[last], pooled === null ? undefined : () => this.#pool.give(pooled));
  }

  /** Corks the socket until the end of this turn, once per turn (see the file's header). */
  #batchReplies(): void {
    if (this.#batching) return;
    this.#batching = true;
    this.#stream.cork();
    setImmediate(() => {
      this.#batching = false;
      this.#stream.uncork();
    });
  }

  #hasRoom(): boolean {
    return this.#inflightRequests < this.#limits.inflightRequestsMax &&
      this.#inflightBytes + this.#stream.writableLength < this.#limits.connectionBytesMax;
  }

  #nextWake(): Promise<void> {
    return new Promise((resolve) => {
      this.#wake = resolve;
    });
  }

  /** Room may have come back, or the last request finished: runs the loop and wakes `run`. */
  #poke(): void {
    this.#pump();
    const wake = this.#wake;
    this.#wake = null;
    wake?.();
  }
}
