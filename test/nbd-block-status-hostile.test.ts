// NbdDevice.extents against a server written in the test, which says exactly what it sends:
// the handshake's SET_META_CONTEXT (selected with id 0 or 7, selected nothing, refused), then
// BLOCK_STATUS replies that round sub-sector descriptors, describe less than asked, run past
// the request, end with a NONE chunk, carry far more than 1024 descriptors, or fail with an
// error chunk. Replies that break the protocol (absurd or malformed chunk lengths, an empty
// descriptor, an unknown context, two status chunks, a status chunk for a READ, a successful
// simple reply) fail the query with DMIO_ERR_NBD_PROTOCOL, the device breaks, and nothing hangs.
// The parser alone, fed a status reply one byte at a time, ends with the same extents.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { isDmIoError } from '../src/errors.js';
import { EXTENTS_PER_QUERY_MAX } from '../src/devices/block-device.js';
import { openNbdDevice } from '../src/nbd/open-nbd.js';
import {
  newReplyCounters, ReplyParser, type ReplyState, type ServerError,
} from '../src/nbd/reply-parser.js';
import { StatusTarget } from '../src/nbd/status-target.js';
import {
  NBD_CMD_BLOCK_STATUS, NBD_CMD_READ, NBD_OPT_SET_META_CONTEXT, NBD_REPLY_FLAG_DONE,
  NBD_REPLY_TYPE_BLOCK_STATUS,
} from '../src/nbd/protocol.js';
import { request, submit } from './helpers/device-io.js';
import { queryExtents } from './helpers/nbd-extents.js';
import {
  blockStatusChunk, chunk, errorChunk, serveCorrectly, simpleReply, startFakeServer,
  type FakeRequest, type FakeServer, type FakeServerOptions,
} from './helpers/fake-nbd-server.js';

const CONTEXT_ID = 7;
const HOLE_ZERO = 3;

async function withFake(
  options: FakeServerOptions, body: (server: FakeServer) => Promise<void>,
): Promise<void> {
  const server = await startFakeServer(options);
  try {
    await body(server);
  } finally {
    await server.close();
  }
}

/** A server selecting base:allocation as CONTEXT_ID whose BLOCK_STATUS replies are `answer`. */
function statusServer(answer: (request: FakeRequest) => void, sizeBytes?: number): FakeServerOptions {
  return {
    ...(sizeBytes === undefined ? {} : { sizeBytes }),
    metaContext: CONTEXT_ID,
    onRequest: (req) => (req.type === NBD_CMD_BLOCK_STATUS ? answer(req) : serveCorrectly(req)),
  };
}

/** Opens the device, runs one query of sectors 0-15 and returns the answer and the device. */
async function queryOnce(answer: (request: FakeRequest) => void) {
  let result: Awaited<ReturnType<typeof queryExtents>> | null = null;
  let broken = false;
  await withFake(statusServer(answer), async (server) => {
    const device = await openNbdDevice(server.uri);
    assert.equal(device.blockStatus, true);
    result = await queryExtents(device, 0, 16, 3000);
    broken = device.broken;
    await device.close();
  });
  assert.ok(result !== null);
  return { answer: result as Awaited<ReturnType<typeof queryExtents>>, broken };
}

async function expectViolation(answer: (request: FakeRequest) => void, pattern: RegExp): Promise<void> {
  const { answer: result, broken } = await queryOnce(answer);
  assert.ok(result.error !== null, 'the query failed');
  assert.equal(result.error.syscall, 'NBD_CMD_BLOCK_STATUS');
  assert.ok(isDmIoError(result.error.cause, 'DMIO_ERR_NBD_PROTOCOL'), String(result.error.cause));
  assert.match(String((result.error.cause as Error).message), pattern);
  assert.equal(broken, true);
}

describe('SET_META_CONTEXT in the handshake', () => {
  for (const [metaContext, expected] of [
    [CONTEXT_ID, true], [0, true], ['none', false], ['unsupported', false],
  ] as const) {
    test(`server answering ${metaContext}: blockStatus ${expected}, reads still work`, async () => {
      await withFake({ metaContext }, async (server) => {
        const device = await openNbdDevice(server.uri);
        assert.equal(device.blockStatus, expected);
        server.disk.fill(9, 0, 512);
        const data = new Uint8Array(512);
        assert.equal(await submit(device, request('read', 0, 1, [data])), null);
        assert.equal(data[0], 9);
        if (!expected) {
          const answer = await queryExtents(device, 3, 40);
          assert.deepEqual(answer.extents, [{ sector: 3, countSectors: 40, hole: false, zero: false }]);
          assert.ok(server.requests.every((req) => req.type !== NBD_CMD_BLOCK_STATUS));
        }
        await device.close();
      });
    });
  }

  test('the meta context names the export GO opens', async () => {
    let named = '';
    await withFake({ metaContext: CONTEXT_ID, handshakeOption: (option, payload) => {
      if (option === NBD_OPT_SET_META_CONTEXT) {
        named = payload.toString('utf8', 4, 4 + payload.readUInt32BE(0));
      }
    } }, async (server) => {
      const device = await openNbdDevice(server.uri.replace('nbd+unix:///', 'nbd+unix:///disk%201'));
      await device.close();
    });
    assert.equal(named, 'disk 1');
  });
});

