// Owns one NBD connection in the transmission phase: it numbers commands with unique cookies,
// writes them pipelined (header and WRITE payload corked into one writev), matches replies in
// any order through `ReplyParser` (the sink of the socket's `SocketInput`, so large READ
// payloads are read straight into the request's memory), and enforces the per-request timeout.
// A connection dies exactly once, for one reason (EOF, socket error, protocol violation,
// timeout, abort): every command in flight then completes with that `NbdError`, nothing hangs,
// and `onDead` tells the owner. A command's `done` runs exactly once, always from a socket or
// timer event. The first WRITE on a Unix socket asks for a send buffer that takes a whole
// request (`CLIENT_SEND_BUFFER_BYTES`); a connection that only reads never loads the call.

import assert from '../assert.js';
import type { Socket } from 'node:net';
import { MIB } from '../constants.js';
import { NbdError } from '../errors.js';
import { ReadTarget } from './read-target.js';
import { setSocketSendBufferBytes } from '../sys/socket-options.js';
import type { StatusTarget } from './status-target.js';
import {
  ReplyParser, type NbdReplyCounters, type ReplySink, type ReplyState, type ServerError,
} from './reply-parser.js';
import type { NbdExportInfo } from './handshake.js';
import type { SocketInput } from './socket-input.js';
import {
  NBD_CMD_BLOCK_STATUS, NBD_CMD_DISC, NBD_CMD_READ, NBD_CMD_WRITE, NBD_COOKIE_MAX, NBD_ESHUTDOWN,
  NBD_REQUEST_MAGIC, REQUEST_HEADER_BYTES, payloadBytesOf, type NbdCommandType,
} from './protocol.js';

/** How a command ended: null on success. */
export type CommandOutcome =
  | null
  | { readonly kind: 'server'; readonly error: ServerError }
  | { readonly kind: 'connection'; readonly error: NbdError };

/** One NBD command to send. */
export interface NbdCommand {
  /** The command type. */
  readonly type: NbdCommandType;
  /** NBD_CMD_FLAG_* bits. */
  readonly commandFlags: number;
  /** Absolute byte offset on the export. */
  readonly offsetBytes: number;
  /** Length in bytes (0 for FLUSH). */
  readonly lengthBytes: number;
  /** READ destination or WRITE source; empty for other commands. */
  readonly segments: readonly Uint8Array[];
  /** Where a BLOCK_STATUS reply's descriptors go; only (and always) for BLOCK_STATUS. */
  readonly statusTarget?: StatusTarget;
  /** Called exactly once when the command ends. */
  readonly done: (outcome: CommandOutcome) => void;
}

interface InFlight extends ReplyState {
  readonly command: NbdCommand;
  readonly startedMs: number;
}

/** Settings of a connection. */
export interface ConnectionSettings {
  /** The URI, for errors. */
  readonly uri: string;
  /** A command unanswered this long kills the connection; 0 disables the timeout. */
  readonly requestTimeoutMs: number;
  /** Called once when the connection dies for any reason other than `disconnect()`. */
  readonly onDead: (connection: NbdConnection, error: NbdError) => void;
  /** Reply counts, shared by every connection of a device. */
  readonly counters: NbdReplyCounters;
}

/**
 * The kernel send buffer a Unix-socket connection asks for before its first WRITE (2 MiB; the
 * kernel doubles it, capped by `net.core.wmem_max`). The default (`wmem_default`, 208 KiB)
 * takes a 1 MiB WRITE in five or more pieces, each after a wake-up when the server has read
 * the last; a 1 GiB write from a cached file woke the event loop about 3,300-7,500 times
 * instead of 1,000-1,900, and ran 10-40% longer (docs/performance.md, "NBD copies"). TCP keeps
 * the kernel's autotuning.
 */
const CLIENT_SEND_BUFFER_BYTES = 2 * MIB;

/** How long `disconnect()` waits for the server to close before destroying the socket. */
const DISCONNECT_WAIT_MS = 2000;

/** One socket in the transmission phase. */
export class NbdConnection implements ReplySink {
  /** What the handshake negotiated. */
  readonly info: NbdExportInfo;
  readonly #socket: Socket;
  readonly #settings: ConnectionSettings;
  readonly #parser: ReplyParser;
  readonly #input: SocketInput;
  readonly #inflight = new Map<number, InFlight>();
  #nextCookie = 1;
  #inflightPayloadBytes = 0;
  #deadError: NbdError | null = null;
  #disconnecting = false;
  #shuttingDown = false;
  #timer: NodeJS.Timeout | null = null;
  #sendBufferSized = false;

