// Owns decoding of the transmission-phase reply stream: simple replies (16-byte header plus
// READ data) and structured reply chunks (20-byte header plus payload), interleaved in any
// order. It is a push parser driven by socket reads (it is the `InputSink` of the socket's
// `SocketInput`): headers and small payloads gather in fixed buffers, READ data is copied from
// the staging buffer into the request's segments, or, once at least `DIRECT_READ_BYTES_MIN` of
// it remains, read by the socket straight into them (`directView`), BLOCK_STATUS descriptors
// stream one at a time into the request's `StatusTarget`, and an unknown error chunk is
// skipped unread, so memory stays bounded whatever the server sends. Any reply that breaks
// the protocol calls `violation` once and the parser stops; the owner then tears the connection
// down.

import assert from '../assert.js';
import type { ReadTarget } from './read-target.js';
import type { StatusTarget } from './status-target.js';
import type { InputSink } from './socket-input.js';
import {
  BLOCK_STATUS_CHUNK_BYTES_MAX, ERROR_CHUNK_BYTES_MAX, NBD_CMD_READ, NBD_REPLY_FLAG_DONE,
  NBD_REPLY_TYPE_BLOCK_STATUS, NBD_REPLY_TYPE_ERROR, NBD_REPLY_TYPE_ERROR_BIT,
  NBD_REPLY_TYPE_ERROR_OFFSET, NBD_REPLY_TYPE_NONE, NBD_REPLY_TYPE_OFFSET_DATA,
  NBD_REPLY_TYPE_OFFSET_HOLE, NBD_SIMPLE_REPLY_MAGIC, NBD_STRUCTURED_REPLY_MAGIC,
  SIMPLE_REPLY_HEADER_BYTES, STRUCTURED_REPLY_HEADER_BYTES, UNKNOWN_CHUNK_BYTES_MAX,
  type NbdCommandType,
} from './protocol.js';
import { KIB } from '../constants.js';

/** An error the server reported for one request. */
export interface ServerError {
  /** The NBD error number (errno value). */
  readonly errorNumber: number;
  /** The server's message, possibly empty. */
  readonly message: string;
}

/** What the parser needs to know about a request in flight, and what it records on it. */
export interface ReplyState {
  /** The command sent. */
  readonly type: NbdCommandType;
  /** Absolute byte offset of the request on the export. */
  readonly offsetBytes: number;
  /** Where READ data goes; null for other commands. */
  readonly readTarget: ReadTarget | null;
  /** Where BLOCK_STATUS descriptors go; null for other commands. */
  readonly statusTarget: StatusTarget | null;
  /** The first error chunk seen for this request (structured replies). */
  serverError: ServerError | null;
}

/** Where parsed replies go. */
export interface ReplySink {
  /** The request with this cookie, if it is in flight. */
  find(cookie: number): ReplyState | undefined;
  /** The request's last reply arrived; `error` is null on success. */
  finish(cookie: number, error: ServerError | null): void;
  /** The stream broke the protocol; called once, after which the parser ignores input. */
  violation(message: string): void;
}

/** Counts of replies by kind, for diagnostics and tests (one object may be shared). */
export interface NbdReplyCounters {
  /** Simple replies (16-byte header). */
  simpleReplies: number;
  /** OFFSET_DATA chunks. */
  dataChunks: number;
  /** OFFSET_HOLE chunks. */
  holeChunks: number;
  /** ERROR, ERROR_OFFSET and unknown error chunks. */
  errorChunks: number;
  /** NONE chunks. */
  noneChunks: number;
  /** BLOCK_STATUS chunks. */
  statusChunks: number;
}

/**
 * The least READ data (16 KiB) worth a socket read of its own straight into request memory.
 * Below it the bytes go through the staging buffer: one copy of a few KiB costs less than a
 * separate read, and that read can also take the next replies' headers.
 */
export const DIRECT_READ_BYTES_MIN = 16 * KIB;

