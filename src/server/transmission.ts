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
// Checks run in a fixed order, because the order decides which error a client sees: magic
// (hard close), DISC, WRITE payload size (hard close above 32 MiB; the payload is always read
// before anything can reject the request), known command, valid flags, read-only (EPERM),
// negotiated command, range (ENOSPC for writes, EINVAL otherwise), alignment, READ size.
//
// Replies made in one turn of the event loop leave in one `writev`: the first reply of a turn
// corks the socket and the turn's end (`setImmediate`, after the poll phase that read the
// requests) uncorks it. Each write syscall wakes the client, and on a 2-vCPU VM a 16-byte
// reply cost 25 µs of the server's CPU that way (docs/performance.md, "Replies per turn").

import type { Duplex } from 'node:stream';
import assert from '../assert.js';
import type { DmIoClient } from '../core/client.js';
import {
  NBD_CMD_BLOCK_STATUS, NBD_CMD_DISC, NBD_CMD_FLAG_DF, NBD_CMD_FLAG_FAST_ZERO, NBD_CMD_FLAG_FUA,
  NBD_CMD_FLAG_NO_HOLE, NBD_CMD_FLAG_REQ_ONE, NBD_CMD_FLUSH, NBD_CMD_READ, NBD_CMD_TRIM,
  NBD_CMD_WRITE, NBD_CMD_WRITE_ZEROES, NBD_EINVAL, NBD_ENOSPC, NBD_EPERM, NBD_REQUEST_MAGIC,
  REQUEST_HEADER_BYTES,
} from '../nbd/protocol.js';
import type { NbdFailure } from './errno-map.js';
import type { BufferPool } from './buffer-pool.js';
import { blockStatus } from './block-status.js';
import { flushDevice, readBytes, trimBytes, writeBytes, zeroBytes } from './export-io.js';
import { readPieces, type ReadPiece } from './read-reply.js';
import { BASE_ALLOCATION_CONTEXT_ID, type Negotiated } from './handshake.js';
import { SERVER_REQUEST_BYTES_MAX } from './limits.js';
import { StreamEndedError, type FillDone, type SocketReader } from './socket-reader.js';
import {
  blockStatusChunk, errorChunk, noneChunk, offsetDataHeader, offsetHoleChunk, simpleReply,
} from './wire.js';

/** A parsed request header. */
interface Request {
  readonly flags: number;
  readonly type: number;
  readonly cookie: bigint;
  readonly offsetBytes: bigint;
  readonly lengthBytes: number;
}

/** How the request loop ended. */
export type TransmissionEnd = 'disconnect' | 'closed' | 'stopped';

