// Owns the server's side of the fixed-newstyle handshake on one connection: the greeting, the
// client flags, and the option loop up to GO or EXPORT_NAME (transmission), ABORT (a polite
// end) or a violation (a hard close, thrown as HandshakeViolation). Each option gets exactly
// one final reply after its payload was read whole, so the stream stays in step; options are
// counted and bounded in length before anything is allocated. STARTTLS hands the stream to the
// connection's TLS upgrade and resets what the plaintext options negotiated.

import {
  NBD_FLAG_FIXED_NEWSTYLE, NBD_FLAG_NO_ZEROES, NBD_INFO_BLOCK_SIZE, NBD_INFO_DESCRIPTION,
  NBD_INFO_NAME, NBD_META_BASE_ALLOCATION, NBD_OPT_ABORT, NBD_OPT_EXPORT_NAME, NBD_OPT_GO,
  NBD_OPT_INFO, NBD_OPT_LIST, NBD_OPT_LIST_META_CONTEXT, NBD_OPT_SET_META_CONTEXT,
  NBD_OPT_STARTTLS, NBD_OPT_STRUCTURED_REPLY, NBD_OPTS_MAGIC, NBD_REP_ACK, NBD_REP_ERR_INVALID,
  NBD_REP_ERR_POLICY, NBD_REP_ERR_SHUTDOWN, NBD_REP_ERR_TLS_REQD, NBD_REP_ERR_UNKNOWN,
  NBD_REP_ERR_UNSUP,
} from '../nbd/protocol.js';
import { SERVER_OPTION_BYTES_MAX, SERVER_OPTIONS_MAX } from './limits.js';
import type { ServedExport } from './nbd-export.js';
import { decodeString, parseInfoRequest, parseMetaRequest } from './option-payloads.js';
import type { SocketReader } from './socket-reader.js';
import {
  exportNameReply, greeting, infoBlockSize, infoExport, infoText, metaContextReply,
  optionError, optionReply, serverReply,
} from './wire.js';

/** The context id of `base:allocation` on every connection (nonzero: some clients treat 0 as unset). */
export const BASE_ALLOCATION_CONTEXT_ID = 1;

/** The client broke a rule that leaves no way to continue; the connection is closed hard. */
export class HandshakeViolation extends Error {
  constructor(reason: string) {
    super(reason);
    this.name = 'HandshakeViolation';
  }
}

/** What a successful handshake agreed on. */
export interface Negotiated {
  readonly served: ServedExport;
  readonly structuredReplies: boolean;
  /** `base:allocation` was selected for this export, so BLOCK_STATUS is allowed. */
  readonly baseAllocation: boolean;
  /** The client asked for block sizes: it must then send whole logical blocks. */
  readonly blockSizesAsked: boolean;
}

/** How the TLS mode constrains the handshake. */
export type TlsMode = 'off' | 'on' | 'require';

/** What the handshake needs from its connection and server. */
export interface HandshakeContext {
  /** The reader of the current stream (changes after STARTTLS). */
  reader(): SocketReader;
  /** Writes to the current stream. */
  send(data: Buffer): void;
  /** The export a client's name selects ("" falls back to the first export). */
  lookup(name: string): ServedExport | undefined;
  /** Every export, in order, for LIST. */
  exports(): readonly ServedExport[];
  /** True once the server is stopping: options then get ERR_SHUTDOWN. */
  shuttingDown(): boolean;
  readonly tlsMode: TlsMode;
  /** Runs the TLS handshake on the stream after the STARTTLS ACK; throws when it fails. */
  startTls(): Promise<void>;
}

/** Per-connection state that options change; STARTTLS clears all of it but `noZeroes`. */
interface OptionState {
  structuredReplies: boolean;
  meta: { exportName: string; baseAllocation: boolean } | null;
  tlsActive: boolean;
  optionsSeen: number;
}

/**
 * Runs the handshake. Resolves with what was negotiated, or `null` when the client ended it
 * (ABORT) or the server is shutting down; throws HandshakeViolation for a hard close and
 * StreamEndedError when the client goes away.
 */