/** A zeroed counters object. */
export function newReplyCounters(): NbdReplyCounters {
  return { simpleReplies: 0, dataChunks: 0, holeChunks: 0, errorChunks: 0, noneChunks: 0,
    statusChunks: 0 };
}

type Phase =
  | { kind: 'header' }
  | { kind: 'simple-data'; cookie: number; target: ReadTarget; positionBytes: number }
  | { kind: 'chunk-small'; lengthBytes: number }
  | { kind: 'chunk-data'; target: ReadTarget | null; positionBytes: number; remainingBytes: number }
  | { kind: 'chunk-skip'; remainingBytes: number }
  | { kind: 'chunk-status'; target: StatusTarget | null; remainingBytes: number }
  | { kind: 'broken' };

/** A structured chunk header, kept while its payload streams in. */
interface ChunkHeader {
  flags: number;
  chunkType: number;
  cookie: number;
  lengthBytes: number;
}

/** Decodes replies for one connection. */
export class ReplyParser implements InputSink {
  readonly #sink: ReplySink;
  readonly #structuredReplies: boolean;
  readonly #metaContextId: number | null;
  readonly #header = Buffer.alloc(STRUCTURED_REPLY_HEADER_BYTES);
  #headerBytes = 0;
  readonly #small = Buffer.alloc(ERROR_CHUNK_BYTES_MAX);
  #smallBytes = 0;
  #chunk: ChunkHeader = { flags: 0, chunkType: 0, cookie: 0, lengthBytes: 0 };
  #phase: Phase = { kind: 'header' };
  readonly #counters: NbdReplyCounters;

  /**
   * `metaContextId` is the id the server gave `base:allocation` on this connection, or null
   * when none was negotiated (a BLOCK_STATUS chunk is then a violation).
   */
  constructor(
    sink: ReplySink,
    structuredReplies: boolean,
    counters: NbdReplyCounters,
    metaContextId: number | null = null,
  ) {
    this.#sink = sink;
    this.#structuredReplies = structuredReplies;
    this.#counters = counters;
    this.#metaContextId = metaContextId;
  }

  /** True when no reply is partly parsed (used to tell a clean EOF from a torn one). */
  get idle(): boolean {
    return this.#phase.kind === 'header' && this.#headerBytes === 0;
  }

  /** InputSink: consumes bytes the socket read into staging (or a handshake leftover). */
  feed(data: Buffer): void {
    let position = 0;
    while (position < data.length) {
      const phase = this.#phase;
      switch (phase.kind) {
        case 'header':
          position = this.#feedHeader(data, position);
          break;
        case 'simple-data':
          position = this.#feedSimpleData(phase, data, position);
          break;
        case 'chunk-small':
          position = this.#feedChunkSmall(phase, data, position);
          break;
        case 'chunk-data':
          position = this.#feedChunkData(phase, data, position);
          break;
        case 'chunk-status':
          position = this.#feedChunkStatus(phase, data, position);
          break;
        case 'chunk-skip': {
          const stepBytes = Math.min(phase.remainingBytes, data.length - position);
          phase.remainingBytes -= stepBytes;
          position += stepBytes;
          if (phase.remainingBytes === 0) this.#endChunk();
          break;
        }
        case 'broken':
          return;
      }
    }
  }

  /**
   * InputSink: memory of the READ being received that the next socket read may fill, when
   * at least `DIRECT_READ_BYTES_MIN` contiguous bytes of it are still to come; else null.
   */
  directView(): Uint8Array | null {
    const phase = this.#phase;
    let target: ReadTarget;
    let remainingBytes: number;
    if (phase.kind === 'simple-data') {
      target = phase.target;
      remainingBytes = target.lengthBytes - phase.positionBytes;
    } else if (phase.kind === 'chunk-data' && phase.target !== null) {
      target = phase.target;
      remainingBytes = phase.remainingBytes;
    } else {
      return null;
    }
    if (remainingBytes < DIRECT_READ_BYTES_MIN) return null;
    const view = target.view(phase.positionBytes, remainingBytes);
    return view.length >= DIRECT_READ_BYTES_MIN ? view : null;
  }