describe('BLOCK_STATUS replies the client accepts', () => {
  test('sub-sector descriptors round: a sector partly data is data', async () => {
    const { answer } = await queryOnce((req) => req.socket.write(blockStatusChunk(req.cookie,
      CONTEXT_ID, [[700, HOLE_ZERO], [324, 0], [512, 2], [6656, HOLE_ZERO]], true)));
    assert.equal(answer.error, null);
    assert.deepEqual(answer.extents, [
      { sector: 0, countSectors: 1, hole: true, zero: true },
      { sector: 1, countSectors: 1, hole: false, zero: false },
      { sector: 2, countSectors: 1, hole: false, zero: true },
      { sector: 3, countSectors: 13, hole: true, zero: true },
    ]);
  });

  test('less than asked is a prefix; a final descriptor past the request is clipped', async () => {
    const short = await queryOnce((req) => req.socket.write(blockStatusChunk(req.cookie,
      CONTEXT_ID, [[2048, 0]], true)));
    assert.deepEqual(short.answer.extents, [{ sector: 0, countSectors: 4, hole: false, zero: false }]);
    const long = await queryOnce((req) => req.socket.write(blockStatusChunk(req.cookie,
      CONTEXT_ID, [[4096, 0], [1 << 20, HOLE_ZERO]], true)));
    assert.deepEqual(long.answer.extents, [
      { sector: 0, countSectors: 8, hole: false, zero: false },
      { sector: 8, countSectors: 8, hole: true, zero: true },
    ]);
  });

  test('a status chunk without DONE followed by a NONE chunk', async () => {
    const { answer } = await queryOnce((req) => req.socket.write(Buffer.concat([
      blockStatusChunk(req.cookie, CONTEXT_ID, [[8192, HOLE_ZERO]], false),
      chunk(req.cookie, NBD_REPLY_FLAG_DONE, 0, Buffer.alloc(0))])));
    assert.deepEqual(answer.extents, [{ sector: 0, countSectors: 16, hole: true, zero: true }]);
  });

  test('100000 alternating descriptors in one chunk: 1024 extents kept, the rest skipped', async () => {
    const descriptors = Array.from({ length: 100_000 },
      (_, index) => [512, index % 2 === 0 ? 0 : HOLE_ZERO] as const);
    await withFake(statusServer((req) => req.socket.write(blockStatusChunk(req.cookie,
      CONTEXT_ID, descriptors.slice(0, req.lengthBytes / 512), true)), 64 * 1024 * 1024),
    async (server) => {
      const device = await openNbdDevice(server.uri);
      const sizeSectors = device.sizeSectors;
      const first = await queryExtents(device, 0, sizeSectors);
      assert.equal(first.extents.length, EXTENTS_PER_QUERY_MAX);
      // Asked again from where the answer ended, the server's sector 0 is now sector 1024.
      const next = await queryExtents(device, EXTENTS_PER_QUERY_MAX, sizeSectors - EXTENTS_PER_QUERY_MAX);
      assert.equal(next.extents.length, EXTENTS_PER_QUERY_MAX);
      assert.deepEqual(next.extents[0], { sector: EXTENTS_PER_QUERY_MAX, countSectors: 1,
        hole: false, zero: false });
      assert.equal(device.broken, false);
      await device.close();
    });
  });

  test('an error chunk fails the query with the server errno; the device stays usable', async () => {
    let calls = 0;
    await withFake(statusServer((req) => {
      calls += 1;
      req.socket.write(calls === 1 ? errorChunk(req.cookie, 5, 'no status today', true) :
        blockStatusChunk(req.cookie, CONTEXT_ID, [[req.lengthBytes, 0]], true));
    }), async (server) => {
      const device = await openNbdDevice(server.uri);
      const failed = await queryExtents(device, 0, 8);
      assert.equal(failed.error?.errno, 'EIO');
      assert.match(String((failed.error?.cause as Error).message), /no status today/);
      const fine = await queryExtents(device, 0, 8);
      assert.deepEqual(fine.extents, [{ sector: 0, countSectors: 8, hole: false, zero: false }]);
      await device.close();
    });
  });
});