export async function runHandshake(context: HandshakeContext): Promise<Negotiated | null> {
  context.send(greeting());
  const clientFlags = (await context.reader().read(4)).readUInt32BE(0);
  if ((clientFlags & ~(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES)) !== 0) {
    throw new HandshakeViolation(`unknown client flags 0x${clientFlags.toString(16)}`);
  }
  const fixedNewstyle = (clientFlags & NBD_FLAG_FIXED_NEWSTYLE) !== 0;
  const noZeroes = (clientFlags & NBD_FLAG_NO_ZEROES) !== 0;
  const state: OptionState = { structuredReplies: false, meta: null, tlsActive: false, optionsSeen: 0 };
  for (;;) {
    const { option, payload } = await readOption(context.reader(), state);
    if (!fixedNewstyle && option !== NBD_OPT_EXPORT_NAME) {
      throw new HandshakeViolation(`option ${option} from a client without fixed newstyle`);
    }
    if (context.shuttingDown() && option !== NBD_OPT_ABORT) {
      context.send(optionError(option, NBD_REP_ERR_SHUTDOWN, 'the server is shutting down'));
      return null;
    }
    if (context.tlsMode === 'require' && !state.tlsActive &&
        option !== NBD_OPT_ABORT && option !== NBD_OPT_STARTTLS) {
      if (option === NBD_OPT_EXPORT_NAME) throw new HandshakeViolation('EXPORT_NAME before TLS');
      context.send(optionError(option, NBD_REP_ERR_TLS_REQD, 'this server requires TLS'));
      continue;
    }
    const outcome = await answerOption(context, state, option, payload, noZeroes);
    if (outcome !== 'continue') return outcome;
  }
}

async function readOption(
  reader: SocketReader, state: OptionState,
): Promise<{ option: number; payload: Buffer }> {
  if (state.optionsSeen >= SERVER_OPTIONS_MAX) {
    throw new HandshakeViolation(`more than ${SERVER_OPTIONS_MAX} options`);
  }
  const header = await reader.read(16);
  if (header.readBigUInt64BE(0) !== NBD_OPTS_MAGIC) throw new HandshakeViolation('bad option magic');
  const option = header.readUInt32BE(8);
  const lengthBytes = header.readUInt32BE(12);
  if (lengthBytes > SERVER_OPTION_BYTES_MAX) {
    throw new HandshakeViolation(`option ${option} of ${lengthBytes} bytes, ` +
      `at most ${SERVER_OPTION_BYTES_MAX}`);
  }
  state.optionsSeen += 1;
  return { option, payload: await reader.read(lengthBytes) };
}

async function answerOption(
  context: HandshakeContext, state: OptionState, option: number, payload: Buffer,
  noZeroes: boolean,
): Promise<Negotiated | null | 'continue'> {
  switch (option) {
    case NBD_OPT_EXPORT_NAME:
      return exportName(context, state, payload, noZeroes);
    case NBD_OPT_ABORT:
      context.send(optionReply(option, NBD_REP_ACK));
      return null;
    case NBD_OPT_LIST:
      listExports(context, payload);
      return 'continue';
    case NBD_OPT_STARTTLS:
      await startTls(context, state, payload);
      return 'continue';
    case NBD_OPT_INFO:
    case NBD_OPT_GO:
      return infoOrGo(context, state, option, payload);
    case NBD_OPT_STRUCTURED_REPLY:
      if (payload.length !== 0 || state.structuredReplies) {
        context.send(optionError(option, NBD_REP_ERR_INVALID,
          payload.length !== 0 ? 'STRUCTURED_REPLY takes no data' : 'structured replies are already on'));
      } else {
        state.structuredReplies = true;
        context.send(optionReply(option, NBD_REP_ACK));
      }
      return 'continue';
    case NBD_OPT_LIST_META_CONTEXT:
    case NBD_OPT_SET_META_CONTEXT:
      metaContext(context, state, option, payload);
      return 'continue';
    default:
      context.send(optionError(option, NBD_REP_ERR_UNSUP, `option ${option} is not supported`));
      return 'continue';
  }
}

function exportName(
  context: HandshakeContext, state: OptionState, payload: Buffer, noZeroes: boolean,
): Negotiated {
  const name = decodeString(payload);
  if (name === null) throw new HandshakeViolation('EXPORT_NAME with an invalid name');
  const served = context.lookup(name);
  if (served === undefined) throw new HandshakeViolation(`EXPORT_NAME of unknown export '${name}'`);
  context.send(exportNameReply(served.sizeBytes, served.transmissionFlags(state.structuredReplies),
    noZeroes));
  return negotiated(state, served, false);
}