  /** InputSink: the socket put `lengthBytes` of READ data in place through `directView`. */
  feedDirect(lengthBytes: number): void {
    const phase = this.#phase;
    assert.ok(lengthBytes > 0);
    if (phase.kind === 'simple-data') this.#advanceSimpleData(phase, lengthBytes);
    else if (phase.kind === 'chunk-data' && phase.target !== null) {
      this.#advanceChunkData(phase, lengthBytes);
    } else assert.fail(`direct read in phase ${phase.kind}`);
  }

  #feedHeader(data: Buffer, position: number): number {
    const wantBytes = this.#headerBytes < 4 ? 4 : this.#headerLength();
    const stepBytes = Math.min(wantBytes - this.#headerBytes, data.length - position);
    data.copy(this.#header, this.#headerBytes, position, position + stepBytes);
    this.#headerBytes += stepBytes;
    if (this.#headerBytes === 4) {
      const magic = this.#header.readUInt32BE(0);
      if (magic === NBD_STRUCTURED_REPLY_MAGIC && !this.#structuredReplies) {
        this.#fail('structured reply without STRUCTURED_REPLY negotiated');
      } else if (magic !== NBD_SIMPLE_REPLY_MAGIC && magic !== NBD_STRUCTURED_REPLY_MAGIC) {
        this.#fail(`bad reply magic 0x${magic.toString(16)}`);
      }
    } else if (this.#headerBytes === this.#headerLength()) {
      this.#headerBytes = 0;
      if (this.#header.readUInt32BE(0) === NBD_SIMPLE_REPLY_MAGIC) this.#startSimple();
      else this.#startChunk();
    }
    return position + stepBytes;
  }

  #headerLength(): number {
    return this.#header.readUInt32BE(0) === NBD_SIMPLE_REPLY_MAGIC ?
      SIMPLE_REPLY_HEADER_BYTES : STRUCTURED_REPLY_HEADER_BYTES;
  }

  #readCookie(offset: number): number {
    const high = this.#header.readUInt32BE(offset);
    const low = this.#header.readUInt32BE(offset + 4);
    // Cookies above 2^53 were never issued; they map to a number `find` will not know.
    return high > 0x1fffff ? -1 : high * 0x100000000 + low;
  }

  #startSimple(): void {
    const errorNumber = this.#header.readUInt32BE(4);
    const cookie = this.#readCookie(8);
    const state = this.#sink.find(cookie);
    if (state === undefined) return this.#fail(`simple reply for unknown cookie ${cookie}`);
    this.#counters.simpleReplies += 1;
    if (errorNumber === 0 && state.statusTarget !== null) {
      return this.#fail('successful simple reply to BLOCK_STATUS carries no status');
    }
    if (errorNumber !== 0 || state.type !== NBD_CMD_READ) {
      return this.#sink.finish(cookie, errorNumber === 0 ? null : { errorNumber, message: '' });
    }
    if (this.#structuredReplies) return this.#fail('successful simple reply to READ under SR');
    assert.ok(state.readTarget !== null);
    const target = state.readTarget;
    if (target.cover(0, target.lengthBytes) !== 'ok') return this.#fail('READ covered twice');
    if (target.lengthBytes === 0) return this.#sink.finish(cookie, null);
    this.#phase = { kind: 'simple-data', cookie, target, positionBytes: 0 };
  }