  /**
   * Takes over a socket whose handshake is done: `input` is the socket's `onread` router and
   * `leftover` the bytes the handshake reader received but did not consume.
   */
  constructor(
    socket: Socket,
    input: SocketInput,
    info: NbdExportInfo,
    leftover: Buffer,
    settings: ConnectionSettings,
  ) {
    this.#socket = socket;
    this.#input = input;
    this.info = info;
    this.#settings = settings;
    this.#parser = new ReplyParser(this, info.structuredReplies, settings.counters,
      info.baseAllocationContextId);
    input.attach(this.#parser);
    socket.on('error', (error: Error) => this.#die('DMIO_ERR_NBD_DISCONNECTED',
      `connection error: ${error.message}`, error));
    socket.on('close', () => this.#die('DMIO_ERR_NBD_DISCONNECTED', 'server closed the connection'));
    if (settings.requestTimeoutMs > 0) {
      const tickMs = Math.max(10, Math.min(1000, Math.floor(settings.requestTimeoutMs / 4)));
      this.#timer = setInterval(() => this.#checkTimeout(), tickMs);
      this.#timer.unref();
    }
    if (leftover.length > 0) this.#parser.feed(leftover);
    // The handshake reader may have paused a flooding server; replies are bounded by what was
    // asked for, so reading resumes for good.
    if (socket.isPaused()) socket.resume();
  }

  /** Bytes read straight into request memory, without a copy (for tests and diagnostics). */
  get directReadBytes(): number {
    return this.#input.directBytes;
  }

  /** True once the connection died or began disconnecting: it takes no more commands. */
  get usable(): boolean {
    return this.#deadError === null && !this.#disconnecting && !this.#shuttingDown;
  }

  /** Commands in flight. */
  get inflightCount(): number {
    return this.#inflight.size;
  }

  /** Bytes written to the socket that the kernel has not taken yet (a WRITE still draining). */
  get queuedWriteBytes(): number {
    return this.#socket.writableLength;
  }

  /** Payload bytes in flight. */
  get inflightBytes(): number {
    return this.#inflightPayloadBytes;
  }

  /** Sends one command; its `done` runs later, exactly once. */
  send(command: NbdCommand): void {
    assert.ok(this.usable, 'send on an unusable connection');
    assert.ok(this.#nextCookie < NBD_COOKIE_MAX);
    const cookie = this.#nextCookie;
    this.#nextCookie += 1;
    const readTarget = command.type === NBD_CMD_READ ?
      new ReadTarget(command.segments, command.lengthBytes) : null;
    const statusTarget = command.statusTarget ?? null;
    assert.equal(statusTarget !== null, command.type === NBD_CMD_BLOCK_STATUS);
    assert.ok(statusTarget === null || this.info.baseAllocationContextId !== null,
      'BLOCK_STATUS needs base:allocation');
    this.#inflight.set(cookie, { command, type: command.type, offsetBytes: command.offsetBytes,
      readTarget, statusTarget, serverError: null, startedMs: performance.now() });
    this.#inflightPayloadBytes += payloadBytesOf(command.type, command.lengthBytes);
    const header = encodeRequest(command.type, command.commandFlags, cookie,
      command.offsetBytes, command.lengthBytes);
    if (command.type === NBD_CMD_WRITE && !this.#sendBufferSized) {
      this.#sendBufferSized = true;
      setSocketSendBufferBytes(this.#socket, CLIENT_SEND_BUFFER_BYTES);
    }
    this.#socket.cork();
    this.#socket.write(header);
    if (command.type === NBD_CMD_WRITE) {
      for (const segment of command.segments) if (segment.length > 0) this.#socket.write(segment);
    }
    this.#socket.uncork();
  }

  /** ReplySink: the in-flight state of `cookie`. */
  find(cookie: number): ReplyState | undefined {
    return this.#inflight.get(cookie);
  }

  /** ReplySink: a command's final reply arrived. */
  finish(cookie: number, error: ServerError | null): void {
    const entry = this.#inflight.get(cookie);
    assert.ok(entry !== undefined);
    // ESHUTDOWN: the server is going away; send nothing more, and soft-disconnect once the
    // commands in flight are answered so the server can exit.
    if (error !== null && error.errorNumber === NBD_ESHUTDOWN) this.#shuttingDown = true;
    this.#complete(cookie, entry, error === null ? null : { kind: 'server', error });
    if (this.#shuttingDown && this.#inflight.size === 0 && this.#deadError === null &&
      !this.#disconnecting) {
      this.#socket.end(encodeRequest(NBD_CMD_DISC, 0, 0, 0, 0));
    }
  }