function listExports(context: HandshakeContext, payload: Buffer): void {
  if (payload.length !== 0) {
    context.send(optionError(NBD_OPT_LIST, NBD_REP_ERR_INVALID, 'LIST takes no data'));
    return;
  }
  for (const served of context.exports()) {
    context.send(serverReply(NBD_OPT_LIST, served.name, served.description));
  }
  context.send(optionReply(NBD_OPT_LIST, NBD_REP_ACK));
}

async function startTls(context: HandshakeContext, state: OptionState, payload: Buffer): Promise<void> {
  if (context.tlsMode === 'off') {
    context.send(optionError(NBD_OPT_STARTTLS, NBD_REP_ERR_POLICY, 'TLS is not configured'));
  } else if (payload.length !== 0 || state.tlsActive) {
    context.send(optionError(NBD_OPT_STARTTLS, NBD_REP_ERR_INVALID,
      state.tlsActive ? 'TLS is already on' : 'STARTTLS takes no data'));
  } else {
    context.send(optionReply(NBD_OPT_STARTTLS, NBD_REP_ACK));
    await context.startTls();
    state.tlsActive = true;
    state.structuredReplies = false;
    state.meta = null;
  }
}

function infoOrGo(
  context: HandshakeContext, state: OptionState, option: number, payload: Buffer,
): Negotiated | 'continue' {
  const request = parseInfoRequest(payload);
  if (request === null) {
    context.send(optionError(option, NBD_REP_ERR_INVALID, 'malformed INFO/GO request'));
    return 'continue';
  }
  const served = context.lookup(request.exportName);
  if (served === undefined) {
    context.send(optionError(option, NBD_REP_ERR_UNKNOWN,
      `export '${request.exportName}' not present`));
    return 'continue';
  }
  const asked = new Set(request.infoTypes);
  const blockSizesAsked = asked.has(NBD_INFO_BLOCK_SIZE);
  context.send(infoExport(option, served.sizeBytes, served.transmissionFlags(state.structuredReplies)));
  context.send(infoBlockSize(option, served.blockSizes(blockSizesAsked)));
  if (asked.has(NBD_INFO_NAME) || served.name !== request.exportName) {
    context.send(infoText(option, NBD_INFO_NAME, served.name));
  }
  if (asked.has(NBD_INFO_DESCRIPTION) && served.description !== '') {
    context.send(infoText(option, NBD_INFO_DESCRIPTION, served.description));
  }
  context.send(optionReply(option, NBD_REP_ACK));
  return option === NBD_OPT_GO ? negotiated(state, served, blockSizesAsked) : 'continue';
}

function metaContext(
  context: HandshakeContext, state: OptionState, option: number, payload: Buffer,
): void {
  const setting = option === NBD_OPT_SET_META_CONTEXT;
  if (setting) state.meta = null;
  if (setting && !state.structuredReplies) {
    context.send(optionError(option, NBD_REP_ERR_INVALID,
      'SET_META_CONTEXT needs structured replies first'));
    return;
  }
  const request = parseMetaRequest(payload);
  if (request === null) {
    context.send(optionError(option, NBD_REP_ERR_INVALID, 'malformed meta context request'));
    return;
  }
  const served = context.lookup(request.exportName);
  if (served === undefined) {
    context.send(optionError(option, NBD_REP_ERR_UNKNOWN,
      `export '${request.exportName}' not present`));
    return;
  }
  const matches = setting ?
    request.queries.some((query) => query === NBD_META_BASE_ALLOCATION) :
    request.queries.length === 0 ||
      request.queries.some((query) => query === 'base:' || query === NBD_META_BASE_ALLOCATION);
  if (matches) {
    context.send(metaContextReply(option, setting ? BASE_ALLOCATION_CONTEXT_ID : 0,
      NBD_META_BASE_ALLOCATION));
  }
  if (setting) state.meta = { exportName: served.name, baseAllocation: matches };
  context.send(optionReply(option, NBD_REP_ACK));
}

function negotiated(state: OptionState, served: ServedExport, blockSizesAsked: boolean): Negotiated {
  const meta = state.meta;
  return {
    served,
    structuredReplies: state.structuredReplies,
    baseAllocation: meta !== null && meta.baseAllocation && meta.exportName === served.name,
    blockSizesAsked,
  };
}
