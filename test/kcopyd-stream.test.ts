// dmKcopydCopyStream: an input of unknown length copied with kcopyd segment by segment, ending
// exactly at EOF or maxBytes; a destination too small fails with ENOSPC keeping what it got
// while the others complete; a partial last sector is refused or zero-padded; chunk hashes
// arrive at input offsets; a throwing input is a read error; with `sparse`, zero blocks of the
// input are skipped on a destination that reads zeros and zeroed on one that holds old data.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { describe, it } from 'node:test';
import { dmKcopydClientCreate, dmKcopydClientDestroy } from '../src/kcopyd/kcopyd.js';
import { dmKcopydCopyStream, KCOPYD_STREAM_SEGMENT_BYTES } from '../src/kcopyd/stream.js';
import { ramDevice, readBytes, request } from './kcopyd-helpers.js';

const MIB = 1024 * 1024;

/** An input that gives `bytes` in uneven pieces. */
function piecesOf(bytes: Buffer): Readable {
  const pieces: Buffer[] = [];
  for (let offset = 0, size = 1; offset < bytes.length; offset += size, size = size * 3 % 70001) {
    pieces.push(bytes.subarray(offset, offset + size));
  }
  return Readable.from(pieces);
}

describe('dmKcopydCopyStream', () => {
  it('copies to EOF across segments; a too-small destination fails alone', async (t) => {
    const kc = dmKcopydClientCreate({ subJobSectors: 2048 });
    t.after(() => dmKcopydClientDestroy(kc));
    const input = randomBytes(2 * KCOPYD_STREAM_SEGMENT_BYTES + 3 * MIB);
    const big = ramDevice(input.length / 512 + 64, 'big');
    const small = ramDevice(12 * MIB / 512, 'small');
    const seen: number[] = [];
    const result = await dmKcopydCopyStream(kc, piecesOf(input),
      [{ device: big, sector: 64 }, { device: small, sector: 0 }],
      { flush: true, onChunkRead: (sector) => seen.push(sector) });
    assert.equal(result.inputBytes, input.length);
    assert.equal(result.readErr, false);
    assert.equal(result.writeErr, 0b10n);
    assert.equal((result.writeErrors[1] as { errno?: string }).errno, 'ENOSPC');
    assert.equal(result.writtenBytes[0], input.length);
    assert.equal(result.writtenBytes[1], KCOPYD_STREAM_SEGMENT_BYTES, 'the segments that fit');
    assert.ok(Buffer.from(readBytes(big, 64, input.length / 512)).equals(input));
    assert.deepEqual(seen.sort((a, b) => a - b), Array.from({ length: input.length / MIB },
      (_, index) => index * 2048), 'chunk hashes at input offsets');
  });

  it('stops at maxBytes (truncated) and pads or refuses a partial last sector', async (t) => {
    const kc = dmKcopydClientCreate();
    t.after(() => dmKcopydClientDestroy(kc));
    const input = randomBytes(3 * MIB + 300);
    const dest = ramDevice(8 * MIB / 512, 'dest');
    const capped = await dmKcopydCopyStream(kc, piecesOf(input), [{ device: dest, sector: 0 }],
      { maxBytes: MIB });
    assert.deepEqual([capped.inputBytes, capped.truncated, capped.writtenBytes[0]],
      [MIB, true, MIB]);
    const padded = await dmKcopydCopyStream(kc, piecesOf(input), [{ device: dest, sector: 0 }],
      { partialSector: 'zero-pad' });
    assert.deepEqual([padded.inputBytes, padded.paddedBytes, padded.writtenBytes[0]],
      [input.length, 212, input.length + 212]);
    const back = Buffer.from(readBytes(dest, 0, (input.length + 212) / 512));
    assert.ok(back.subarray(0, input.length).equals(input));
    assert.ok(back.subarray(input.length).equals(Buffer.alloc(212)));
    const refused = await dmKcopydCopyStream(kc, piecesOf(input), [{ device: dest, sector: 0 }]);
    assert.equal(refused.readErr, true);
    assert.match(String((refused.readError?.cause as Error | undefined)?.message),
      /300 bytes into a sector/);
  });

  it('an input that throws is a read error; what came before is written', async (t) => {
    const kc = dmKcopydClientCreate();
    t.after(() => dmKcopydClientDestroy(kc));
    const dest = ramDevice(32 * MIB / 512, 'dest');
    async function* failing(): AsyncGenerator<Uint8Array> {
      yield Buffer.alloc(KCOPYD_STREAM_SEGMENT_BYTES, 7);
      yield Buffer.alloc(MIB, 8);
      throw new Error('the pipe broke');
    }
    const result = await dmKcopydCopyStream(kc, failing(), [{ device: dest, sector: 0 }]);
    assert.equal(result.readErr, true);
    assert.equal(result.writtenBytes[0], KCOPYD_STREAM_SEGMENT_BYTES);
  });
  it('an abort while the input stalls ends the copy without waiting for the input', async (t) => {
    const kc = dmKcopydClientCreate();
    t.after(() => dmKcopydClientDestroy(kc));
    const dest = ramDevice(32 * MIB / 512, 'dest');
    const controller = new AbortController();
    async function* stalling(): AsyncGenerator<Uint8Array> {
      yield Buffer.alloc(KCOPYD_STREAM_SEGMENT_BYTES + MIB, 7);
      setTimeout(() => controller.abort(new Error('stop')), 50);
      await new Promise(() => undefined);
    }
    const result = await dmKcopydCopyStream(kc, stalling(), [{ device: dest, sector: 0 }],
      { signal: controller.signal });
    assert.equal(result.aborted, true);
    assert.equal(result.readErr, false);
    assert.equal(result.writtenBytes[0], KCOPYD_STREAM_SEGMENT_BYTES);
    assert.equal(result.writeErr, 1n);
  });
  it('sparse: zero blocks skip a zero destination, zero an old one; bad holes refused unread', async (t) => {
    const kc = dmKcopydClientCreate({ subJobSectors: 2048 });
    t.after(() => dmKcopydClientDestroy(kc));
    // 20 MiB of input, three segments: data at 1 MiB, 9 MiB and the last 64 KiB, zeros elsewhere.
    const input = Buffer.alloc(20 * MIB);
    for (const atBytes of [MIB, 9 * MIB, 20 * MIB - 64 * 1024]) {
      randomBytes(64 * 1024).copy(input, atBytes);
    }
    const fresh = ramDevice(input.length / 512, 'fresh');
    const old = ramDevice(input.length / 512, 'old');
    assert.equal(old.submitSync(request('write', 0, input.length / 512,
      [Buffer.alloc(input.length, 0xcc)])), null);
    const result = await dmKcopydCopyStream(kc, piecesOf(input),
      [{ device: fresh, sector: 0 }, { device: old, sector: 0 }],
      { sparse: { holes: ['skip', 'write-zeroes'] } });
    assert.equal(result.writeErr, 0n);
    assert.deepEqual(result.writtenBytes, [input.length, input.length]);
    assert.ok(Buffer.from(readBytes(fresh, 0, input.length / 512)).equals(input));
    assert.ok(Buffer.from(readBytes(old, 0, input.length / 512)).equals(input));
    assert.ok(fresh.allocatedBytes <= 3 * 64 * 1024,
      `${fresh.allocatedBytes} bytes allocated for 192 KiB of data`);

    let pulled = false;
    async function* watched(): AsyncGenerator<Uint8Array> {
      pulled = true;
      yield input;
    }
    await assert.rejects(dmKcopydCopyStream(kc, watched(), [{ device: fresh, sector: 0 }],
      { sparse: { holes: ['skip', 'skip'] } }), { code: 'DMIO_ERR_INVALID_ARG_VALUE' });
    await assert.rejects(dmKcopydCopyStream(kc, watched(), [{ device: fresh, sector: 0 }],
      { sparse: { blockBytes: 3000 } }), { code: 'DMIO_ERR_INVALID_ARG_VALUE' });
    assert.equal(pulled, false, 'nothing read from an input whose copy was refused');
  });
});
