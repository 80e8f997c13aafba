// The transmission-phase read path without a server: `SocketInput` routing reads to the
// `ReplyParser`, driven exactly as Node drives a socket created with `onread` (ask for the
// buffer, fill at most its length, report the count, ask again). The streams are built with the
// fake server's wire helpers, and each is delivered split at every byte boundary, byte by
// byte, or in uneven reads, so every parser phase meets a read boundary and the direct reads
// into request memory start and stop at arbitrary points.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { newReplyCounters, ReplyParser } from '../src/nbd/reply-parser.js';
import type { ReplySink, ReplyState, ServerError } from '../src/nbd/reply-parser.js';
import { ReadTarget } from '../src/nbd/read-target.js';
import { SocketInput, STAGING_BYTES } from '../src/nbd/socket-input.js';
import { NBD_CMD_READ, NBD_CMD_WRITE, NBD_REPLY_FLAG_DONE } from '../src/nbd/protocol.js';
import type { NbdCommandType } from '../src/nbd/protocol.js';
import { pattern, split } from './helpers/device-io.js';
import { chunk, errorChunk, offsetDataChunk, simpleReply } from './helpers/fake-nbd-server.js';

const KiB = 1024;
const MiB = 1024 * KiB;

/** Requests in flight and how they ended, as `NbdConnection` keeps them. */
class RecordingSink implements ReplySink {
  readonly inflight = new Map<number, ReplyState>();
  readonly outcomes = new Map<number, ServerError | null>();
  readonly violations: string[] = [];

  read(cookie: number, offsetBytes: number, segments: readonly Uint8Array[]): void {
    const lengthBytes = segments.reduce((sum, segment) => sum + segment.length, 0);
    this.inflight.set(cookie, { type: NBD_CMD_READ, offsetBytes,
      readTarget: new ReadTarget(segments, lengthBytes), statusTarget: null, serverError: null });
  }

  other(cookie: number, type: NbdCommandType): void {
    this.inflight.set(cookie, { type, offsetBytes: 0, readTarget: null, statusTarget: null,
      serverError: null });
  }

  find(cookie: number): ReplyState | undefined {
    return this.inflight.get(cookie);
  }

  finish(cookie: number, error: ServerError | null): void {
    assert.ok(this.inflight.delete(cookie), `finish of cookie ${cookie} not in flight`);
    this.outcomes.set(cookie, error);
  }

  violation(message: string): void {
    this.violations.push(message);
  }
}

/** A receiving side: a sink, its parser, and the input the socket would read through. */
function receiver(structured = true): { sink: RecordingSink; input: SocketInput } {
  const sink = new RecordingSink();
  const input = new SocketInput();
  input.attach(new ReplyParser(sink, structured, newReplyCounters()));
  return { sink, input };
}

/** The 8 cookie bytes of `cookie`, as a server echoes them. */
function cookieBytes(cookie: number): Buffer {
  const bytes = Buffer.alloc(8);
  bytes.writeBigUInt64BE(BigInt(cookie));
  return bytes;
}

/**
 * Delivers `stream` as a socket with `onread` would: each read fills at most the buffer the
 * input offers and at most `limitOf(readIndex)` bytes. Returns the number of reads.
 */
function play(
  input: SocketInput, stream: Uint8Array, limitOf: (readIndex: number) => number,
): number {
  const nextBuffer = input.onread.buffer;
  assert.ok(typeof nextBuffer === 'function');
  let positionBytes = 0;
  let reads = 0;
  while (positionBytes < stream.length) {
    const buffer = nextBuffer();
    assert.ok(buffer.length > 0, 'the input offered an empty buffer');
    const readBytes = Math.min(buffer.length, stream.length - positionBytes, limitOf(reads));
    buffer.set(stream.subarray(positionBytes, positionBytes + readBytes));
    input.onread.callback(readBytes, buffer);
    positionBytes += readBytes;
    reads += 1;
  }
  return reads;
}

/** A deterministic xorshift32 stream of read sizes from 1 to `maxBytes`. */
function readSizes(seed: number, maxBytes: number): (readIndex: number) => number {
  let state = seed;
  return () => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return 1 + ((state >>> 0) % maxBytes);
  };
}

