// The NBD server's polling threads (a threaded server over files without TLS): the handshake
// runs on the server's thread and the connection moves to a thread that polls it. Requests
// pipelined behind the last option are served; a client stalled in the middle of a WRITE's
// payload does not hold the other connections of its thread; replies a client does not read
// wait in the server (the socket is not read past the connection's byte limit) and all arrive,
// in order and right, once it reads; a zero-length WRITE is answered; a socket read by data
// events stays on the server thread; close() with requests sent flushes what was
// acknowledged. Real files, a real Unix socket, raw clients.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { openFileDevice, type BlockDevice } from '../src/index.js';
import { createNbdServer, type NbdServer } from '../src/server.js';
import {
  NBD_CMD_READ, NBD_CMD_WRITE, NBD_OPT_GO, NBD_OPT_STRUCTURED_REPLY, NBD_REP_ACK, NBD_REP_INFO,
  NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_OFFSET_DATA,
} from '../src/nbd/protocol.js';
import { makeTempDir } from './helpers/nbdkit.js';
import { infoPayload, RawClient } from './helpers/raw-nbd-client.js';

const MiB = 1024 * 1024;
const EXPORT_BYTES = 256 * MiB;

describe('NBD server on polling threads', () => {
  let dir = '';
  let socketPath = '';
  let imagePath = '';
  let device: BlockDevice | null = null;
  let server: NbdServer | null = null;
  const logged: string[] = [];

  before(async () => {
    dir = makeTempDir('dmio-serve-poll-');
    socketPath = path.join(dir, 's.sock');
    imagePath = path.join(dir, 'disk.img');
    device = await openFileDevice(imagePath, { create: { sizeBytes: EXPORT_BYTES } });
    // One thread, so that every connection of a test shares it.
    server = createNbdServer({ exports: [{ name: '', device }], threads: 1,
      log: (message) => logged.push(message) });
    await server.listen({ socketPath });
  });

  after(async () => {
    await server?.close();
    await device?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** A client that sends GO with `requests` behind it in one write, past GO's replies. */
  async function goWith(requests: Buffer): Promise<RawClient> {
    const client = await RawClient.negotiating(socketPath);
    client.option(NBD_OPT_STRUCTURED_REPLY);
    assert.equal((await client.optionReply()).type, NBD_REP_ACK);
    client.send(Buffer.concat([goOption(), requests]));
    for (;;) {
      const reply = await client.optionReply();
      if (reply.type === NBD_REP_ACK) return client;
      assert.equal(reply.type, NBD_REP_INFO);
    }
  }

  test('requests sent in the same write as the last option are served', async () => {
    const data = randomBytes(8192);
    const client = await goWith(Buffer.concat([writeHeader(4096n, data.length, 1n), data,
      requestHeader(NBD_CMD_READ, 4096n, data.length, 2n)]));
    const written = await client.read(16);
    assert.equal(written.readUInt32BE(4), 0);
    assert.equal(written.readBigUInt64BE(8), 1n);
    const chunk = await client.chunk();
    assert.equal(chunk.type, NBD_REPLY_TYPE_OFFSET_DATA);
    assert.equal(chunk.cookie, 2n);
    assert.deepEqual(chunk.payload.subarray(8), data);
    client.destroy();
  });

  test('more requests pipelined behind the last option than one turn runs are all served', async () => {
    // 100 small READs (past the 64 a turn runs), then 3 of 32 MiB (96 MiB of replies: the
    // thread stops reading at 64 MiB unsent, and the last header waits among the kept bytes).
    const small = 100;
    const requests: Buffer[] = [];
    for (let index = 0; index < small; index += 1) {
      requests.push(requestHeader(NBD_CMD_READ, BigInt(index * 4096), 4096, BigInt(index)));
    }
    for (let index = 0; index < 3; index += 1) {
      requests.push(requestHeader(NBD_CMD_READ, 0n, 32 * MiB, BigInt(1000 + index)));
    }
    const client = await goWith(Buffer.concat(requests));
    try {
      // One request runs at a time on a polling thread, so replies come in request order; a
      // reply is chunks up to the one flagged DONE (zeros come as holes).
      for (let index = 0; index < small; index += 1) {
        assert.equal(await replyCookie(client), BigInt(index));
      }
      for (let index = 0; index < 3; index += 1) {
        assert.equal(await replyCookie(client), BigInt(1000 + index));
      }
    } finally {
      client.destroy();
    }
  });

  test('a client stalled inside a WRITE payload does not hold the thread', async () => {
    const stalled = await RawClient.transmitting(socketPath);
    const payload = randomBytes(MiB);
    stalled.send(writeHeader(BigInt(8 * MiB), payload.length, 7n));
    stalled.send(payload.subarray(0, 100_000));
    const other = await RawClient.transmitting(socketPath);
    for (let round = 0; round < 8; round += 1) {
      const data = randomBytes(65536);
      const offset = BigInt(16 * MiB + round * 65536);
      other.send(Buffer.concat([writeHeader(offset, data.length, 1n), data]));
      assert.equal((await other.read(16, 2000)).readUInt32BE(4), 0, 'the other client is served');
      other.request(NBD_CMD_READ, offset, data.length, 0, 2n);
      assert.deepEqual((await other.chunk()).payload.subarray(8), data);
    }
    stalled.send(payload.subarray(100_000));
    const reply = await stalled.read(16);
    assert.equal(reply.readUInt32BE(4), 0);
    assert.equal(reply.readBigUInt64BE(8), 7n);
    stalled.request(NBD_CMD_READ, BigInt(8 * MiB), payload.length, 0, 8n);
    assert.deepEqual((await stalled.chunk()).payload.subarray(8), payload);
    stalled.destroy();
    other.destroy();
  });

  test('replies a client does not read wait, and all arrive in order once it reads', async () => {
    const data = randomBytes(4 * MiB);
    const writer = await RawClient.transmitting(socketPath);
    writer.send(Buffer.concat([writeHeader(BigInt(32 * MiB), data.length, 1n), data]));
    assert.equal((await writer.read(16)).readUInt32BE(4), 0);
    writer.destroy();
    const reader = await RawClient.transmitting(socketPath);
    reader.socket.pause();
    // 24 reads of 4 MiB: 96 MiB of replies, far past the socket buffers and the
    // connection's 64 MiB, so the server must stop reading requests and wait for POLLOUT.
    const count = 24;
    for (let index = 0; index < count; index += 1) {
      reader.request(NBD_CMD_READ, BigInt(32 * MiB), data.length, 0, BigInt(index));
    }
    await new Promise((resolve) => setTimeout(resolve, 300));
    reader.socket.resume();
    for (let index = 0; index < count; index += 1) {
      const chunk = await reader.chunk();
      assert.equal(chunk.cookie, BigInt(index), 'replies in order');
      assert.ok(chunk.payload.subarray(8).equals(data), `reply ${index} is right`);
    }
    reader.destroy();
  });

  test('a zero-length WRITE is answered, and the connection goes on', async () => {
    const client = await RawClient.transmitting(socketPath);
    client.send(writeHeader(0n, 0, 5n));
    const reply = await client.read(16);
    assert.equal(reply.readUInt32BE(4), 0);
    assert.equal(reply.readBigUInt64BE(8), 5n);
    client.request(NBD_CMD_READ, 0n, 512, 0, 6n);
    assert.equal((await client.chunk()).cookie, 6n);
    client.destroy();
  });

  test('connections end and are counted closed', async () => {
    const deadline = Date.now() + 3000;
    while ((server as NbdServer).connectionCount > 0 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    assert.equal((server as NbdServer).connectionCount, 0);
    assert.deepEqual(logged.filter((line) => line.includes('unexpected')), []);
  });
});

test('a socket handed in flowing (read by data events) is handed over with every byte it read', async () => {
  const dir = makeTempDir('dmio-serve-poll-');
  const socketPath = path.join(dir, 's.sock');
  const device = await openFileDevice(path.join(dir, 'disk.img'), { create: { sizeBytes: 16 * MiB } });
  const server = createNbdServer({ exports: [{ name: '', device }], threads: 1 });
  // Not paused at accept, so the server reads it by data events: the hand-over must take the
  // bytes the paused stream still holds in its own buffer too.
  const listener = net.createServer((socket) => server.handleConnection(socket));
  try {
    await new Promise<void>((resolve) => listener.listen(socketPath, resolve));
    const client = await RawClient.negotiating(socketPath);
    client.option(NBD_OPT_STRUCTURED_REPLY);
    assert.equal((await client.optionReply()).type, NBD_REP_ACK);
    const datas = Array.from({ length: 24 }, () => randomBytes(65536));
    client.send(Buffer.concat([goOption(), ...datas.flatMap((data, index) =>
      [writeHeader(BigInt(index * 65536), data.length, BigInt(index)), data])]));
    for (;;) {
      const reply = await client.optionReply();
      if (reply.type === NBD_REP_ACK) break;
    }
    const answered = new Set<bigint>();
    for (let index = 0; index < datas.length; index += 1) {
      const reply = await client.read(16);
      assert.equal(reply.readUInt32BE(4), 0);
      answered.add(reply.readBigUInt64BE(8));
    }
    assert.equal(answered.size, datas.length, 'every WRITE answered once');
    client.request(NBD_CMD_READ, 0n, 24 * 65536, 0, 99n);
    assert.ok((await client.chunk()).payload.subarray(8).equals(Buffer.concat(datas)));
    client.destroy();
  } finally {
    listener.close();
    await server.close();
    await device.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('after DISC a TCP client gets its replies and a clean end, not a reset', async () => {
  const dir = makeTempDir('dmio-serve-poll-');
  const device = await openFileDevice(path.join(dir, 'disk.img'), { create: { sizeBytes: MiB } });
  const server = createNbdServer({ exports: [{ name: '', device }], threads: 1 });
  try {
    const listener = await server.listen({ host: '127.0.0.1', port: 0 });
    const { port } = listener.address() as net.AddressInfo;
    const socket = net.createConnection({ host: '127.0.0.1', port });
    const received: Buffer[] = [];
    let resetBy: Error | null = null;
    socket.on('data', (chunk: Buffer) => received.push(chunk));
    socket.on('error', (error) => { resetBy = error; });
    const ended = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
    const flags = Buffer.alloc(4);
    flags.writeUInt32BE(3, 0);
    const data = randomBytes(4096);
    socket.write(Buffer.concat([flags, goOption()]));
    // The greeting (18), GO's INFO (32) and ACK (20): then the polling thread reads the socket.
    while (Buffer.concat(received).length < 70) await new Promise((resolve) => setTimeout(resolve, 5));
    received.length = 0;
    // A WRITE, DISC, and bytes after DISC that the thread never reads but must not reset over.
    socket.write(Buffer.concat([writeHeader(0n, data.length, 1n), data, requestHeader(2, 0n, 0, 2n),
      Buffer.alloc(256 * 1024, 0x55)]));
    await ended;
    assert.equal(resetBy, null, 'no reset');
    const reply = Buffer.concat(received);
    assert.equal(reply.length, 16, 'the WRITE\'s simple reply, and nothing else');
    assert.equal(reply.readUInt32BE(0), 0x67446698);
    assert.equal(reply.readUInt32BE(4), 0);
    assert.equal(reply.readBigUInt64BE(8), 1n);
  } finally {
    await server.close();
    await device.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('close() with writes acknowledged by a polling thread leaves them in the file', async () => {
  const dir = makeTempDir('dmio-serve-poll-');
  const socketPath = path.join(dir, 's.sock');
  const imagePath = path.join(dir, 'disk.img');
  const device = await openFileDevice(imagePath, { create: { sizeBytes: 16 * MiB } });
  const server = createNbdServer({ exports: [{ name: '', device }], threads: 2 });
  try {
    await server.listen({ socketPath });
    const client = await RawClient.transmitting(socketPath);
    const data = randomBytes(MiB);
    for (let index = 0; index < 8; index += 1) {
      client.send(Buffer.concat([writeHeader(BigInt(index * MiB), data.length, BigInt(index)), data]));
    }
    for (let index = 0; index < 8; index += 1) assert.equal((await client.read(16)).readUInt32BE(4), 0);
    await server.close();
    assert.ok(await client.closedBy(), 'the server closed the connection');
    const image = readFileSync(imagePath);
    for (let index = 0; index < 8; index += 1) {
      assert.ok(image.subarray(index * MiB, (index + 1) * MiB).equals(data), `write ${index}`);
    }
  } finally {
    await server.close();
    await device.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

/** NBD_OPT_GO for the default export, as bytes to send with what follows it. */
function goOption(): Buffer {
  const payload = infoPayload('', []);
  const go = Buffer.alloc(16 + payload.length);
  go.writeBigUInt64BE(0x49484156454F5054n, 0);
  go.writeUInt32BE(NBD_OPT_GO, 8);
  go.writeUInt32BE(payload.length, 12);
  payload.copy(go, 16);
  return go;
}

/** Reads one structured reply's chunks, up to the one flagged DONE; returns its cookie. */
async function replyCookie(client: RawClient): Promise<bigint> {
  for (;;) {
    const chunk = await client.chunk(10_000);
    if ((chunk.flags & NBD_REPLY_FLAG_DONE) !== 0) return chunk.cookie;
  }
}

function requestHeader(type: number, offset: bigint, lengthBytes: number, cookie: bigint): Buffer {
  const header = Buffer.alloc(28);
  header.writeUInt32BE(0x25609513, 0);
  header.writeUInt16BE(type, 6);
  header.writeBigUInt64BE(cookie, 8);
  header.writeBigUInt64BE(offset, 16);
  header.writeUInt32BE(lengthBytes, 24);
  return header;
}

function writeHeader(offset: bigint, lengthBytes: number, cookie: bigint): Buffer {
  return requestHeader(NBD_CMD_WRITE, offset, lengthBytes, cookie);
}
