// NBD device against a server written in the test: the EXPORT_NAME fallback when GO is refused,
// reads reassembled from shuffled data and hole chunks, server errors with messages, and a
// hostile server sending malformed, oversized and unknown replies. Each breach must end in a
// typed DMIO_ERR_NBD_PROTOCOL failure of every request in flight, bounded memory, no crash.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type net from 'node:net';
import { isDmIoError, NbdError, type IoError } from '../src/errors.js';
import { openNbdDevice } from '../src/nbd/open-nbd.js';
import { NBD_CMD_READ, NBD_REPLY_FLAG_DONE, NBD_REP_MAGIC } from '../src/nbd/protocol.js';
import { pattern, request, split, submit } from './helpers/device-io.js';
import {
  chunk, errorChunk, holeChunk, offsetDataChunk, optionReply, serveCorrectly, simpleReply,
  startFakeServer, type FakeRequest, type FakeServer, type FakeServerOptions,
} from './helpers/fake-nbd-server.js';

const KiB = 1024;
const MiB = 1024 * KiB;

async function withFake(options: FakeServerOptions, body: (server: FakeServer) => Promise<void>): Promise<void> {
  const server = await startFakeServer(options);
  try {
    await body(server);
  } finally {
    await server.close();
  }
}

/** Serves every request correctly except READs, which `misbehave` answers. */
function hostileReads(misbehave: (request: FakeRequest) => void): FakeServerOptions {
  return {
    onRequest: (request) => (request.type === NBD_CMD_READ ? misbehave(request) : serveCorrectly(request)),
  };
}

function causeCode(error: IoError | null): string | undefined {
  return (error?.cause as { code?: string } | undefined)?.code;
}

/** Three reads in flight against a server whose third READ reply is `misbehave`d. */
async function expectProtocolBreak(misbehave: (request: FakeRequest) => void, pattern?: RegExp): Promise<void> {
  let reads = 0;
  const held: FakeRequest[] = [];
  await withFake({
    onRequest: (request) => {
      if (request.type !== NBD_CMD_READ) return serveCorrectly(request);
      reads += 1;
      if (reads < 3) held.push(request);  // never answered: still in flight at the breach
      else misbehave(request);
    },
  }, async (server) => {
    const device = await openNbdDevice(server.uri);
    const before = process.memoryUsage().arrayBuffers;
    const results = await Promise.all([0, 8, 16].map((sector) =>
      submit(device, request('read', sector, 8, [new Uint8Array(4096)]), 3000)));
    for (const error of results) {
      assert.equal(error?.errno, 'EIO');
      assert.equal(causeCode(error), 'DMIO_ERR_NBD_PROTOCOL', String(error?.cause));
      if (pattern !== undefined) assert.match(String((error?.cause as Error).message), pattern);
    }
    assert.equal(device.broken, true);
    const grownBytes = process.memoryUsage().arrayBuffers - before;
    assert.ok(grownBytes < 16 * 1024 * 1024, `memory grew by ${grownBytes} bytes`);
    const late = await submit(device, request('read', 0, 8, [new Uint8Array(4096)]), 1000);
    assert.ok(isDmIoError(late?.cause, 'DMIO_ERR_NBD_BROKEN'));
    await device.close();
  });
}

