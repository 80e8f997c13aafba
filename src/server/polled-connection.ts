// Owns one connection in the transmission phase on a polling thread (poll-thread.ts): its
// socket read without libuv, by non-blocking `recv` whenever the thread's `poll` says it is
// readable, each request run to completion on the thread with `runIoProgramBlocking`, and its
// replies sent by non-blocking `sendmsg`, kept while the socket is full and sent on POLLOUT.
// What a request means, its checks and its reply come from request-rules.ts and
// request-program.ts, as for the event loop's driver (transmission.ts).
//
// A partial header or payload stays where it landed until the next POLLIN, so a client that
// stalls mid-request costs its own memory and never holds the thread. Bounds: one request
// runs at a time (it completes before the next is read); the socket is not read while unsent
// replies hold `connectionBytesMax` or more; one turn runs at most `requestsPerTurnMax`
// requests before the thread serves its other connections.
//
// Ends: DISC or the server stopping (stop reading, send what is owed, then end the sending
// side and wait up to SERVER_CLOSE_LINGER_MS for the client to close its own, discarding what
// it still sends, so a TCP client gets a FIN rather than a reset), the client leaving or a
// protocol violation (close at once). Once ending, replies the client does not read for
// SERVER_UNSENT_REPLIES_MS are dropped with the connection; an idle client that is not ending
// keeps its connection, as on the event loop. Frames are never empty, so a send that moves no byte means
// the socket is full.

import { performance } from 'node:perf_hooks';
import { KIB } from '../constants.js';
import type { DmIoClient } from '../core/client.js';
import { NBD_CMD_DISC, NBD_CMD_WRITE, REQUEST_HEADER_BYTES } from '../nbd/protocol.js';
import {
  closeFd, POLLIN, POLLOUT, receiveNow, SEND_PIECES_MAX, sendNow, shutdownWrite,
} from '../sys/socket-poll.js';
import type { BufferPool } from './buffer-pool.js';
import type { Negotiated } from './handshake.js';
import { SERVER_CLOSE_LINGER_MS, SERVER_UNSENT_REPLIES_MS } from './limits.js';
import { runIoProgramBlocking } from './io-program.js';
import { requestProgram, statusReply, type Reply } from './request-program.js';
import {
  checkRequest, parseRequest, TransmissionViolation, writePayloadBytes, type Request,
} from './request-rules.js';


/** Reads of a lingering client's leftovers per turn, then the thread's other connections. */
const DISCARD_READS_PER_TURN_MAX = 16;
/** Bytes one such read takes. */
const DISCARD_BYTES = 64 * KIB;

/** Bounds of one polled connection. */
export interface PolledLimits {
  readonly connectionBytesMax: number;
  readonly requestsPerTurnMax: number;
}

/** A WRITE whose payload is arriving. */
interface IncomingWrite {
  readonly request: Request;
  readonly payload: Uint8Array;
  filledBytes: number;
}

/** One client socket driven by a polling thread. */
export class PolledConnection {
  readonly fd: number;
  readonly #negotiated: Negotiated;
  readonly #client: DmIoClient;
  readonly #pool: BufferPool;
  readonly #limits: PolledLimits;
  readonly #log: (message: string) => void;
  /** Bytes the handshake read past its end, taken before the socket. */
  #kept: Uint8Array | null;
  readonly #header = Buffer.allocUnsafe(REQUEST_HEADER_BYTES);
  #headerBytes = 0;
  #incoming: IncomingWrite | null = null;
  /** Frames owed to the client from `#head` on; `#owners[i]` goes back to the pool after frame i. */
  #frames: Uint8Array[] = [];
  #owners: Array<Uint8Array | null> = [];
  #head = 0;
  /** Bytes of `#frames[#head]` already sent. */
  #headSentBytes = 0;
  #unsentBytes = 0;
  /** Set once no more requests are read: DISC, the server stopping. */
  #draining = false;
  /** Set when the connection is over (nothing more is sent). */
  #finished = false;
  /** When owed replies stop being waited for, once draining. */
  #drainDeadlineMs = Infinity;
  /** Set once everything owed was sent and the sending side ended: waiting for the client's end. */
  #lingering = false;
  #lingerDeadlineMs = Infinity;
  /** Where a lingering client's leftovers are read to be dropped (made when it lingers). */
  #discarded: Buffer | null = null;
  #disposed = false;

  constructor(
    fd: number, negotiated: Negotiated, kept: Uint8Array | null, client: DmIoClient,
    pool: BufferPool, limits: PolledLimits, log: (message: string) => void,
  ) {
    this.fd = fd;
    this.#negotiated = negotiated;
    this.#kept = kept !== null && kept.length > 0 ? kept : null;
    this.#client = client;
    this.#pool = pool;
    this.#limits = limits;
    this.#log = log;
  }