  #feedSimpleData(
    phase: Extract<Phase, { kind: 'simple-data' }>,
    data: Buffer,
    position: number,
  ): number {
    const remainingBytes = phase.target.lengthBytes - phase.positionBytes;
    const stepBytes = Math.min(remainingBytes, data.length - position);
    phase.target.copyIn(phase.positionBytes, data.subarray(position, position + stepBytes));
    this.#advanceSimpleData(phase, stepBytes);
    return position + stepBytes;
  }

  /** `stepBytes` more of a simple reply's data are in place. */
  #advanceSimpleData(
    phase: Extract<Phase, { kind: 'simple-data' }>,
    stepBytes: number,
  ): void {
    phase.positionBytes += stepBytes;
    assert.ok(phase.positionBytes <= phase.target.lengthBytes);
    if (phase.positionBytes === phase.target.lengthBytes) {
      this.#phase = { kind: 'header' };
      this.#sink.finish(phase.cookie, null);
    }
  }

  /** Validates a chunk header and decides how its payload is consumed. */
  #startChunk(): void {
    const chunk: ChunkHeader = {
      flags: this.#header.readUInt16BE(4),
      chunkType: this.#header.readUInt16BE(6),
      cookie: this.#readCookie(8),
      lengthBytes: this.#header.readUInt32BE(16),
    };
    this.#chunk = chunk;
    const state = this.#sink.find(chunk.cookie);
    if (state === undefined) return this.#fail(`reply chunk for unknown cookie ${chunk.cookie}`);
    const { chunkType, lengthBytes } = chunk;
    const target = state.readTarget;
    this.#count(chunkType);
    if (chunkType === NBD_REPLY_TYPE_NONE) {
      if (lengthBytes !== 0) return this.#fail(`NONE chunk with ${lengthBytes} bytes of payload`);
      if ((chunk.flags & NBD_REPLY_FLAG_DONE) === 0) return this.#fail('NONE chunk without DONE');
      return this.#endChunk();
    }
    if (chunkType === NBD_REPLY_TYPE_OFFSET_DATA || chunkType === NBD_REPLY_TYPE_OFFSET_HOLE) {
      if (target === null) return this.#fail(`data chunk for a non-READ request ${chunk.cookie}`);
      const limitBytes = chunkType === NBD_REPLY_TYPE_OFFSET_HOLE ? 12 : 8 + target.lengthBytes;
      const leastBytes = chunkType === NBD_REPLY_TYPE_OFFSET_HOLE ? 12 : 9;
      if (lengthBytes < leastBytes || lengthBytes > limitBytes) {
        return this.#fail(`chunk type ${chunkType} with impossible length ${lengthBytes}`);
      }
      return this.#startSmall(chunkType === NBD_REPLY_TYPE_OFFSET_HOLE ? 12 : 8);
    }
    if (chunkType === NBD_REPLY_TYPE_BLOCK_STATUS) {
      return this.#startStatusChunk(state, lengthBytes);
    }
    if (chunkType === NBD_REPLY_TYPE_ERROR || chunkType === NBD_REPLY_TYPE_ERROR_OFFSET) {
      if (lengthBytes < 6 || lengthBytes > ERROR_CHUNK_BYTES_MAX) {
        return this.#fail(`error chunk with impossible length ${lengthBytes}`);
      }
      return this.#startSmall(lengthBytes);
    }
    if ((chunkType & NBD_REPLY_TYPE_ERROR_BIT) !== 0 && lengthBytes <= UNKNOWN_CHUNK_BYTES_MAX) {
      // An unknown error type fails only its request; its payload is skipped unread.
      state.serverError ??= { errorNumber: 5, message: `unknown error chunk type ${chunkType}` };
      if (lengthBytes === 0) return this.#endChunk();
      this.#phase = { kind: 'chunk-skip', remainingBytes: lengthBytes };
      return undefined;
    }
    return this.#fail(`unknown reply chunk type ${chunkType} (${lengthBytes} bytes)`);
  }

  #count(chunkType: number): void {
    const counters = this.#counters;
    if (chunkType === NBD_REPLY_TYPE_NONE) counters.noneChunks += 1;
    else if (chunkType === NBD_REPLY_TYPE_OFFSET_DATA) counters.dataChunks += 1;
    else if (chunkType === NBD_REPLY_TYPE_OFFSET_HOLE) counters.holeChunks += 1;
    else if (chunkType === NBD_REPLY_TYPE_BLOCK_STATUS) counters.statusChunks += 1;
    else if ((chunkType & NBD_REPLY_TYPE_ERROR_BIT) !== 0) counters.errorChunks += 1;
  }

  #startSmall(lengthBytes: number): void {
    this.#smallBytes = 0;
    this.#phase = { kind: 'chunk-small', lengthBytes };
  }

  #feedChunkSmall(
    phase: Extract<Phase, { kind: 'chunk-small' }>,
    data: Buffer,
    position: number,
  ): number {
    const stepBytes = Math.min(phase.lengthBytes - this.#smallBytes, data.length - position);
    data.copy(this.#small, this.#smallBytes, position, position + stepBytes);
    this.#smallBytes += stepBytes;
    if (this.#smallBytes === phase.lengthBytes) this.#endSmall();
    return position + stepBytes;
  }

  /** A small payload (or the 8-byte prefix of OFFSET_DATA) is complete. */
  #endSmall(): void {
    const chunk = this.#chunk;
    const state = this.#sink.find(chunk.cookie);
    assert.ok(state !== undefined);
    if (chunk.chunkType === NBD_REPLY_TYPE_OFFSET_DATA) return this.#startData(state);
    if (chunk.chunkType === NBD_REPLY_TYPE_OFFSET_HOLE) return this.#applyHole(state);
    if (chunk.chunkType === NBD_REPLY_TYPE_BLOCK_STATUS) return this.#startDescriptors(state);
    const errorNumber = this.#small.readUInt32BE(0);
    const messageBytes = this.#small.readUInt16BE(4);
    const tailBytes = chunk.chunkType === NBD_REPLY_TYPE_ERROR_OFFSET ? 8 : 0;
    if (6 + messageBytes + tailBytes !== chunk.lengthBytes) {
      return this.#fail(`error chunk length ${chunk.lengthBytes} disagrees with its message`);
    }
    if (errorNumber === 0) return this.#fail('error chunk with error number 0');
    const message = this.#small.toString('utf8', 6, 6 + messageBytes);
    state.serverError ??= { errorNumber, message };
    return this.#endChunk();
  }

  #startData(state: ReplyState): void {
    const target = state.readTarget;
    assert.ok(target !== null);
    const relativeBytes = this.#relativeOffset(state);
    const dataBytes = this.#chunk.lengthBytes - 8;
    const covered = target.cover(relativeBytes, dataBytes);
    if (covered !== 'ok') return this.#fail(`OFFSET_DATA chunk: ${covered}`);
    // After an error chunk no data of this reply is trusted: skip it.
    this.#phase = { kind: 'chunk-data', target: state.serverError === null ? target : null,
      positionBytes: relativeBytes, remainingBytes: dataBytes };
  }

  #applyHole(state: ReplyState): void {
    const target = state.readTarget;
    assert.ok(target !== null);
    const relativeBytes = this.#relativeOffset(state);
    const holeBytes = this.#small.readUInt32BE(8);
    const covered = target.cover(relativeBytes, holeBytes);
    if (covered !== 'ok') return this.#fail(`OFFSET_HOLE chunk: ${covered}`);
    if (holeBytes === 0) return this.#fail('OFFSET_HOLE chunk of 0 bytes');
    if (state.serverError === null) target.zeroFill(relativeBytes, holeBytes);
    return this.#endChunk();
  }

  /** The chunk's u64 offset relative to its request; -1 when it lies before the request. */
  #relativeOffset(state: ReplyState): number {
    const absolute = this.#small.readBigUInt64BE(0);
    const relative = absolute - BigInt(state.offsetBytes);
    return relative < 0n || relative > BigInt(Number.MAX_SAFE_INTEGER) ? -1 : Number(relative);
  }

  #feedChunkData(
    phase: Extract<Phase, { kind: 'chunk-data' }>,
    data: Buffer,
    position: number,
  ): number {
    const stepBytes = Math.min(phase.remainingBytes, data.length - position);
    if (phase.target !== null) {
      phase.target.copyIn(phase.positionBytes, data.subarray(position, position + stepBytes));
    }
    this.#advanceChunkData(phase, stepBytes);
    return position + stepBytes;
  }

  /** `stepBytes` more of an OFFSET_DATA chunk's data are in place (or skipped). */
  #advanceChunkData(
    phase: Extract<Phase, { kind: 'chunk-data' }>,
    stepBytes: number,
  ): void {
    phase.positionBytes += stepBytes;
    phase.remainingBytes -= stepBytes;
    assert.ok(phase.remainingBytes >= 0);
    if (phase.remainingBytes === 0) this.#endChunk();
  }

  /**
   * Validates a BLOCK_STATUS chunk header: it answers a BLOCK_STATUS, and its length is a
   * context id plus at least one whole 8-byte descriptor, within BLOCK_STATUS_CHUNK_BYTES_MAX.
   * The context id is read next.
   */
  #startStatusChunk(state: ReplyState, lengthBytes: number): void {
    if (state.statusTarget === null) {
      return this.#fail(`BLOCK_STATUS chunk for a request that is not BLOCK_STATUS`);
    }
    const wellFormed = lengthBytes >= 12 && (lengthBytes - 4) % 8 === 0;
    if (!wellFormed || lengthBytes > BLOCK_STATUS_CHUNK_BYTES_MAX) {
      return this.#fail(`BLOCK_STATUS chunk with impossible length ${lengthBytes}`);
    }
    return this.#startSmall(4);
  }

  /** The context id is in: descriptors follow, streamed into the request's target. */
  #startDescriptors(state: ReplyState): void {
    const target = state.statusTarget;
    assert.ok(target !== null);
    const contextId = this.#small.readUInt32BE(0);
    if (this.#metaContextId === null || contextId !== this.#metaContextId) {
      return this.#fail(`BLOCK_STATUS chunk for context ${contextId}, which was not selected`);
    }
    if (!target.beginChunk()) return this.#fail('a second BLOCK_STATUS chunk for one context');
    this.#smallBytes = 0;
    // After an error chunk the status is not trusted: the descriptors are checked, not kept.
    this.#phase = { kind: 'chunk-status', target: state.serverError === null ? target : null,
      remainingBytes: this.#chunk.lengthBytes - 4 };
  }

  #feedChunkStatus(
    phase: Extract<Phase, { kind: 'chunk-status' }>,
    data: Buffer,
    position: number,
  ): number {
    let at = position;
    while (at < data.length && phase.remainingBytes > 0) {
      const stepBytes = Math.min(8 - this.#smallBytes, data.length - at);
      data.copy(this.#small, this.#smallBytes, at, at + stepBytes);
      this.#smallBytes += stepBytes;
      phase.remainingBytes -= stepBytes;
      at += stepBytes;
      if (this.#smallBytes < 8) continue;
      this.#smallBytes = 0;
      const extentBytes = this.#small.readUInt32BE(0);
      if (extentBytes === 0) {
        this.#fail('BLOCK_STATUS descriptor of 0 bytes');
        return data.length;
      }
      phase.target?.add(extentBytes, this.#small.readUInt32BE(4));
    }
    if (phase.remainingBytes === 0) this.#endChunk();
    return at;
  }

  /** A chunk's payload is consumed; on DONE the request is finished. */
  #endChunk(): void {
    this.#phase = { kind: 'header' };
    const chunk = this.#chunk;
    if ((chunk.flags & NBD_REPLY_FLAG_DONE) === 0) return;
    const state = this.#sink.find(chunk.cookie);
    assert.ok(state !== undefined);
    if (state.serverError === null && state.readTarget !== null && !state.readTarget.complete) {
      return this.#fail(`READ reply for cookie ${chunk.cookie} ended before covering the request`);
    }
    if (state.serverError === null && state.statusTarget !== null &&
      !state.statusTarget.chunkSeen) {
      return this.#fail(`BLOCK_STATUS reply for cookie ${chunk.cookie} ended without a status`);
    }
    this.#sink.finish(chunk.cookie, state.serverError);
  }

  #fail(message: string): void {
    if (this.#phase.kind === 'broken') return;
    this.#phase = { kind: 'broken' };
    this.#sink.violation(message);
  }
}