describe('BLOCK_STATUS replies that break the protocol', () => {
  test('a chunk claiming 2 GiB', async () => {
    await expectViolation((req) => req.socket.write(chunk(req.cookie, NBD_REPLY_FLAG_DONE,
      NBD_REPLY_TYPE_BLOCK_STATUS, Buffer.alloc(12), 0x80000004)), /impossible length/);
  });

  test('a chunk length that is not a context id and whole descriptors', async () => {
    await expectViolation((req) => req.socket.write(chunk(req.cookie, NBD_REPLY_FLAG_DONE,
      NBD_REPLY_TYPE_BLOCK_STATUS, Buffer.alloc(13))), /impossible length/);
    await expectViolation((req) => req.socket.write(chunk(req.cookie, NBD_REPLY_FLAG_DONE,
      NBD_REPLY_TYPE_BLOCK_STATUS, Buffer.alloc(4))), /impossible length/);
  });

  test('a descriptor of 0 bytes', async () => {
    await expectViolation((req) => req.socket.write(blockStatusChunk(req.cookie, CONTEXT_ID,
      [[4096, 0], [0, 0]], true)), /0 bytes/);
  });

  test('a context the client did not select', async () => {
    await expectViolation((req) => req.socket.write(blockStatusChunk(req.cookie, CONTEXT_ID + 1,
      [[4096, 0]], true)), /not selected/);
  });

  test('two status chunks for the context', async () => {
    await expectViolation((req) => req.socket.write(Buffer.concat([
      blockStatusChunk(req.cookie, CONTEXT_ID, [[4096, 0]], false),
      blockStatusChunk(req.cookie, CONTEXT_ID, [[4096, 0]], true)])), /second BLOCK_STATUS/);
  });

  test('success without any status chunk, simple or structured', async () => {
    await expectViolation((req) => req.socket.write(simpleReply(req.cookie, 0)), /carries no status/);
    await expectViolation((req) => req.socket.write(chunk(req.cookie, NBD_REPLY_FLAG_DONE, 0,
      Buffer.alloc(0))), /without a status/);
  });

  test('a status chunk answering a READ', async () => {
    await withFake({ metaContext: CONTEXT_ID, onRequest: (req) => {
      if (req.type === NBD_CMD_READ) {
        req.socket.write(blockStatusChunk(req.cookie, CONTEXT_ID, [[512, 0]], true));
      } else serveCorrectly(req);
    } }, async (server) => {
      const device = await openNbdDevice(server.uri);
      const error = await submit(device, request('read', 0, 1, [new Uint8Array(512)]), 3000);
      assert.ok(isDmIoError(error?.cause, 'DMIO_ERR_NBD_PROTOCOL'));
      assert.match(String((error?.cause as Error).message), /not BLOCK_STATUS/);
      await device.close();
    });
  });
});

describe('ReplyParser with a status reply split anywhere', () => {
  test('fed one byte at a time, the descriptors arrive whole and in order', () => {
    const target = new StatusTarget({ requestOffsetBytes: 0, sector: 0, countSectors: 64 });
    const state: ReplyState = { type: NBD_CMD_BLOCK_STATUS, offsetBytes: 0, readTarget: null,
      statusTarget: target, serverError: null };
    const finished: Array<ServerError | null> = [];
    const violations: string[] = [];
    const counters = newReplyCounters();
    const parser = new ReplyParser({
      find: (cookie) => (cookie === 1 ? state : undefined),
      finish: (_cookie, error) => finished.push(error),
      violation: (message) => violations.push(message),
    }, true, counters, CONTEXT_ID);
    const cookie = Buffer.from([0, 0, 0, 0, 0, 0, 0, 1]);
    const reply = blockStatusChunk(cookie, CONTEXT_ID,
      [[4096, 0], [700, HOLE_ZERO], [3396, HOLE_ZERO], [24576, 2]], true);
    for (let at = 0; at < reply.length; at += 1) parser.feed(reply.subarray(at, at + 1));
    assert.deepEqual(violations, []);
    assert.deepEqual(finished, [null]);
    assert.equal(counters.statusChunks, 1);
    assert.deepEqual(target.finish(), [
      { sector: 0, countSectors: 8, hole: false, zero: false },
      { sector: 8, countSectors: 8, hole: true, zero: true },
      { sector: 16, countSectors: 48, hole: false, zero: true },
    ]);
  });
});
