// Owns a raw NBD client for server tests, driven byte by byte over a Unix socket: exact reads
// with a deadline, a way to see the server hang up, option and request encoders, and the
// handshake up to transmission (structured replies, optional meta contexts, GO).

import assert from 'node:assert/strict';
import net from 'node:net';
import {
  NBD_OPT_GO, NBD_OPT_SET_META_CONTEXT, NBD_OPT_STRUCTURED_REPLY, NBD_OPTS_MAGIC, NBD_REP_ACK,
  NBD_REP_INFO, NBD_REP_META_CONTEXT, NBD_REQUEST_MAGIC,
} from '../../src/nbd/protocol.js';

/** A raw NBD client: exact reads with a deadline, and a way to see the server hang up. */
export class RawClient {
  readonly socket: net.Socket;
  /** Context ids by name, as SET_META_CONTEXT selected them in `transmitting`. */
  readonly metaContexts = new Map<string, number>();
  /** Bytes received and not yet read, joined only when a read needs them. */
  #pieces: Buffer[] = [];
  #bufferedBytes = 0;
  #closed = false;
  #waiter: (() => void) | null = null;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on('data', (chunk: Buffer) => {
      this.#pieces.push(chunk);
      this.#bufferedBytes += chunk.length;
      this.#waiter?.();
    });
    socket.on('close', () => {
      this.#closed = true;
      this.#waiter?.();
    });
    socket.on('error', () => undefined);
  }

  static connect(socketPath: string): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const socket = net.createConnection({ path: socketPath }, () => resolve(new RawClient(socket)));
      socket.once('error', reject);
    });
  }

  /** Greeting read, flags sent: ready for options. */
  static async negotiating(socketPath: string, flags = 3): Promise<RawClient> {
    const client = await RawClient.connect(socketPath);
    const greeting = await client.read(18);
    assert.equal(greeting.readBigUInt64BE(8), NBD_OPTS_MAGIC);
    client.send(u32(flags));
    return client;
  }

  /**
   * After SR and GO for `exportName`: in transmission. With `metaContexts`, SET_META_CONTEXT
   * asks for them between SR and GO, and the replies are returned with the client.
   */
  static async transmitting(socketPath: string): Promise<RawClient>;
  static async transmitting(
    socketPath: string, exportName: string, metaContexts: string[],
  ): Promise<RawClient>;
  static async transmitting(
    socketPath: string, exportName = '', metaContexts: string[] = [],
  ): Promise<RawClient> {
    const client = await RawClient.negotiating(socketPath);
    client.option(NBD_OPT_STRUCTURED_REPLY);
    assert.equal((await client.optionReply()).type, NBD_REP_ACK);
    if (metaContexts.length > 0) {
      client.option(NBD_OPT_SET_META_CONTEXT, metaPayload(exportName, metaContexts));
      for (;;) {
        const reply = await client.optionReply();
        if (reply.type === NBD_REP_ACK) break;
        assert.equal(reply.type, NBD_REP_META_CONTEXT);
        client.metaContexts.set(reply.data.toString('utf8', 4), reply.data.readUInt32BE(0));
      }
    }
    client.option(NBD_OPT_GO, infoPayload(exportName, []));
    for (;;) {
      const reply = await client.optionReply();
      if (reply.type === NBD_REP_ACK) break;
      assert.equal(reply.type, NBD_REP_INFO);
    }
    return client;
  }

  send(data: Uint8Array): void {
    this.socket.write(data);
  }

  option(option: number, payload: Uint8Array = Buffer.alloc(0), lengthBytes = payload.length): void {
    const header = Buffer.alloc(16);
    header.writeBigUInt64BE(NBD_OPTS_MAGIC, 0);
    header.writeUInt32BE(option, 8);
    header.writeUInt32BE(lengthBytes, 12);
    this.send(Buffer.concat([header, payload]));
  }

  async optionReply(): Promise<{ option: number; type: number; data: Buffer }> {
    const header = await this.read(20);
    const data = await this.read(header.readUInt32BE(16));
    return { option: header.readUInt32BE(8), type: header.readUInt32BE(12), data };
  }

  request(type: number, offset: bigint, lengthBytes: number, flags = 0, cookie = 1n): void {
    const header = Buffer.alloc(28);
    header.writeUInt32BE(NBD_REQUEST_MAGIC, 0);
    header.writeUInt16BE(flags, 4);
    header.writeUInt16BE(type, 6);
    header.writeBigUInt64BE(cookie, 8);
    header.writeBigUInt64BE(offset, 16);
    header.writeUInt32BE(lengthBytes, 24);
    this.send(header);
  }

  /** One structured chunk: type, flags, cookie and payload. */
  async chunk(timeoutMs = 5000): Promise<{ type: number; flags: number; cookie: bigint; payload: Buffer }> {
    const header = await this.read(20, timeoutMs);
    const payload = await this.read(header.readUInt32BE(16), timeoutMs);
    return { flags: header.readUInt16BE(4), type: header.readUInt16BE(6),
      cookie: header.readBigUInt64BE(8), payload };
  }

  async read(lengthBytes: number, timeoutMs = 5000): Promise<Buffer> {
    const deadline = Date.now() + timeoutMs;
    while (this.#bufferedBytes < lengthBytes) {
      if (this.#closed) throw new Error('closed');
      if (Date.now() > deadline) throw new Error('timed out');
      await new Promise<void>((resolve) => {
        this.#waiter = resolve;
        setTimeout(resolve, 50);
      });
    }
    const joined = this.#pieces.length === 1 ? this.#pieces[0] as Buffer : Buffer.concat(this.#pieces);
    const out = joined.subarray(0, lengthBytes);
    const rest = joined.subarray(lengthBytes);
    this.#pieces = rest.length > 0 ? [rest] : [];
    this.#bufferedBytes = rest.length;
    return out;
  }

  /** Resolves true when the server closes the connection within `timeoutMs`. */
  async closedBy(timeoutMs = 3000): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!this.#closed && Date.now() < deadline) {
      await new Promise<void>((resolve) => {
        this.#waiter = resolve;
        setTimeout(resolve, 50);
      });
    }
    return this.#closed;
  }

  destroy(): void {
    this.socket.destroy();
  }
}

/** A big-endian u32. */
export function u32(value: number): Buffer {
  const out = Buffer.alloc(4);
  out.writeUInt32BE(value, 0);
  return out;
}

/** The payload of INFO or GO: export name and info types. */
export function infoPayload(name: string, infoTypes: number[]): Buffer {
  const nameBytes = Buffer.from(name);
  const out = Buffer.alloc(4 + nameBytes.length + 2 + 2 * infoTypes.length);
  out.writeUInt32BE(nameBytes.length, 0);
  nameBytes.copy(out, 4);
  out.writeUInt16BE(infoTypes.length, 4 + nameBytes.length);
  infoTypes.forEach((type, index) => out.writeUInt16BE(type, 4 + nameBytes.length + 2 + 2 * index));
  return out;
}

/** The payload of LIST_ or SET_META_CONTEXT: export name and queries. */
export function metaPayload(name: string, queries: string[]): Buffer {
  const parts = [u32(Buffer.byteLength(name)), Buffer.from(name), u32(queries.length)];
  for (const query of queries) parts.push(u32(Buffer.byteLength(query)), Buffer.from(query));
  return Buffer.concat(parts);
}
