// Owns a scriptable NBD server for tests, on a Unix socket in a temporary directory. By default
// it behaves like a small, correct RAM export (fixed newstyle, structured replies, GO with
// INFO_EXPORT); every step can be overridden to misbehave: refuse GO, corrupt the handshake,
// or answer requests with arbitrary bytes through `onRequest`. SET_META_CONTEXT is refused
// (ERR_UNSUP) unless `metaContext` says to select base:allocation or to select nothing. Wire
// helpers build simple replies and structured chunks (BLOCK_STATUS too) so a test states the
// bytes it sends, not how to encode them.

import { once } from 'node:events';
import net from 'node:net';
import path from 'node:path';
import { rmSync } from 'node:fs';
import { HandshakeReader } from '../../src/nbd/handshake-reader.js';
import {
  NBD_CMD_DISC, NBD_CMD_READ, NBD_CMD_WRITE, NBD_INFO_EXPORT, NBD_INIT_MAGIC,
  NBD_META_BASE_ALLOCATION, NBD_OPT_EXPORT_NAME, NBD_OPT_GO, NBD_OPT_SET_META_CONTEXT,
  NBD_OPT_STRUCTURED_REPLY, NBD_OPTS_MAGIC, NBD_REP_ACK, NBD_REP_ERR_UNSUP, NBD_REP_INFO,
  NBD_REP_META_CONTEXT, NBD_REP_MAGIC, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_ERROR,
  NBD_REPLY_TYPE_BLOCK_STATUS, NBD_REPLY_TYPE_OFFSET_DATA, NBD_REPLY_TYPE_OFFSET_HOLE,
  NBD_SIMPLE_REPLY_MAGIC,
  NBD_STRUCTURED_REPLY_MAGIC,
} from '../../src/nbd/protocol.js';
import { makeTempDir, unixUri } from './nbdkit.js';

/** One request as the fake server received it. */
export interface FakeRequest {
  readonly socket: net.Socket;
  readonly commandFlags: number;
  readonly type: number;
  /** The cookie's 8 raw bytes, to echo. */
  readonly cookie: Buffer;
  readonly offsetBytes: number;
  readonly lengthBytes: number;
  /** WRITE payload. */
  readonly payload: Buffer | null;
  /** The export's bytes. */
  readonly disk: Buffer;
  /** True when structured replies were negotiated. */
  readonly structured: boolean;
}

/** Behaviour of a fake server. */
export interface FakeServerOptions {
  readonly sizeBytes?: number;
  /** Transmission flags (default HAS_FLAGS|SEND_FLUSH|SEND_FUA|SEND_TRIM|SEND_WRITE_ZEROES). */
  readonly transmissionFlags?: number;
  /** Answer STRUCTURED_REPLY with ACK (default true). */
  readonly structured?: boolean;
  /**
   * SET_META_CONTEXT: a number selects base:allocation with that context id, 'none' answers
   * ACK selecting nothing, 'unsupported' (the default) answers ERR_UNSUP.
   */
  readonly metaContext?: number | 'none' | 'unsupported';
  /** Sees every option the client sends in the handshake, with its payload. */
  readonly handshakeOption?: (option: number, payload: Buffer) => void;
  /** Answer GO with ERR_UNSUP, forcing the EXPORT_NAME fallback. */
  readonly refuseGo?: boolean;
  /** Replaces the whole handshake: write whatever bytes the test wants. */
  readonly handshake?: (socket: net.Socket, reader: HandshakeReader) => Promise<void>;
  /** Answers one request; the default serves `disk` correctly. */
  readonly onRequest?: (request: FakeRequest) => void;
  /**
   * Called on NBD_CMD_DISC instead of the default, which ends the socket at once. With it the
   * server's sockets allow half-open connections: the client's EOF does not end the server's
   * side, so the handler decides when (or whether) that side closes.
   */
  readonly onDisconnect?: (socket: net.Socket) => void;
  /**
   * A broken server: answers the first WRITE from its header alone (`onRequest` sees a null
   * payload) and then stops reading the socket for good.
   */
  readonly replyBeforePayloadThenStall?: boolean;
}

/** A running fake server. */
export interface FakeServer {
  readonly uri: string;
  readonly socketPath: string;
  /** Requests received, in order. */
  readonly requests: FakeRequest[];
  readonly disk: Buffer;
  close(): Promise<void>;
}

const DEFAULT_FLAGS = 0x1 | 0x4 | 0x8 | 0x20 | 0x40;