  /** True once the connection is over; the thread then calls `dispose`. */
  get finished(): boolean {
    return this.#finished;
  }

  /** True when bytes the handshake read ahead wait to be parsed (no POLLIN will say so). */
  get hasKeptBytes(): boolean {
    return this.#kept !== null && this.#reading();
  }

  /** The poll events the connection waits for now. */
  get events(): number {
    if (this.#finished) return 0;
    if (this.#lingering) return POLLIN;
    return (this.#reading() ? POLLIN : 0) | (this.#unsentBytes > 0 ? POLLOUT : 0);
  }

  /** When the thread must look at this connection again without an event (ms, `performance.now`). */
  get deadlineMs(): number {
    return this.#lingering ? this.#lingerDeadlineMs : this.#drainDeadlineMs;
  }

  /** Reads and runs the requests that have arrived, each reply sent as it is made. */
  readable(): void {
    if (this.#lingering) {
      this.#discardUntilEnd();
      return;
    }
    try {
      for (let ran = 0; ran < this.#limits.requestsPerTurnMax && this.#reading();) {
        const step = this.#receiveRequest();
        if (step === 'wait') break;
        ran += 1;
      }
    } catch (error) {
      this.#fail(error);
    }
  }

  /** The socket has room: sends what is owed. */
  writable(): void {
    this.#sendOwed();
  }

  /** Called by the thread on each wake-up: ends a drain that waited too long. */
  checkDeadline(nowMs: number): void {
    if (this.#finished || nowMs < this.deadlineMs) return;
    if (!this.#lingering) this.#log('closing a connection: its replies were not read in time');
    this.#finished = true;
  }

  /** The server is stopping: no more requests are read; what is owed is still sent. */
  stop(): void {
    this.#startDraining();
  }

  /** The server's grace period is over: the connection ends now, owed replies or not. */
  abandon(): void {
    this.#finished = true;
  }

  /** Closes the socket and gives back every pooled buffer it held. Idempotent. */
  dispose(): void {
    this.#finished = true;
    if (this.#disposed) return;
    this.#disposed = true;
    for (let index = this.#head; index < this.#owners.length; index += 1) {
      const owner = this.#owners[index];
      if (owner !== null && owner !== undefined) this.#pool.give(owner);
    }
    this.#frames = [];
    this.#owners = [];
    this.#head = 0;
    this.#unsentBytes = 0;
    const incoming = this.#incoming;
    this.#incoming = null;
    if (incoming !== null) this.#pool.give(incoming.payload);
    closeFd(this.fd);
  }

  #reading(): boolean {
    return !this.#draining && !this.#finished && this.#unsentBytes < this.#limits.connectionBytesMax;
  }

  /**
   * Moves one request forward: 'ran' when one was answered (or the loop ended), 'wait' when
   * its bytes are not all in yet.
   */
  #receiveRequest(): 'ran' | 'wait' {
    let incoming = this.#incoming;
    if (incoming === null) {
      const headerBytes = this.#receive(this.#header, this.#headerBytes);
      if (headerBytes === null) return this.#clientLeft();
      this.#headerBytes = headerBytes;
      if (headerBytes < REQUEST_HEADER_BYTES) return 'wait';
      this.#headerBytes = 0;
      const request = parseRequest(this.#header);
      if (request.type === NBD_CMD_DISC) {
        this.#startDraining();
        return 'ran';
      }
      if (request.type !== NBD_CMD_WRITE) {
        this.#run(request, null);
        return 'ran';
      }
      incoming = { request, filledBytes: 0, payload: this.#pool.take(writePayloadBytes(request)) };
      this.#incoming = incoming;
    }
    const filledBytes = this.#receive(incoming.payload, incoming.filledBytes);
    if (filledBytes === null) return this.#clientLeft();
    incoming.filledBytes = filledBytes;
    if (filledBytes < incoming.payload.length) return 'wait';
    this.#incoming = null;
    this.#run(incoming.request, incoming.payload);
    return 'ran';
  }

  /**
   * Fills `target` from `filledBytes` with what has arrived (kept bytes first); returns how
   * far it is filled, or null at the end of the stream.
   */
  #receive(target: Uint8Array, filledBytes: number): number | null {
    let at = filledBytes;
    const kept = this.#kept;
    if (kept !== null && at < target.length) {
      const takeBytes = Math.min(kept.length, target.length - at);
      target.set(kept.subarray(0, takeBytes), at);
      at += takeBytes;
      this.#kept = takeBytes === kept.length ? null : kept.subarray(takeBytes);
    }
    while (at < target.length) {
      const gotBytes = receiveNow(this.fd, target, at, target.length - at);
      if (gotBytes < 0) break;
      if (gotBytes === 0) return null;
      at += gotBytes;
    }
    return at;
  }

  /**
   * Checks a request whose bytes are all in, runs it, and sends its reply at once (what the
   * socket cannot take now waits for POLLOUT): the client's next requests may wait on it.
   */
  #run(request: Request, payload: Uint8Array | null): void {
    const negotiated = this.#negotiated;
    const refusal = checkRequest(request, negotiated);
    if (refusal !== null) {
      if (payload !== null) this.#pool.give(payload);
      this.#queue(statusReply(request, refusal, negotiated.structuredReplies));
    } else {
      this.#queue(runIoProgramBlocking(this.#client, negotiated.served,
        requestProgram(request, payload, negotiated, this.#pool)));
    }
    this.#sendOwed();
  }

  #queue(reply: Reply): void {
    const { frames, pooled } = reply;
    const last = frames.length - 1;
    for (let index = 0; index <= last; index += 1) {
      const frame = frames[index] as Uint8Array;
      this.#frames.push(frame);
      this.#owners.push(index === last ? pooled : null);
      this.#unsentBytes += frame.length;
    }
  }

  /** Sends owed frames until the socket is full or nothing is owed. */
  #sendOwed(): void {
    while (this.#unsentBytes > 0 && !this.#finished) {
      const pieces = this.#frames.slice(this.#head, this.#head + SEND_PIECES_MAX);
      let sentBytes: number;
      try {
        sentBytes = sendNow(this.fd, pieces, this.#headSentBytes);
      } catch {
        // The client left: nothing more can be sent.
        this.#finished = true;
        return;
      }
      if (sentBytes <= 0) return;
      this.#advance(sentBytes);
    }
    if (this.#unsentBytes === 0 && this.#draining) this.#startLingering();
  }

  /** Counts `sentBytes` as sent, giving back each reply's pooled data after its last frame. */
  #advance(sentBytes: number): void {
    let leftBytes = sentBytes;
    this.#unsentBytes -= sentBytes;
    while (leftBytes > 0) {
      const frame = this.#frames[this.#head] as Uint8Array;
      const frameLeftBytes = frame.length - this.#headSentBytes;
      if (leftBytes < frameLeftBytes) {
        this.#headSentBytes += leftBytes;
        return;
      }
      leftBytes -= frameLeftBytes;
      const owner = this.#owners[this.#head];
      if (owner !== null && owner !== undefined) this.#pool.give(owner);
      this.#head += 1;
      this.#headSentBytes = 0;
    }
    if (this.#head === this.#frames.length) {
      this.#frames = [];
      this.#owners = [];
      this.#head = 0;
    } else if (this.#head >= SEND_PIECES_MAX * 16) {
      // Replies keep coming while earlier ones leave: drop the sent prefix now and then.
      this.#frames.splice(0, this.#head);
      this.#owners.splice(0, this.#head);
      this.#head = 0;
    }
  }

  #startDraining(): void {
    if (this.#draining) return;
    this.#draining = true;
    this.#drainDeadlineMs = performance.now() + SERVER_UNSENT_REPLIES_MS;
    if (this.#unsentBytes === 0) this.#startLingering();
  }

  /** Everything owed has left: the sending side ends, and the client has a moment to close. */
  #startLingering(): void {
    if (this.#lingering || this.#finished) return;
    this.#lingering = true;
    this.#lingerDeadlineMs = performance.now() + SERVER_CLOSE_LINGER_MS;
    shutdownWrite(this.fd);
  }

  /**
   * While lingering: reads and drops what the client still sends, until its end. A client
   * that keeps sending stays until the linger deadline; closing with its bytes unread would
   * answer it with a reset.
   */
  #discardUntilEnd(): void {
    this.#discarded ??= Buffer.allocUnsafe(DISCARD_BYTES);
    const scratch = this.#discarded;
    try {
      for (let reads = 0; reads < DISCARD_READS_PER_TURN_MAX; reads += 1) {
        const gotBytes = receiveNow(this.fd, scratch, 0, scratch.length);
        if (gotBytes < 0) return;
        if (gotBytes === 0) {
          this.#finished = true;
          return;
        }
      }
    } catch {
      // A reset: the client is gone either way.
      this.#finished = true;
    }
  }

  #clientLeft(): 'ran' {
    this.#finished = true;
    return 'ran';
  }

  /** A violation or a broken socket: logged (violations only) and closed at once. */
  #fail(error: unknown): void {
    if (error instanceof TransmissionViolation) {
      this.#log(`closing a connection: ${error.message}`);
    } else if (!isSocketError(error)) {
      this.#log(`closing a connection after an unexpected error: ${String(error)}`);
    }
    this.#finished = true;
  }
}

/** A failed recv on a socket the client broke (a reset): not worth a log line. */
function isSocketError(error: unknown): boolean {
  return typeof error === 'object' && error !== null && 'syscall' in error;
}