describe('SocketInput and ReplyParser, fed as Node feeds onread', () => {
  // A READ answered by two OFFSET_DATA chunks out of order (the first large enough to be read
  // directly), a WRITE's simple reply, and a READ failed by an ERROR chunk: 20 KiB in all.
  const disk = Buffer.from(pattern(0, 64 * KiB, 0x5eed));
  const readBytes = 20 * KiB;
  const stream = Buffer.concat([
    offsetDataChunk(cookieBytes(1), 4096 + 2 * KiB,
      disk.subarray(4096 + 2 * KiB, 4096 + readBytes), false),
    offsetDataChunk(cookieBytes(1), 4096, disk.subarray(4096, 4096 + 2 * KiB), true),
    simpleReply(cookieBytes(2), 0),
    errorChunk(cookieBytes(3), 5, 'bad sector', true),
  ]);

  function expectAllDone(
    sink: RecordingSink, out: Uint8Array, failed: Uint8Array, where: string,
  ): void {
    assert.deepEqual(sink.violations, [], where);
    assert.equal(sink.inflight.size, 0, where);
    assert.equal(sink.outcomes.get(1), null, where);
    assert.equal(sink.outcomes.get(2), null, where);
    assert.deepEqual(sink.outcomes.get(3), { errorNumber: 5, message: 'bad sector' }, where);
    assert.ok(Buffer.from(out).equals(disk.subarray(4096, 4096 + readBytes)),
      `READ bytes, ${where}`);
    assert.ok(failed.every((value) => value === 0xee), `failed READ untouched, ${where}`);
  }

  function run(limitOf: (readIndex: number) => number, where: string): SocketInput {
    const { sink, input } = receiver();
    const out = new Uint8Array(readBytes);
    const failed = new Uint8Array(4 * KiB).fill(0xee);
    sink.read(1, 4096, [out]);
    sink.other(2, NBD_CMD_WRITE);
    sink.read(3, 0, [failed]);
    play(input, stream, limitOf);
    expectAllDone(sink, out, failed, where);
    return input;
  }

  test('the stream split in two at every byte boundary', () => {
    let directRuns = 0;
    for (let splitBytes = 1; splitBytes < stream.length; splitBytes += 1) {
      const input = run((readIndex) => (readIndex === 0 ? splitBytes : Infinity),
        `split at ${splitBytes}`);
      if (input.directBytes > 0) directRuns += 1;
    }
    // A first read short of the large chunk's last 16 KiB leaves the rest to a direct read.
    assert.ok(directRuns > 0, 'some splits read payload straight into the request');
  });

  test('the stream read one byte at a time', () => {
    const input = run(() => 1, 'byte by byte');
    // Byte-sized reads into a direct view still count as direct; nothing is lost or repeated.
    assert.ok(input.directBytes > 0);
  });

  test('uneven reads of up to 7 KiB', () => {
    for (let seed = 1; seed <= 50; seed += 1) run(readSizes(seed, 7 * KiB), `seed ${seed}`);
  });

  test('a 4 MiB READ over many reads lands mostly by direct reads, split across segments', () => {
    const big = Buffer.from(pattern(0, 4 * MiB, 0xb16));
    const bigStream = Buffer.concat([
      offsetDataChunk(cookieBytes(7), 0, big, false),
      chunk(cookieBytes(7), NBD_REPLY_FLAG_DONE, 0, Buffer.alloc(0)),
    ]);
    for (let seed = 1; seed <= 4; seed += 1) {
      const { sink, input } = receiver();
      const out = new Uint8Array(4 * MiB);
      // Segments of 1 MiB, 3 KiB (too small for a direct read) and the rest.
      sink.read(7, 0, split(out, MiB, 3 * KiB, MiB + 5 * KiB, MiB - 8 * KiB));
      const reads = play(input, bigStream, readSizes(seed, 300 * KiB));
      assert.deepEqual(sink.violations, []);
      assert.equal(sink.outcomes.get(7), null);
      assert.ok(Buffer.from(out).equals(big), `seed ${seed}`);
      assert.ok(reads > 20, `${reads} reads`);
      // Staging takes the first read and, near each of the four segment ends (where less
      // than DIRECT_READ_BYTES_MIN of a segment is left), one read: at most five of them.
      assert.ok(input.directBytes >= 4 * MiB - 5 * STAGING_BYTES,
        `${input.directBytes} bytes direct`);
    }
  });

  test('segments below the direct-read minimum are always filled from staging', () => {
    const data = Buffer.from(pattern(0, 256 * KiB, 0x77));
    const smallStream = offsetDataChunk(cookieBytes(4), 0, data, true);
    const { sink, input } = receiver();
    const out = new Uint8Array(256 * KiB);
    sink.read(4, 0, split(out, ...Array.from({ length: 63 }, () => 4 * KiB)));
    play(input, smallStream, readSizes(3, 40 * KiB));
    assert.equal(sink.outcomes.get(4), null);
    assert.ok(Buffer.from(out).equals(data));
    assert.equal(input.directBytes, 0);
  });

  test('one read holds a whole reply and the start of the next reply\'s header', () => {
    const data = Buffer.from(pattern(0, 64 * KiB, 0x31));
    const twoReplies = Buffer.concat([
      simpleReply(cookieBytes(2), 0),
      offsetDataChunk(cookieBytes(1), 0, data, true),
    ]);
    const { sink, input } = receiver();
    const out = new Uint8Array(64 * KiB);
    sink.read(1, 0, [out]);
    sink.other(2, NBD_CMD_WRITE);
    const nextBuffer = input.onread.buffer;
    assert.ok(typeof nextBuffer === 'function');
    // The first read: the 16-byte simple reply plus 10 bytes of the chunk header.
    const first = nextBuffer();
    first.set(twoReplies.subarray(0, 26));
    input.onread.callback(26, first);
    assert.equal(sink.outcomes.get(2), null);
    assert.ok(sink.inflight.has(1), 'the READ waits for the rest of its header');
    play(input, twoReplies.subarray(26), () => Infinity);
    assert.equal(sink.outcomes.get(1), null);
    assert.ok(Buffer.from(out).equals(data));
    assert.ok(input.directBytes >= 64 * KiB - STAGING_BYTES);
  });

  test('simple replies (no structured replies) are read directly too', () => {
    const data = Buffer.from(pattern(0, 256 * KiB, 0x99));
    const simpleStream = Buffer.concat([
      simpleReply(cookieBytes(5), 0), data, simpleReply(cookieBytes(6), 0),
    ]);
    for (const limit of [1, 5000, 70 * KiB, Infinity]) {
      const { sink, input } = receiver(false);
      const out = new Uint8Array(256 * KiB);
      sink.read(5, 0, [out]);
      sink.other(6, NBD_CMD_WRITE);
      play(input, simpleStream, () => limit);
      assert.deepEqual(sink.violations, []);
      assert.equal(sink.outcomes.get(5), null);
      assert.equal(sink.outcomes.get(6), null);
      assert.ok(Buffer.from(out).equals(data), `limit ${limit}`);
      assert.ok(input.directBytes >= 256 * KiB - STAGING_BYTES, `limit ${limit}`);
    }
  });

  test('data after an error chunk is skipped through staging, never read into the request', () => {
    const data = Buffer.from(pattern(0, 128 * KiB, 0x42));
    const failing = Buffer.concat([
      errorChunk(cookieBytes(8), 28, 'no space', false),
      offsetDataChunk(cookieBytes(8), 0, data, true),
    ]);
    const { sink, input } = receiver();
    const out = new Uint8Array(128 * KiB).fill(0xee);
    sink.read(8, 0, [out]);
    play(input, failing, readSizes(8, 100 * KiB));
    assert.deepEqual(sink.outcomes.get(8), { errorNumber: 28, message: 'no space' });
    assert.ok(out.every((value) => value === 0xee));
    assert.equal(input.directBytes, 0);
  });

  test('a protocol violation stops the parser; later reads go to staging and are ignored', () => {
    const { sink, input } = receiver();
    sink.read(1, 0, [new Uint8Array(64 * KiB)]);
    const bad = Buffer.concat([offsetDataChunk(cookieBytes(9), 0, Buffer.alloc(64 * KiB), true)]);
    play(input, bad, () => 1000);
    assert.equal(sink.violations.length, 1);
    assert.match(sink.violations[0] ?? '', /unknown cookie 9/);
    assert.equal(input.directBytes, 0);
  });

  test('reads before a sink, and a sink swap while a direct view is out, are refused', () => {
    const input = new SocketInput();
    const nextBuffer = input.onread.buffer;
    assert.ok(typeof nextBuffer === 'function');
    const staging = nextBuffer();
    assert.equal(staging.length, STAGING_BYTES);
    assert.throws(() => input.onread.callback(1, staging), /before any sink/);
    const { sink, input: attached } = receiver();
    sink.read(1, 0, [new Uint8Array(64 * KiB)]);
    const header = offsetDataChunk(cookieBytes(1), 0, Buffer.alloc(64 * KiB), true).subarray(0, 28);
    play(attached, header, () => Infinity);
    const next = attached.onread.buffer;
    assert.ok(typeof next === 'function');
    assert.equal(next().length, 64 * KiB, 'a direct view of the whole payload');
    assert.throws(() => attached.attach(new ReplyParser(sink, true, newReplyCounters())),
      /direct view/);
  });
});