describe('well-behaved test server', () => {
  test('GO refused: falls back to EXPORT_NAME and still uses structured replies', async () => {
    await withFake({ refuseGo: true }, async (server) => {
      const device = await openNbdDevice(server.uri);
      assert.equal(device.negotiation, 'export-name');
      assert.equal(device.structuredReplies, true);
      const data = pattern(0, 8 * KiB, 1);
      assert.equal(await submit(device, request('write', 8, 16, [data])), null);
      const out = new Uint8Array(8 * KiB);
      assert.equal(await submit(device, request('read', 8, 16, [out])), null);
      assert.deepEqual(out, data);
      await device.close();
    });
  });

  test('a READ assembled from shuffled data and hole chunks, dripped byte by byte', async () => {
    await withFake(hostileReads((req) => {
      const base = req.offsetBytes;
      const quarter = req.lengthBytes / 4;
      const parts = [
        offsetDataChunk(req.cookie, base + 3 * quarter, req.disk.subarray(base + 3 * quarter, base + 4 * quarter), false),
        holeChunk(req.cookie, base + quarter, quarter, false),
        offsetDataChunk(req.cookie, base + 2 * quarter, req.disk.subarray(base + 2 * quarter, base + 3 * quarter), false),
        offsetDataChunk(req.cookie, base, req.disk.subarray(base, base + quarter), false),
        chunk(req.cookie, NBD_REPLY_FLAG_DONE, 0, Buffer.alloc(0)),
      ];
      const bytes = Buffer.concat(parts);
      let position = 0;
      const drip = (): void => {
        if (position >= bytes.length) return;
        req.socket.write(bytes.subarray(position, position + 7));
        position += 7;
        setImmediate(drip);
      };
      drip();
    }), async (server) => {
      pattern(0, 64 * KiB, 9).forEach((value, index) => { server.disk[index] = value; });
      const device = await openNbdDevice(server.uri);
      const out = new Uint8Array(16 * KiB).fill(0xee);
      assert.equal(await submit(device, request('read', 0, 32, split(out, 1000 + 24, 5120, 4096))), null);
      const expected = Buffer.from(pattern(0, 16 * KiB, 9));
      expected.fill(0, 4 * KiB, 8 * KiB);
      assert.deepEqual(Buffer.from(out), expected);
      assert.equal(device.replies.holeChunks, 1);
      assert.equal(device.replies.dataChunks, 3);
      await device.close();
    });
  });

  test('ERROR chunks fail only their request, with the mapped errno and the message', async () => {
    await withFake(hostileReads((req) => {
      if (req.offsetBytes === 0) {
        req.socket.write(errorChunk(req.cookie, 28, 'disk full, sorry', true));
      } else if (req.offsetBytes === 4096) {
        // An unknown error-typed chunk (bit 15) fails its request only; its payload is skipped.
        req.socket.write(chunk(req.cookie, NBD_REPLY_FLAG_DONE, 0x8123, Buffer.alloc(300, 1)));
      } else {
        serveCorrectly(req);
      }
    }), async (server) => {
      const device = await openNbdDevice(server.uri);
      const [full, unknown, fine] = await Promise.all([0, 8, 16].map((sector) =>
        submit(device, request('read', sector, 8, [new Uint8Array(4096)]))));
      assert.equal(full?.errno, 'ENOSPC');
      assert.equal(full?.syscall, 'NBD_CMD_READ');
      assert.ok(full?.cause instanceof NbdError);
      assert.match(full.cause.message, /disk full, sorry/);
      assert.equal(unknown?.errno, 'EIO');
      assert.equal(fine, null);
      assert.equal(device.broken, false);
      assert.equal(await submit(device, request('read', 0, 8, [new Uint8Array(4096)])) !== null, true);
      await device.close();
    });
  });

  test('close() sends NBD_CMD_DISC after the last reply and closes without waiting for the server', async () => {
    const clientEnds: Array<Promise<unknown>> = [];
    await withFake({
      // The server takes DISC and keeps its side open (half-open: the client's EOF does not
      // close it), as a server still tearing the connection down would: the client must not
      // wait for it.
      onDisconnect: (socket) => {
        clientEnds.push(new Promise((resolve) => socket.once('end', resolve)));
      },
    }, async (server) => {
      const device = await openNbdDevice(server.uri);
      const data = pattern(0, 8 * KiB, 3);
      const written = submit(device, request('write', 0, 16, [data]));
      const startMs = performance.now();
      const closing = device.close();
      assert.equal(await written, null, 'close waits for the request in flight');
      await closing;
      const closeMs = performance.now() - startMs;
      assert.ok(closeMs < 1000, `close took ${closeMs.toFixed(0)} ms against a server that never closes`);
      // The DISC is in the server's socket before close() resolves; it reads it a moment later.
      for (let waitedMs = 0; clientEnds.length === 0 && waitedMs < 1000; waitedMs += 5) {
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
      assert.equal(clientEnds.length, 1, 'the server received NBD_CMD_DISC');
      assert.deepEqual(server.disk.subarray(0, 8 * KiB), Buffer.from(data));
      await clientEnds[0];
    });
  });

  test('close() returns when a server stops reading with a WRITE payload and the DISC still unsent', { timeout: 20_000 }, async () => {
    await withFake({
      sizeBytes: 32 * MiB,
      replyBeforePayloadThenStall: true,
      onRequest: (request) => request.socket.write(simpleReply(request.cookie, 0)),
    }, async (server) => {
      const device = await openNbdDevice(server.uri);
      // 16 MiB: far more than the client's send buffer and the server's receive buffer hold,
      // so most of the payload, and the DISC behind it, can never leave the client.
      const written = await submit(device, request('write', 0, 32768, [new Uint8Array(16 * MiB)]));
      assert.equal(written, null, 'the server acknowledged the write from its header');
      const startMs = performance.now();
      await device.close();
      const closeMs = performance.now() - startMs;
      assert.ok(closeMs < 5000, `close took ${closeMs.toFixed(0)} ms`);
    });
  });
});

describe('hostile server: transmission phase', () => {
  test('bad reply magic', () => expectProtocolBreak((req) => {
    req.socket.write(Buffer.from('HTTP/1.1 400 Bad Request\r\n\r\n'));
  }, /bad reply magic/));

  test('reply for an unknown cookie', () => expectProtocolBreak((req) => {
    req.socket.write(simpleReply(Buffer.from('deadbeefdeadbeef', 'hex'), 0));
  }, /unknown cookie/));

  test('oversized OFFSET_DATA length (4 GiB) followed by a flood', () => expectProtocolBreak((req) => {
    req.socket.write(chunk(req.cookie, NBD_REPLY_FLAG_DONE, 1, Buffer.alloc(8), 0xfffffff0));
    req.socket.write(Buffer.alloc(8 * 1024 * 1024, 0x41));
  }, /impossible length/));

  test('data chunk outside the request', () => expectProtocolBreak((req) => {
    req.socket.write(offsetDataChunk(req.cookie, req.offsetBytes + 4096, Buffer.alloc(512), true));
  }, /outside/));

  test('overlapping data chunks', () => expectProtocolBreak((req) => {
    req.socket.write(offsetDataChunk(req.cookie, req.offsetBytes, Buffer.alloc(2048), false));
    req.socket.write(offsetDataChunk(req.cookie, req.offsetBytes + 1024, Buffer.alloc(2048), true));
  }, /overlap/));

  test('DONE before the READ was covered', () => expectProtocolBreak((req) => {
    req.socket.write(offsetDataChunk(req.cookie, req.offsetBytes, Buffer.alloc(2048), true));
  }, /before covering/));

  test('a thousand-piece READ exceeds the range bookkeeping cap', () => expectProtocolBreak((req) => {
    const parts: Buffer[] = [];
    for (let offset = 0; offset < req.lengthBytes; offset += 2) {
      parts.push(offsetDataChunk(req.cookie, req.offsetBytes + offset, Buffer.alloc(1), false));
    }
    req.socket.write(Buffer.concat(parts));
  }, /too-many-ranges/));

  test('unknown non-error chunk type', () => expectProtocolBreak((req) => {
    req.socket.write(chunk(req.cookie, NBD_REPLY_FLAG_DONE, 77, Buffer.alloc(16)));
  }, /unknown reply chunk type 77/));

  test('error chunk whose message length disagrees with the chunk', () => expectProtocolBreak((req) => {
    const payload = Buffer.alloc(10);
    payload.writeUInt32BE(5, 0);
    payload.writeUInt16BE(1000, 4);
    req.socket.write(chunk(req.cookie, NBD_REPLY_FLAG_DONE, 0x8001, payload));
  }, /disagrees/));

  test('oversized error chunk (1 MiB message claim)', () => expectProtocolBreak((req) => {
    req.socket.write(chunk(req.cookie, NBD_REPLY_FLAG_DONE, 0x8001, Buffer.alloc(6), 1024 * 1024));
  }, /impossible length/));

  test('structured reply although structured replies were refused', async () => {
    await withFake({ structured: false, ...hostileReads((req) => {
      req.socket.write(offsetDataChunk(req.cookie, req.offsetBytes, Buffer.alloc(4096), true));
    }) }, async (server) => {
      const device = await openNbdDevice(server.uri);
      const error = await submit(device, request('read', 0, 8, [new Uint8Array(4096)]), 3000);
      assert.equal(causeCode(error), 'DMIO_ERR_NBD_PROTOCOL');
      await device.close();
    });
  });

  test('server hangs up halfway through a READ payload', async () => {
    await withFake({ structured: false, ...hostileReads((req) => {
      req.socket.end(Buffer.concat([simpleReply(req.cookie, 0), Buffer.alloc(1000)]));
    }) }, async (server) => {
      const device = await openNbdDevice(server.uri);
      const error = await submit(device, request('read', 0, 8, [new Uint8Array(4096)]), 3000);
      assert.equal(causeCode(error), 'DMIO_ERR_NBD_DISCONNECTED');
      await device.close();
    });
  });
});

/** Opens against a server whose handshake is `script`; returns the rejection. */
async function handshakeFailure(script: (socket: net.Socket) => void): Promise<unknown> {
  let failure: unknown = null;
  await withFake({ handshake: async (socket) => script(socket) }, async (server) => {
    const before = process.memoryUsage().arrayBuffers;
    try {
      const device = await openNbdDevice(server.uri, { connectTimeoutMs: 2000 });
      await device.close();
    } catch (error) {
      failure = error;
    }
    const grownBytes = process.memoryUsage().arrayBuffers - before;
    assert.ok(grownBytes < 16 * 1024 * 1024, `memory grew by ${grownBytes} bytes`);
  });
  return failure;
}

function greeting(): Buffer {
  return Buffer.from('4e42444d4147494349484156454f50540003', 'hex');
}

describe('hostile server: handshake', () => {
  test('garbage instead of a greeting', async () => {
    const error = await handshakeFailure((socket) => socket.write(Buffer.alloc(1024 * 1024, 0x55)));
    assert.ok(isDmIoError(error, 'DMIO_ERR_NBD_PROTOCOL'), String(error));
  });

  test('an option reply claiming 2 GiB, then a flood', async () => {
    const error = await handshakeFailure((socket) => {
      const header = Buffer.alloc(20);
      header.writeBigUInt64BE(NBD_REP_MAGIC, 0);
      header.writeUInt32BE(8, 8);
      header.writeUInt32BE(1, 12);
      header.writeUInt32BE(0x80000000, 16);
      socket.write(Buffer.concat([greeting(), header, Buffer.alloc(4 * 1024 * 1024)]));
    });
    assert.ok(isDmIoError(error, 'DMIO_ERR_NBD_PROTOCOL'), String(error));
    assert.match(String((error as Error).message), /exceeds/);
  });

  test('GO acknowledged without NBD_INFO_EXPORT', async () => {
    const error = await handshakeFailure((socket) => {
      // SR and SET_META_CONTEXT (selecting nothing) acknowledged, then GO.
      socket.write(Buffer.concat([greeting(), optionReply(8, 1, Buffer.alloc(0)),
        optionReply(10, 1, Buffer.alloc(0)), optionReply(7, 1, Buffer.alloc(0))]));
    });
    assert.ok(isDmIoError(error, 'DMIO_ERR_NBD_PROTOCOL'), String(error));
    assert.match(String((error as Error).message), /without NBD_INFO_EXPORT/);
  });

  test('invalid advertised block sizes', async () => {
    const error = await handshakeFailure((socket) => {
      const info = Buffer.alloc(14);
      info.writeUInt16BE(3, 0);
      info.writeUInt32BE(3, 2);
      info.writeUInt32BE(4096, 6);
      info.writeUInt32BE(65536, 10);
      socket.write(Buffer.concat([greeting(), optionReply(8, 1, Buffer.alloc(0)),
        optionReply(10, 1, Buffer.alloc(0)), optionReply(7, 3, info)]));
    });
    assert.ok(isDmIoError(error, 'DMIO_ERR_NBD_PROTOCOL'), String(error));
    assert.match(String((error as Error).message), /minimum block size 3/);
  });

  test('a silent server hits the connect timeout', async () => {
    const started = performance.now();
    const error = await handshakeFailure(() => undefined);
    assert.ok(isDmIoError(error, 'DMIO_ERR_NBD_TIMEOUT'), String(error));
    assert.ok(performance.now() - started < 3000);
  });

  test('a server that hangs up after EXPORT_NAME: no such export', async () => {
    const error = await handshakeFailure((socket) => {
      // Plain newstyle (no FIXED_NEWSTYLE): the client must go straight to EXPORT_NAME.
      socket.write(Buffer.from('4e42444d4147494349484156454f50540000', 'hex'));
      setTimeout(() => socket.end(), 50);
    });
    assert.ok(isDmIoError(error, 'DMIO_ERR_NBD_SERVER'), String(error));
    assert.match(String((error as Error).message), /no such export/);
  });
});