  /** ReplySink: the reply stream broke the protocol. */
  violation(message: string): void {
    this.#die('DMIO_ERR_NBD_PROTOCOL', `protocol violation: ${message}`);
  }

  /** Kills the connection at once: every command in flight fails with `error`. */
  abort(error: NbdError): void {
    this.#dieWith(error);
  }

  /**
   * Soft disconnect: waits for the commands in flight, sends NBD_CMD_DISC and closes the socket
   * as soon as the kernel has taken the DISC. Nothing is left for the server to answer, so its
   * own close (which nbdkit makes only after stopping the connection's worker threads: 7-70 ms
   * per device measured here) is not waited for. Resolves once the socket closed.
   */
  async disconnect(): Promise<void> {
    if (this.#deadError === null && !this.#disconnecting) {
      this.#disconnecting = true;
      await this.#drained();
      if (this.#deadError === null) await this.#sendDisconnect();
      this.#socket.destroy();
    }
    await this.#closed();
  }

  /**
   * Ends the socket with NBD_CMD_DISC; settles once it was written, the socket closed, or
   * DISCONNECT_WAIT_MS passed (a server that stopped reading leaves queued bytes, and with them
   * the DISC, unsent for ever).
   */
  #sendDisconnect(): Promise<void> {
    return new Promise((resolve) => {
      const settle = (): void => {
        clearTimeout(timer);
        this.#socket.off('close', settle);
        resolve();
      };
      const timer = setTimeout(settle, DISCONNECT_WAIT_MS);
      this.#socket.once('close', settle);
      this.#socket.end(encodeRequest(NBD_CMD_DISC, 0, 0, 0, 0), settle);
    });
  }

  #drained(): Promise<void> {
    if (this.#inflight.size === 0 || this.#deadError !== null) return Promise.resolve();
    return new Promise((resolve) => {
      const poll = (): void => {
        if (this.#inflight.size === 0 || this.#deadError !== null) resolve();
        else setTimeout(poll, 5);
      };
      poll();
    });
  }

  #closed(): Promise<void> {
    if (this.#socket.closed) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(() => this.#socket.destroy(), DISCONNECT_WAIT_MS);
      this.#socket.once('close', () => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  #complete(cookie: number, entry: InFlight, outcome: CommandOutcome): void {
    this.#inflight.delete(cookie);
    const command = entry.command;
    this.#inflightPayloadBytes -= payloadBytesOf(command.type, command.lengthBytes);
    command.done(outcome);
  }

  #checkTimeout(): void {
    const oldest = this.#inflight.values().next();
    if (oldest.done === true) return;
    const waitedMs = performance.now() - oldest.value.startedMs;
    if (waitedMs >= this.#settings.requestTimeoutMs) {
      this.#die('DMIO_ERR_NBD_TIMEOUT',
        `no reply within ${this.#settings.requestTimeoutMs} ms (${this.#inflight.size} in flight)`);
    }
  }

  #die(
    code: 'DMIO_ERR_NBD_DISCONNECTED' | 'DMIO_ERR_NBD_PROTOCOL' | 'DMIO_ERR_NBD_TIMEOUT',
    message: string,
    cause?: unknown,
  ): void {
    if (this.#deadError !== null) return;
    this.#dieWith(new NbdError(code, this.#settings.uri, message,
      cause === undefined ? {} : { cause }));
  }

  #dieWith(error: NbdError): void {
    if (this.#deadError !== null) return;
    this.#deadError = error;
    if (this.#timer !== null) clearInterval(this.#timer);
    this.#socket.destroy();
    const wasDisconnecting = this.#disconnecting;
    for (const [cookie, entry] of [...this.#inflight]) {
      this.#complete(cookie, entry, { kind: 'connection', error });
    }
    if (!wasDisconnecting) this.#settings.onDead(this, error);
  }
}

/** Encodes a 28-byte request header. Offsets are safe integers, so they split exactly. */
export function encodeRequest(
  type: number,
  commandFlags: number,
  cookie: number,
  offsetBytes: number,
  lengthBytes: number,
): Buffer {
  const header = Buffer.allocUnsafe(REQUEST_HEADER_BYTES);
  header.writeUInt32BE(NBD_REQUEST_MAGIC, 0);
  header.writeUInt16BE(commandFlags, 4);
  header.writeUInt16BE(type, 6);
  header.writeUInt32BE(Math.floor(cookie / 0x100000000), 8);
  header.writeUInt32BE(cookie % 0x100000000, 12);
  header.writeUInt32BE(Math.floor(offsetBytes / 0x100000000), 16);
  header.writeUInt32BE(offsetBytes % 0x100000000, 20);
  header.writeUInt32BE(lengthBytes, 24);
  return header;
}
