// Tests the socket reader's `fill` over a real Unix socket read through `onread`: a fill that
// waits is called back from inside the read that completes it, and a fill asked for from that
// callback (a WRITE payload after its header) has the following
// reads land in its own memory rather than in the staging buffer; bytes sent ahead are kept
// and drained by the next fill; a stopped reader fails the waiting fill and refuses new ones.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { KIB } from '../constants.js';
import { SocketReader, StreamEndedError } from './socket-reader.js';

const HEADER_BYTES = 28;
const PAYLOAD_BYTES = 256 * KIB;

/** A reader on the client end of a fresh Unix socket pair; `peer` is the server's end. */
async function connectedReader(): Promise<{
  reader: SocketReader; peer: net.Socket; handed: Uint8Array[]; close(): void;
}> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dmio-reader-'));
  const socketPath = path.join(dir, 's.sock');
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(socketPath, resolve));
  const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
  const reader = SocketReader.forOnread();
  // Records every buffer Node is given for a read (the reader's own choice, unchanged).
  const handed: Uint8Array[] = [];
  const chooseBuffer = reader.onread.buffer as () => Uint8Array;
  const onread = { ...reader.onread, buffer: () => {
    const chosen = chooseBuffer();
    handed.push(chosen);
    return chosen;
  } };
  const socket = net.connect({ path: socketPath, onread });
  reader.attachOnread(socket);
  const peer = await accepted;
  return {
    reader, peer, handed,
    close: () => {
      socket.destroy();
      peer.destroy();
      server.close();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

function pattern(lengthBytes: number, seed: number): Buffer {
  const bytes = Buffer.allocUnsafe(lengthBytes);
  for (let at = 0; at < lengthBytes; at += 1) bytes[at] = (at * 31 + seed) & 0xff;
  return bytes;
}

test('a payload asked for from the header callback is read in place from the next read on', async () => {
  const { reader, peer, handed, close } = await connectedReader();
  try {
    const header = Buffer.alloc(HEADER_BYTES);
    const payload = new Uint8Array(PAYLOAD_BYTES);
    const sentHeader = pattern(HEADER_BYTES, 1);
    const sentPayload = pattern(PAYLOAD_BYTES, 2);
    let handedAtHeader = -1;
    const payloadIn = new Promise<void>((resolve, reject) => {
      const filled = reader.fill(header, (error) => {
        if (error !== null) return reject(error);
        assert.deepEqual(header, sentHeader);
        handedAtHeader = handed.length;
        const now = reader.fill(payload, (payloadError) => {
          if (payloadError !== null) reject(payloadError);
          else resolve();
        });
        assert.equal(now, false, 'the payload was not sent yet');
      });
      assert.equal(filled, false, 'nothing was sent yet');
    });
    // The header alone first, so the read that brings it carries no payload bytes.
    peer.write(sentHeader);
    await new Promise((resolve) => setTimeout(resolve, 50));
    peer.write(sentPayload);
    await payloadIn;
    assert.deepEqual(Buffer.from(payload), sentPayload);
    // The callback ran inside the header's read: the buffer Node took for the very next read
    // was already a view of the payload, and so was every later one.
    assert.ok(handedAtHeader >= 0 && handed.length > handedAtHeader);
    for (const view of handed.slice(handedAtHeader, -1)) {
      assert.equal(view.buffer, payload.buffer, 'a read of the payload went elsewhere');
    }
  } finally {
    close();
  }
});

test('bytes sent ahead are kept and complete later fills at once, in order', async () => {
  const { reader, peer, close } = await connectedReader();
  try {
    const sent = pattern(3 * HEADER_BYTES + 1000, 3);
    const first = Buffer.alloc(HEADER_BYTES);
    await new Promise<void>((resolve, reject) => {
      const filled = reader.fill(first, (error) => (error === null ? resolve() : reject(error)));
      assert.equal(filled, false);
      peer.write(sent);
    });
    while (reader.bufferedBytes < sent.length - HEADER_BYTES) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    const second = Buffer.alloc(HEADER_BYTES);
    const rest = Buffer.alloc(sent.length - 2 * HEADER_BYTES);
    assert.equal(reader.fill(second, () => assert.fail('filled at once')), true);
    assert.equal(reader.fill(rest, () => assert.fail('filled at once')), true);
    assert.deepEqual(Buffer.concat([first, second, rest]), sent);
    assert.equal(reader.bufferedBytes, 0);
  } finally {
    close();
  }
});

test('stopping fails the waiting fill, and a later fill throws', async () => {
  const { reader, close } = await connectedReader();
  try {
    const failed = new Promise<Error | null>((resolve) => {
      assert.equal(reader.fill(new Uint8Array(HEADER_BYTES), resolve), false);
    });
    reader.stop('test stop');
    const error = await failed;
    assert.ok(error instanceof StreamEndedError);
    assert.throws(() => reader.fill(new Uint8Array(1), () => undefined), StreamEndedError);
    await assert.rejects(reader.read(1), StreamEndedError);
  } finally {
    close();
  }
});
