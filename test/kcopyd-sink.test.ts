// The stream sink device (createStreamSinkDevice) as kcopyd's destination: with writeSeq the
// stream gets the source's bytes in order even when reads complete out of order; a write that
// is not the next in order is refused with ESPIPE, a read with EBADF; a slow stream holds the
// copy back (bytes the stream has not taken never exceed kcopyd's pages); without zeroCopy a
// stream that keeps its chunks (a PassThrough) keeps correct bytes; a stream error is the
// destination's write error with its errno, and never an unhandled 'error'; flush: true runs
// the sink's flush after the last write, and a failed flush is a write error.

import assert from 'node:assert/strict';
import { PassThrough, Writable } from 'node:stream';
import { describe, it } from 'node:test';
import type { BlockDevice, DeviceDone, DeviceRequest } from '../src/devices/block-device.js';
import { createStreamSinkDevice } from '../src/devices/stream-sink-device.js';
import { dmKcopydClientCreate, dmKcopydClientDestroy } from '../src/kcopyd/kcopyd.js';
import { dmKcopydCopy } from '../src/kcopyd/submit.js';
import { patternDevice, readBytes, request } from './kcopyd-helpers.js';

const SUB_JOB_SECTORS = 64;
/** kcopyd's pages with the default fresh pool: the reserve plus 7 sub-jobs. */
const CLIENT_PAGE_BYTES = 8 * SUB_JOB_SECTORS * 512;

/** `device` with its reads completed out of order: after a delay from 0 to 3 ms, 20 ms at sector 0. */
function shuffledReads(device: BlockDevice): BlockDevice {
  let state = 7;
  return {
    name: device.name, kind: device.kind, sizeSectors: device.sizeSectors,
    readOnly: device.readOnly, limits: device.limits, canBlock: false,
    get closed() {
      return device.closed;
    },
    submit(req: DeviceRequest, done: DeviceDone) {
      state = (state * 1103515245 + 12345) % 2147483648;
      // The first chunk's read always completes last; the others in a pseudo-random order.
      const delayMs = req.sector === 0 ? 20 : (state >>> 16) % 4;
      device.submit(req, (error) => setTimeout(() => done(error), delayMs));
    },
    close: () => device.close(),
  };
}

/** A writable that keeps what it is given and takes each chunk after `delayMs`. */
function collector(delayMs = 0): { writable: Writable; bytes: () => Buffer } {
  const chunks: Buffer[] = [];
  const writable = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      chunks.push(Buffer.from(chunk));
      if (delayMs === 0) callback();
      else setTimeout(callback, delayMs);
    },
  });
  return { writable, bytes: () => Buffer.concat(chunks) };
}

async function copyToSink(source: BlockDevice, sink: BlockDevice, sectors: number,
  options: { writeSeq?: boolean; flush?: boolean } = {}) {
  const kc = dmKcopydClientCreate({ subJobSectors: SUB_JOB_SECTORS });
  try {
    return await dmKcopydCopy(kc, { device: source, sector: 0, count: sectors },
      [{ device: sink, sector: 0, count: sectors }],
      { writeSeq: options.writeSeq ?? true, flush: options.flush ?? false });
  } finally {
    await dmKcopydClientDestroy(kc);
  }
}