/** The client broke a rule that leaves the stream unusable (bad magic, oversized WRITE). */
export class TransmissionViolation extends Error {
  constructor(reason: string) {
    super(reason);
    this.name = 'TransmissionViolation';
  }
}

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
    if (request.lengthBytes > SERVER_REQUEST_BYTES_MAX) {
      throw new TransmissionViolation(`WRITE of ${request.lengthBytes} bytes, ` +
        `at most ${SERVER_REQUEST_BYTES_MAX}`);
    }
    const payload = this.#pool.take(request.lengthBytes);
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
    const refusal = this.#check(request);
    if (refusal !== null) {
      if (payload !== null) this.#pool.give(payload);
      this.#replyStatus(request, refusal);
      return;
    }
    this.#start(request, payload);
  }

  /** The error a request gets before it runs, or `null` when it may run. */
  #check(request: Request): NbdFailure | null {
    const { served, structuredReplies, baseAllocation, blockSizesAsked } = this.#negotiated;
    const { type, flags } = request;
    const known = type === NBD_CMD_READ || type === NBD_CMD_WRITE || type === NBD_CMD_FLUSH ||
      type === NBD_CMD_TRIM || type === NBD_CMD_WRITE_ZEROES || type === NBD_CMD_BLOCK_STATUS;
    if (!known) return invalid(`unknown command ${type}`);
    if ((flags & ~allowedFlags(type, structuredReplies)) !== 0) {
      return invalid(`flags 0x${flags.toString(16)} are not valid for command ${type}`);
    }
    const writes = type === NBD_CMD_WRITE || type === NBD_CMD_TRIM || type === NBD_CMD_WRITE_ZEROES;
    if (writes && served.readOnly) {
      return { errorNumber: NBD_EPERM, message: 'the export is read-only' };
    }
    if (type === NBD_CMD_BLOCK_STATUS && !(structuredReplies && baseAllocation)) {
      return invalid('BLOCK_STATUS needs structured replies and the base:allocation context');
    }
    if (type === NBD_CMD_FLUSH) return null;
    const sizeBytes = BigInt(served.sizeBytes);
    if (request.offsetBytes > sizeBytes || BigInt(request.lengthBytes) > sizeBytes - request.offsetBytes) {
      const message = `${request.lengthBytes} bytes at ${request.offsetBytes} pass the end ` +
        `(${served.sizeBytes} bytes)`;
      const errorNumber = type === NBD_CMD_WRITE || type === NBD_CMD_WRITE_ZEROES ? NBD_ENOSPC : NBD_EINVAL;
      return { errorNumber, message };
    }
    const blockBytes = served.blockBytes;
    if (blockSizesAsked && type !== NBD_CMD_BLOCK_STATUS &&
        (Number(request.offsetBytes) % blockBytes !== 0 || request.lengthBytes % blockBytes !== 0)) {
      return invalid(`offset and length must be multiples of ${blockBytes} bytes`);
    }
    if (type === NBD_CMD_READ && request.lengthBytes > SERVER_REQUEST_BYTES_MAX) {
      return invalid(`READ of ${request.lengthBytes} bytes, at most ${SERVER_REQUEST_BYTES_MAX}`);
    }
    if (type === NBD_CMD_BLOCK_STATUS && request.lengthBytes === 0) {
      return invalid('BLOCK_STATUS needs a nonzero length');
    }
    return null;
  }

  #start(request: Request, payload: Uint8Array | null): void {
    const costBytes = request.type === NBD_CMD_READ || request.type === NBD_CMD_WRITE ?
      request.lengthBytes : 0;
    this.#inflightRequests += 1;
    this.#inflightBytes += costBytes;
    void this.#execute(request, payload).then(() => {
      this.#inflightRequests -= 1;
      this.#inflightBytes -= costBytes;
      this.#poke();
    });
  }

  /** Runs a checked request and replies; never rejects. */
  async #execute(request: Request, payload: Uint8Array | null): Promise<void> {
    const { served } = this.#negotiated;
    const client = this.#client;
    const offsetBytes = Number(request.offsetBytes);
    const fua = (request.flags & NBD_CMD_FLAG_FUA) !== 0;
    try {
      switch (request.type) {
        case NBD_CMD_READ: {
          const data = this.#pool.take(request.lengthBytes);
          const failure = await readBytes(client, served, offsetBytes, data);
          this.#replyRead(request, failure, data);
          return;
        }
        case NBD_CMD_WRITE: {
          const data = payload ?? new Uint8Array(0);
          const failure = await writeBytes(client, served, offsetBytes, data, fua);
          this.#pool.give(data);
          this.#replyStatus(request, failure);
          return;
        }
        case NBD_CMD_FLUSH:
          this.#replyStatus(request, await flushDevice(client, served));
          return;
        case NBD_CMD_TRIM:
          this.#replyStatus(request,
            await trimBytes(client, served, offsetBytes, request.lengthBytes, fua));
          return;
        case NBD_CMD_WRITE_ZEROES:
          this.#replyStatus(request, await zeroBytes(client, served, offsetBytes,
            request.lengthBytes, {
              fua,
              noHole: (request.flags & NBD_CMD_FLAG_NO_HOLE) !== 0,
              fastZero: (request.flags & NBD_CMD_FLAG_FAST_ZERO) !== 0,
            }));
          return;
        default:
          await this.#replyBlockStatus(request);
      }
    } catch (error) {
      // Not a device error (those come back as failures): a bug, answered rather than hung.
      this.#replyStatus(request, { errorNumber: NBD_EINVAL, message: String(error) });
    }
  }

  /** Sends a READ's reply; `data` goes back to the pool once the stream has taken it. */
  #replyRead(request: Request, failure: NbdFailure | null, data: Uint8Array): void {
    if (failure !== null) {
      this.#pool.give(data);
      this.#replyStatus(request, failure);
      return;
    }
    if (!this.#negotiated.structuredReplies) {
      this.#send(simpleReply(0, request.cookie), data);
    } else if (data.length === 0) {
      this.#send(noneChunk(request.cookie));
    } else {
      this.#sendPieces(request, data,
        readPieces(data, (request.flags & NBD_CMD_FLAG_DF) === 0));
    }
  }

  /**
   * A READ's structured reply in pieces (read-reply.ts): OFFSET_DATA chunks with their data,
   * OFFSET_HOLE chunks for long runs of zeros, the last one final. `data` goes back to the pool
   * once the stream is done with all of it.
   */
  #sendPieces(request: Request, data: Uint8Array, pieces: readonly ReadPiece[]): void {
    const stream = this.#stream;
    if (stream.destroyed || !stream.writable) {
      this.#pool.give(data);
      return;
    }
    const startBytes = Number(request.offsetBytes);
    const giveBack = (): void => this.#pool.give(data);
    this.#batchReplies();
    pieces.forEach((piece, index) => {
      const final = index === pieces.length - 1;
      // Writes complete in order: once the final one is done, so is every piece of `data`.
      const done = final ? giveBack : undefined;
      const offsetBytes = startBytes + piece.offsetBytes;
      if (piece.hole) {
        stream.write(offsetHoleChunk(request.cookie, offsetBytes, piece.lengthBytes, final), done);
      } else {
        stream.write(offsetDataHeader(request.cookie, offsetBytes, piece.lengthBytes, final));
        stream.write(piece.lengthBytes === data.length ? data :
          data.subarray(piece.offsetBytes, piece.offsetBytes + piece.lengthBytes), done);
      }
    });
  }

  /** Answers from the device's extents (all data when it has none); see block-status.ts. */
  async #replyBlockStatus(request: Request): Promise<void> {
    const reqOne = (request.flags & NBD_CMD_FLAG_REQ_ONE) !== 0;
    const answer = await blockStatus(this.#negotiated.served.device, Number(request.offsetBytes),
      request.lengthBytes, reqOne);
    if (answer.kind === 'failure') {
      this.#replyStatus(request, answer.failure);
      return;
    }
    this.#send(blockStatusChunk(request.cookie, BASE_ALLOCATION_CONTEXT_ID, answer.descriptors));
  }

  /** Success or an error without data: an ERROR chunk under structured replies (with text). */
  #replyStatus(request: Request, failure: NbdFailure | null): void {
    if (failure === null) this.#send(simpleReply(0, request.cookie));
    else if (this.#negotiated.structuredReplies) {
      this.#send(errorChunk(request.cookie, failure.errorNumber, failure.message));
    } else this.#send(simpleReply(failure.errorNumber, request.cookie));
  }

  /**
   * Writes one reply (a header and optional pooled data) back to back; dropped if the client
   * left. The data goes back to the pool once the stream is done with it.
   */
  #send(header: Buffer, data?: Uint8Array): void {
    const stream = this.#stream;
    if (stream.destroyed || !stream.writable) {
      if (data !== undefined) this.#pool.give(data);
      return;
    }
    this.#batchReplies();
    stream.write(header);
    if (data !== undefined && data.length > 0) stream.write(data, () => this.#pool.give(data));
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

function parseRequest(header: Buffer): Request {
  if (header.readUInt32BE(0) !== NBD_REQUEST_MAGIC) {
    throw new TransmissionViolation('bad request magic');
  }
  return {
    flags: header.readUInt16BE(4),
    type: header.readUInt16BE(6),
    cookie: header.readBigUInt64BE(8),
    offsetBytes: header.readBigUInt64BE(16),
    lengthBytes: header.readUInt32BE(24),
  };
}

/** The command flags a request of `type` may carry on this connection. */
function allowedFlags(type: number, structuredReplies: boolean): number {
  switch (type) {
    case NBD_CMD_READ:
      return NBD_CMD_FLAG_FUA | (structuredReplies ? NBD_CMD_FLAG_DF : 0);
    case NBD_CMD_WRITE_ZEROES:
      return NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FAST_ZERO;
    case NBD_CMD_BLOCK_STATUS:
      return NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_REQ_ONE;
    default:
      return NBD_CMD_FLAG_FUA;
  }
}

function invalid(message: string): NbdFailure {
  return { errorNumber: NBD_EINVAL, message };
}
