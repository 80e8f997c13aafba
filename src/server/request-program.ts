// Owns what one checked request does and what it answers: the command run as an I/O program
// (export-io.ts, block-status.ts) and its reply as frames to send in order. Both transmission
// drivers run this program, the event loop's with `runIoProgram` and the polling threads'
// with `runIoProgramBlocking` (io-program.ts), and send the frames their own way, so a command
// means the same thing on either driver.
//
// A READ's data comes from the connection's pool and travels in the reply (`pooled`): the
// sender gives it back once the last frame has left. A WRITE's payload, also pooled, goes
// back as soon as the write is done.

import {
  NBD_CMD_FLAG_DF, NBD_CMD_FLAG_FAST_ZERO, NBD_CMD_FLAG_FUA, NBD_CMD_FLAG_NO_HOLE,
  NBD_CMD_FLAG_REQ_ONE, NBD_CMD_FLUSH, NBD_CMD_READ, NBD_CMD_TRIM, NBD_CMD_WRITE,
  NBD_CMD_WRITE_ZEROES,
} from '../nbd/protocol.js';
import { blockStatusProgram } from './block-status.js';
import type { BufferPool } from './buffer-pool.js';
import type { NbdFailure } from './errno-map.js';
import { flushProgram, readProgram, trimProgram, writeProgram, zeroProgram } from './export-io.js';
import { BASE_ALLOCATION_CONTEXT_ID, type Negotiated } from './handshake.js';
import type { IoProgram } from './io-program.js';
import { readPieces } from './read-reply.js';
import { invalid, type Request } from './request-rules.js';
import {
  blockStatusChunk, errorChunk, noneChunk, offsetDataHeader, offsetHoleChunk, simpleReply,
} from './wire.js';

/** A reply: frames to send back to back; `pooled` returns to the pool once all have left. */
export interface Reply {
  readonly frames: readonly Uint8Array[];
  readonly pooled: Uint8Array | null;
}

const NO_DATA = new Uint8Array(0);

/**
 * Runs a request that passed `checkRequest` and answers it. `payload` is a WRITE's pooled
 * payload (given back here), else null. Never throws: a failure that is not a device's (a
 * bug) is answered with EINVAL rather than left unanswered.
 */
export function* requestProgram(
  request: Request, payload: Uint8Array | null, negotiated: Negotiated, pool: BufferPool,
): IoProgram<Reply> {
  const { served, structuredReplies } = negotiated;
  const offsetBytes = Number(request.offsetBytes);
  const fua = (request.flags & NBD_CMD_FLAG_FUA) !== 0;
  let data: Uint8Array | null = null;
  try {
    switch (request.type) {
      case NBD_CMD_READ: {
        data = pool.take(request.lengthBytes);
        const failure = yield* readProgram(served, offsetBytes, data);
        if (failure !== null) return statusReply(request, failure, structuredReplies);
        const reply = readReply(request, data, structuredReplies);
        data = null;
        return reply;
      }
      case NBD_CMD_WRITE: {
        data = payload;
        const failure = yield* writeProgram(served, offsetBytes, payload ?? NO_DATA, fua);
        return statusReply(request, failure, structuredReplies);
      }
      case NBD_CMD_FLUSH:
        return statusReply(request, yield* flushProgram(), structuredReplies);
      case NBD_CMD_TRIM:
        return statusReply(request,
          yield* trimProgram(served, offsetBytes, request.lengthBytes, fua), structuredReplies);
      case NBD_CMD_WRITE_ZEROES:
        return statusReply(request, yield* zeroProgram(served, offsetBytes, request.lengthBytes, {
          fua,
          noHole: (request.flags & NBD_CMD_FLAG_NO_HOLE) !== 0,
          fastZero: (request.flags & NBD_CMD_FLAG_FAST_ZERO) !== 0,
        }), structuredReplies);
      default: {
        const answer = yield* blockStatusProgram(served.device, offsetBytes, request.lengthBytes,
          (request.flags & NBD_CMD_FLAG_REQ_ONE) !== 0);
        if (answer.kind === 'failure') return statusReply(request, answer.failure, structuredReplies);
        return {
          frames: [blockStatusChunk(request.cookie, BASE_ALLOCATION_CONTEXT_ID, answer.descriptors)],
          pooled: null,
        };
      }
    }
  } catch (error) {
    return statusReply(request, invalid(String(error)), structuredReplies);
  } finally {
    if (data !== null) pool.give(data);
  }
}

/** Success or an error without data: an ERROR chunk (with text) under structured replies. */
export function statusReply(
  request: Request, failure: NbdFailure | null, structuredReplies: boolean,
): Reply {
  let frame: Uint8Array;
  if (failure === null) frame = simpleReply(0, request.cookie);
  else if (structuredReplies) frame = errorChunk(request.cookie, failure.errorNumber, failure.message);
  else frame = simpleReply(failure.errorNumber, request.cookie);
  return { frames: [frame], pooled: null };
}

/**
 * A READ's reply: the data after a simple reply; under structured replies, OFFSET_DATA
 * chunks with their data and OFFSET_HOLE chunks for long runs of zeros (read-reply.ts), the
 * last one final, or one NONE chunk for no data.
 */
function readReply(request: Request, data: Uint8Array, structuredReplies: boolean): Reply {
  const pooled = data.length > 0 ? data : null;
  if (!structuredReplies) {
    const header = simpleReply(0, request.cookie);
    return { frames: data.length > 0 ? [header, data] : [header], pooled };
  }
  if (data.length === 0) return { frames: [noneChunk(request.cookie)], pooled };
  const pieces = readPieces(data, (request.flags & NBD_CMD_FLAG_DF) === 0);
  const startBytes = Number(request.offsetBytes);
  const frames: Uint8Array[] = [];
  pieces.forEach((piece, index) => {
    const final = index === pieces.length - 1;
    const offsetBytes = startBytes + piece.offsetBytes;
    if (piece.hole) {
      frames.push(offsetHoleChunk(request.cookie, offsetBytes, piece.lengthBytes, final));
      return;
    }
    frames.push(offsetDataHeader(request.cookie, offsetBytes, piece.lengthBytes, final));
    frames.push(piece.lengthBytes === data.length ? data :
      data.subarray(piece.offsetBytes, piece.offsetBytes + piece.lengthBytes));
  });
  return { frames, pooled };
}