describe('stream sink device', () => {
  it('gets the bytes in order with writeSeq while reads complete out of order', async () => {
    const sectors = 4096;
    const source = patternDevice(sectors, 3);
    const { writable, bytes } = collector();
    const sink = createStreamSinkDevice(writable, { sizeBytes: sectors * 512 });
    const result = await copyToSink(shuffledReads(source), sink, sectors);
    assert.equal(result.writeErr, 0n);
    assert.equal(result.writtenBytes[0], sectors * 512);
    assert.equal(sink.takenBytes, sectors * 512);
    assert.ok(bytes().equals(readBytes(source, 0, sectors)));
    await sink.close();
  });

  it('refuses a write out of order (ESPIPE), reads (EBADF) and special operations', async () => {
    const { writable, bytes } = collector();
    const sink = createStreamSinkDevice(writable, { sizeBytes: 64 * 512, name: 'out' });
    const submit = (req: DeviceRequest) => new Promise<unknown>((resolve) => {
      sink.submit(req, resolve);
    });
    const ahead = await submit(request('write', 8, 8, [new Uint8Array(4096).fill(2)]));
    assert.equal((ahead as { errno?: string }).errno, 'ESPIPE');
    assert.equal(await submit(request('write', 0, 8, [new Uint8Array(4096).fill(1)])), null);
    assert.equal(await submit(request('write', 8, 8, [new Uint8Array(4096).fill(2)])), null);
    const again = await submit(request('write', 0, 8, [new Uint8Array(4096)]));
    assert.equal((again as { errno?: string }).errno, 'ESPIPE');
    const read = await submit(request('read', 16, 8, [new Uint8Array(4096)]));
    assert.equal((read as { errno?: string }).errno, 'EBADF');
    const discard = await submit(request('discard', 16, 8));
    assert.equal((discard as { errno?: string }).errno, 'EOPNOTSUPP');
    const pastEnd = await submit(request('write', 16, 64, [new Uint8Array(64 * 512)]));
    assert.equal((pastEnd as { errno?: string }).errno, 'EIO');
    assert.deepEqual([...bytes()], [...new Uint8Array(4096).fill(1), ...new Uint8Array(4096).fill(2)]);
    await sink.close();
  });

  it('without writeSeq, a write that arrives early fails the destination', async () => {
    const sectors = 2048;
    const source = patternDevice(sectors, 5);
    const { writable, bytes } = collector();
    const sink = createStreamSinkDevice(writable, { sizeBytes: sectors * 512 });
    const result = await copyToSink(shuffledReads(source), sink, sectors, { writeSeq: false });
    assert.equal(result.writeErr, 1n);
    assert.equal((result.writeErrors[0] as { errno?: string }).errno, 'ESPIPE');
    // What the stream got is a prefix of the source, never bytes out of place.
    const got = bytes();
    assert.ok(got.equals(Buffer.from(readBytes(source, 0, sectors)).subarray(0, got.length)));
    await sink.close();
  });

  it('a slow stream holds the copy back: bytes not yet taken stay within kcopyd\'s pages',
    async () => {
      const sectors = 8192;
      const source = patternDevice(sectors, 9);
      const { writable, bytes } = collector(2);
      let maxPendingBytes = 0;
      const write = writable.write.bind(writable);
      writable.write = ((chunk: Uint8Array, callback: (error?: Error | null) => void) => {
        const accepted = write(chunk, callback);
        maxPendingBytes = Math.max(maxPendingBytes, writable.writableLength);
        return accepted;
      }) as typeof writable.write;
      const sink = createStreamSinkDevice(writable, { sizeBytes: sectors * 512, zeroCopy: true });
      const result = await copyToSink(source, sink, sectors);
      assert.equal(result.writeErr, 0n);
      assert.ok(bytes().equals(readBytes(source, 0, sectors)));
      assert.ok(maxPendingBytes > SUB_JOB_SECTORS * 512, `the stream pushed back: ${maxPendingBytes}`);
      assert.ok(maxPendingBytes <= CLIENT_PAGE_BYTES,
        `${maxPendingBytes} bytes waited in the stream; kcopyd has ${CLIENT_PAGE_BYTES}`);
      await sink.close();
    });

  it('copies each chunk by default, so a stream that keeps chunks keeps the right bytes',
    async () => {
      const sectors = 2048;
      const source = patternDevice(sectors, 11);
      // Buffers everything without a reader: it keeps every chunk it was given.
      const pass = new PassThrough({ highWaterMark: 4 * sectors * 512 });
      const sink = createStreamSinkDevice(pass, { sizeBytes: sectors * 512 });
      const result = await copyToSink(source, sink, sectors);
      assert.equal(result.writeErr, 0n);
      pass.end();
      const chunks: Buffer[] = [];
      for await (const chunk of pass) chunks.push(chunk as Buffer);
      assert.ok(Buffer.concat(chunks).equals(readBytes(source, 0, sectors)));
      await sink.close();
    });

  it('a stream error is the destination\'s write error with its errno, never a crash',
    async () => {
      const sectors = 2048;
      const source = patternDevice(sectors, 13);
      let takenBytes = 0;
      const full = new Writable({
        write(chunk: Buffer, _encoding, callback) {
          if (takenBytes >= 64 * 1024) {
            callback(Object.assign(new Error('ENOSPC: no space left on device, write'),
              { code: 'ENOSPC' }));
            return;
          }
          takenBytes += chunk.length;
          callback();
        },
      });
      const sink = createStreamSinkDevice(full, { sizeBytes: sectors * 512, name: 'full' });
      const result = await copyToSink(source, sink, sectors);
      assert.equal(result.writeErr, 1n);
      const error = result.writeErrors[0] as { errno?: string; device?: string };
      assert.equal(error.errno, 'ENOSPC');
      assert.equal(error.device, 'full');
      assert.equal(result.writtenBytes[0], 64 * 1024);
      assert.equal(sink.takenBytes, 64 * 1024);
      assert.equal((sink.streamError as { code?: string }).code, 'ENOSPC');
      // Later writes fail at once with the same errno.
      const late = await new Promise<unknown>((resolve) => {
        sink.submit(request('write', sink.takenBytes / 512, 8, [new Uint8Array(4096)]), resolve);
      });
      assert.equal((late as { errno?: string }).errno, 'ENOSPC');
      await sink.close();
    });

  it('flush: true runs the sink\'s flush after the last write; a failed flush fails it',
    async () => {
      const sectors = 1024;
      const source = patternDevice(sectors, 17);
      const { writable, bytes } = collector(1);
      const flushedAt: number[] = [];
      const sink = createStreamSinkDevice(writable, { sizeBytes: sectors * 512,
        flush: () => {
          flushedAt.push(bytes().length);
          return Promise.resolve();
        } });
      assert.equal(sink.limits.flush, true);
      const result = await copyToSink(source, sink, sectors, { flush: true });
      assert.equal(result.writeErr, 0n);
      assert.deepEqual(flushedAt, [sectors * 512]);
      await sink.close();

      const failing = createStreamSinkDevice(collector().writable, { sizeBytes: sectors * 512,
        flush: () => Promise.reject(Object.assign(new Error('EIO'), { code: 'EIO' })) });
      const failed = await copyToSink(source, failing, sectors, { flush: true });
      assert.equal(failed.writeErr, 1n);
      assert.equal((failed.writeErrors[0] as { syscall?: string }).syscall, 'flush');
      assert.equal(failed.writtenBytes[0], 0);
      await failing.close();
    });

  it('refuses a writable without write and a size that is not whole sectors', () => {
    assert.throws(() => createStreamSinkDevice({} as Writable, { sizeBytes: 512 }),
      { code: 'DMIO_ERR_INVALID_ARG_TYPE' });
    assert.throws(() => createStreamSinkDevice(collector().writable, { sizeBytes: 1000 }),
      { code: 'DMIO_ERR_MISALIGNED' });
  });
});