/** Starts a fake server. */
export async function startFakeServer(options: FakeServerOptions = {}): Promise<FakeServer> {
  const dir = makeTempDir('dmio-fake-nbd-');
  const socketPath = path.join(dir, 'fake.sock');
  const disk = Buffer.alloc(options.sizeBytes ?? 1024 * 1024);
  const requests: FakeRequest[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer({ allowHalfOpen: options.onDisconnect !== undefined }, (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    void serve(socket, disk, options, requests).catch(() => socket.destroy());
  });
  server.listen(socketPath);
  await once(server, 'listening');
  return {
    uri: unixUri(socketPath), socketPath, requests, disk,
    async close() {
      for (const socket of sockets) socket.destroy();
      server.close();
      await once(server, 'close');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

async function serve(
  socket: net.Socket,
  disk: Buffer,
  options: FakeServerOptions,
  requests: FakeRequest[],
): Promise<void> {
  const reader = new HandshakeReader(socket);
  socket.on('data', (chunk: Buffer) => reader.feed(chunk));
  if (options.handshake !== undefined) {
    await options.handshake(socket, reader);
    return;
  }
  const structured = await handshake(socket, reader, disk, options);
  const onRequest = options.onRequest ?? serveCorrectly;
  for (;;) {
    const header = await reader.read(28);
    const type = header.readUInt16BE(6);
    if (type === NBD_CMD_DISC) {
      if (options.onDisconnect !== undefined) options.onDisconnect(socket);
      else socket.end();
      return;
    }
    const lengthBytes = header.readUInt32BE(24);
    const stall = type === NBD_CMD_WRITE && options.replyBeforePayloadThenStall === true;
    const request: FakeRequest = {
      socket, disk, structured, type,
      commandFlags: header.readUInt16BE(4),
      cookie: Buffer.from(header.subarray(8, 16)),
      offsetBytes: Number(header.readBigUInt64BE(16)),
      lengthBytes,
      payload: type === NBD_CMD_WRITE && !stall ? await reader.read(lengthBytes) : null,
    };
    requests.push(request);
    onRequest(request);
    if (stall) {
      socket.pause();
      socket.removeAllListeners('data');
      return;
    }
  }
}

/** Greeting, client flags, then options until GO or EXPORT_NAME; returns SR negotiated. */
async function handshake(
  socket: net.Socket,
  reader: HandshakeReader,
  disk: Buffer,
  options: FakeServerOptions,
): Promise<boolean> {
  const greeting = Buffer.alloc(18);
  greeting.writeBigUInt64BE(NBD_INIT_MAGIC, 0);
  greeting.writeBigUInt64BE(NBD_OPTS_MAGIC, 8);
  greeting.writeUInt16BE(0x3, 16);
  socket.write(greeting);
  const clientFlags = (await reader.read(4)).readUInt32BE(0);
  const flags = options.transmissionFlags ?? DEFAULT_FLAGS;
  let structured = false;
  for (;;) {
    const header = await reader.read(16);
    const option = header.readUInt32BE(8);
    const payload = await reader.read(header.readUInt32BE(12));
    options.handshakeOption?.(option, payload);
    if (option === NBD_OPT_SET_META_CONTEXT && options.metaContext !== undefined &&
      options.metaContext !== 'unsupported') {
      if (typeof options.metaContext === 'number') {
        const context = Buffer.alloc(4);
        context.writeUInt32BE(options.metaContext, 0);
        socket.write(optionReply(option, NBD_REP_META_CONTEXT,
          Buffer.concat([context, Buffer.from(NBD_META_BASE_ALLOCATION)])));
      }
      socket.write(optionReply(option, NBD_REP_ACK, Buffer.alloc(0)));
    } else if (option === NBD_OPT_STRUCTURED_REPLY) {
      structured = options.structured ?? true;
      socket.write(optionReply(option, structured ? NBD_REP_ACK : NBD_REP_ERR_UNSUP, Buffer.alloc(0)));
    } else if (option === NBD_OPT_GO && options.refuseGo !== true) {
      const info = Buffer.alloc(12);
      info.writeUInt16BE(NBD_INFO_EXPORT, 0);
      info.writeBigUInt64BE(BigInt(disk.length), 2);
      info.writeUInt16BE(flags, 10);
      socket.write(optionReply(option, NBD_REP_INFO, info));
      socket.write(optionReply(option, NBD_REP_ACK, Buffer.alloc(0)));
      return structured;
    } else if (option === NBD_OPT_EXPORT_NAME) {
      const reply = Buffer.alloc((clientFlags & 2) !== 0 ? 10 : 134);
      reply.writeBigUInt64BE(BigInt(disk.length), 0);
      reply.writeUInt16BE(flags, 8);
      socket.write(reply);
      return structured;
    } else {
      socket.write(optionReply(option, NBD_REP_ERR_UNSUP, Buffer.alloc(0)));
    }
  }
}

/** The default behaviour: a correct RAM export. */
export function serveCorrectly(request: FakeRequest): void {
  const { disk, offsetBytes, lengthBytes, socket } = request;
  if (request.type === NBD_CMD_READ) {
    const data = disk.subarray(offsetBytes, offsetBytes + lengthBytes);
    if (request.structured) {
      socket.write(offsetDataChunk(request.cookie, offsetBytes, data, true));
    } else {
      socket.write(Buffer.concat([simpleReply(request.cookie, 0), data]));
    }
    return;
  }
  if (request.type === NBD_CMD_WRITE && request.payload !== null) {
    request.payload.copy(disk, offsetBytes);
  }
  socket.write(simpleReply(request.cookie, 0));
}

/** An option reply. */
export function optionReply(option: number, replyType: number, payload: Buffer): Buffer {
  const header = Buffer.alloc(20);
  header.writeBigUInt64BE(NBD_REP_MAGIC, 0);
  header.writeUInt32BE(option, 8);
  header.writeUInt32BE(replyType >>> 0, 12);
  header.writeUInt32BE(payload.length, 16);
  return Buffer.concat([header, payload]);
}

/** A 16-byte simple reply header. */
export function simpleReply(cookie: Buffer, errorNumber: number): Buffer {
  const reply = Buffer.alloc(16);
  reply.writeUInt32BE(NBD_SIMPLE_REPLY_MAGIC, 0);
  reply.writeUInt32BE(errorNumber, 4);
  cookie.copy(reply, 8);
  return reply;
}

/** A structured chunk; `lengthBytes` defaults to the payload's (override to lie). */
export function chunk(
  cookie: Buffer,
  flags: number,
  chunkType: number,
  payload: Buffer,
  lengthBytes = payload.length,
): Buffer {
  const header = Buffer.alloc(20);
  header.writeUInt32BE(NBD_STRUCTURED_REPLY_MAGIC, 0);
  header.writeUInt16BE(flags, 4);
  header.writeUInt16BE(chunkType, 6);
  cookie.copy(header, 8);
  header.writeUInt32BE(lengthBytes >>> 0, 16);
  return Buffer.concat([header, payload]);
}

/** An OFFSET_DATA chunk. */
export function offsetDataChunk(cookie: Buffer, offsetBytes: number, data: Buffer, done: boolean): Buffer {
  const payload = Buffer.alloc(8 + data.length);
  payload.writeBigUInt64BE(BigInt(offsetBytes), 0);
  data.copy(payload, 8);
  return chunk(cookie, done ? NBD_REPLY_FLAG_DONE : 0, NBD_REPLY_TYPE_OFFSET_DATA, payload);
}

/** An OFFSET_HOLE chunk. */
export function holeChunk(cookie: Buffer, offsetBytes: number, holeBytes: number, done: boolean): Buffer {
  const payload = Buffer.alloc(12);
  payload.writeBigUInt64BE(BigInt(offsetBytes), 0);
  payload.writeUInt32BE(holeBytes, 8);
  return chunk(cookie, done ? NBD_REPLY_FLAG_DONE : 0, NBD_REPLY_TYPE_OFFSET_HOLE, payload);
}

/** An ERROR chunk with a message. */
export function errorChunk(cookie: Buffer, errorNumber: number, message: string, done: boolean): Buffer {
  const text = Buffer.from(message, 'utf8');
  const payload = Buffer.alloc(6 + text.length);
  payload.writeUInt32BE(errorNumber, 0);
  payload.writeUInt16BE(text.length, 4);
  text.copy(payload, 6);
  return chunk(cookie, done ? NBD_REPLY_FLAG_DONE : 0, NBD_REPLY_TYPE_ERROR, payload);
}

/** A BLOCK_STATUS chunk: a context id and (length, flags) descriptors. */
export function blockStatusChunk(
  cookie: Buffer,
  contextId: number,
  descriptors: ReadonlyArray<readonly [number, number]>,
  done: boolean,
): Buffer {
  const payload = Buffer.alloc(4 + 8 * descriptors.length);
  payload.writeUInt32BE(contextId, 0);
  descriptors.forEach(([lengthBytes, flags], index) => {
    payload.writeUInt32BE(lengthBytes, 4 + 8 * index);
    payload.writeUInt32BE(flags, 8 + 8 * index);
  });
  return chunk(cookie, done ? NBD_REPLY_FLAG_DONE : 0, NBD_REPLY_TYPE_BLOCK_STATUS, payload);
}
