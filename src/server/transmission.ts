// Owns the transmission phase of one connection: reading requests, checking each against the
// protocol and the export, running it through dm-io and sending its reply. Requests run
// concurrently and reply in completion order. The loop reads the socket only while the
// connection has room — fewer than `inflightRequestsMax` requests running and fewer than
// `connectionBytesMax` bytes held in request buffers and unsent replies — so a fast client
// fills the kernel's socket buffer, not the server's memory.
//
// Checks run in a fixed order, because the order decides which error a client sees: magic
// (hard close), DISC, WRITE payload size (hard close above 32 MiB; the payload is always read
// before anything can reject the request), known command, valid flags, read-only (EPERM),
// negotiated command, range (ENOSPC for writes, EINVAL otherwise), alignment, READ size.

import type { Duplex } from 'node:stream';
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
import { StreamEndedError, type SocketReader } from './socket-reader.js';
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
  /** The stream is corked until this turn ends (`#holdRepliesForTurn`). */
  #heldForTurn = false;

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
    const end = await this.#loop();
    while (this.#inflightRequests > 0) await this.#nextWake();
    return end;
  }

  /** Stops reading requests; those already read still run and reply. */
  stop(): void {
    this.#stopping = true;
    this.#reader.stop('the server is shutting down');
    this.#poke();
  }

  async #loop(): Promise<TransmissionEnd> {
    try {
      for (;;) {
        while (!this.#stopping && !this.#hasRoom()) await this.#nextWake();
        if (this.#stopping) return 'stopped';
        const header = this.#reader.take(REQUEST_HEADER_BYTES) ??
          await this.#reader.read(REQUEST_HEADER_BYTES);
        const request = parseRequest(header);
        if (request.type === NBD_CMD_DISC) return 'disconnect';
        await this.#accept(request);
      }
    } catch (error) {
      if (error instanceof StreamEndedError) return this.#stopping ? 'stopped' : 'closed';
      throw error;
    }
  }

  async #accept(request: Request): Promise<void> {
    let payload: Uint8Array | null = null;
    if (request.type === NBD_CMD_WRITE) {
      if (request.lengthBytes > SERVER_REQUEST_BYTES_MAX) {
        throw new TransmissionViolation(`WRITE of ${request.lengthBytes} bytes, ` +
          `at most ${SERVER_REQUEST_BYTES_MAX}`);
      }
      payload = this.#pool.take(request.lengthBytes);
      // Counted before it is read, so the next request waits for room.
      this.#inflightBytes += payload.length;
      try {
        await this.#reader.readInto(payload);
      } catch (error) {
        // Not given back to the pool: the socket may still hold a view of it for a read
        // that never comes; the connection is ending and the buffer goes with it.
        this.#inflightBytes -= payload.length;
        throw error;
      }
      this.#inflightBytes -= payload.length;
    }
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
    this.#holdRepliesForTurn(stream);
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
    this.#holdRepliesForTurn(stream);
    stream.write(header);
    if (data !== undefined && data.length > 0) stream.write(data, () => this.#pool.give(data));
  }

  /**
   * Corks the stream until the current turn's microtasks and ticks have run, so the replies of
   * every request completed in this turn (a batch of ring completions resolves many at once)
   * reach the kernel in one `writev` and wake the client once, where each used to be its own
   * system call. A reply's header and data stay back to back either way.
   */
  #holdRepliesForTurn(stream: Duplex): void {
    if (this.#heldForTurn) return;
    this.#heldForTurn = true;
    stream.cork();
    process.nextTick(() => {
      this.#heldForTurn = false;
      stream.uncork();
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

  #poke(): void {
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
