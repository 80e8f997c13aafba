// NBD device against real nbdkit servers: round trips of every operation checked byte-exact
// with nbdcopy, pipelining under tight in-flight bounds, simple replies, multi-conn, advertised
// block sizes, read-only exports, EXPORT_NAME fallback, and open failures.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { isDmIoError, NbdError } from '../src/errors.js';
import { openNbdDevice } from '../src/nbd/open-nbd.js';
import type { NbdDevice } from '../src/nbd/nbd-device.js';
import { flushRequest, pattern, request, split, submit } from './helpers/device-io.js';
import { makeTempDir, requireTools, startNbdkit, unixUri, type NbdServer } from './helpers/nbdkit.js';

const MiB = 1024 * 1024;

/** Copies the whole export into a file with nbdcopy and returns its bytes. */
function dumpWithNbdcopy(server: NbdServer): Buffer {
  const file = path.join(server.dir, 'dump.img');
  execFileSync('nbdcopy', [server.uri, file], { stdio: 'pipe' });
  return readFileSync(file);
}

/** Lines of an nbdkit log filter file that record a command (Read, Write, Trim, Zero, Flush). */
function loggedCommands(server: NbdServer, command: string): string[] {
  const text = readFileSync(path.join(server.dir, 'log'), 'utf8');
  return text.split('\n').filter((line) => new RegExp(`connection=\\d+ ${command} id=`).test(line));
}

/** Runs `body` against an nbdkit started with `args` (a function of the server's directory). */
async function withServer(
  args: readonly string[] | ((dir: string) => readonly string[]),
  body: (server: NbdServer) => Promise<void>,
): Promise<void> {
  const dir = makeTempDir();
  const server = await startNbdkit(typeof args === 'function' ? args(dir) : args, { dir });
  try {
    await body(server);
  } finally {
    await server.stop();
  }
}

describe('nbdkit memory', () => {
  test('read, write, discard, write-zeroes, flush and FUA round trip byte-exact', async (t) => {
    if (!requireTools(t, 'nbdkit', 'nbdcopy')) return;
    const sizeBytes = 16 * MiB;
    await withServer((dir) => ['--filter=log', 'memory', '16M', `logfile=${path.join(dir, 'log')}`], async (server) => {
      const device = await openNbdDevice(server.uri);
      assert.equal(device.sizeSectors, sizeBytes / 512);
      assert.equal(device.kind, 'nbd');
      assert.equal(device.canBlock, false);
      assert.equal(device.limits.memoryAlignmentBytes, 0);
      assert.ok(device.limits.flush && device.limits.fua);
      assert.ok(device.limits.maxDiscardSectors > 0 && device.limits.maxWriteZeroesSectors > 0);
      const model = Buffer.alloc(sizeBytes);
      // 1 MiB write in three uneven segments at 3 MiB, then an FUA write, then preflush+write.
      const first = pattern(3 * MiB, MiB, 0x1234);
      assert.equal(await submit(device, request('write', 6144, 2048, split(first, 4096, 512))), null);
      model.set(first, 3 * MiB);
      const fuaData = pattern(8 * MiB, 64 * 1024, 7);
      assert.equal(await submit(device, request('write', 16384, 128, [fuaData], { fua: true })), null);
      model.set(fuaData, 8 * MiB);
      const tail = pattern(sizeBytes - 4096, 4096, 9);
      assert.equal(await submit(device, request('write', sizeBytes / 512 - 8, 8, [tail],
        { preflush: true })), null);
      model.set(tail, sizeBytes - 4096);
      // Read back across segment shapes different from the write.
      const readBack = new Uint8Array(MiB + 8192);
      assert.equal(await submit(device, request('read', 6144 - 8, 2048 + 16,
        split(readBack, 1000 + 24, 3072, 65536))), null);
      assert.deepEqual(Buffer.from(readBack), model.subarray(3 * MiB - 4096, 4 * MiB + 4096));
      // Discard and write-zeroes inside the first write, then a pure flush.
      assert.equal(await submit(device, request('discard', 6144, 256)), null);
      model.fill(0, 3 * MiB, 3 * MiB + 128 * 1024);
      assert.equal(await submit(device, request('write-zeroes', 6144 + 1024, 64, [], { fua: true })), null);
      model.fill(0, 3 * MiB + 512 * 1024, 3 * MiB + 512 * 1024 + 32768);
      assert.equal(await submit(device, flushRequest()), null);
      await device.close();
      assert.deepEqual(dumpWithNbdcopy(server).equals(model), true, 'nbdcopy sees the model');
      const writes = loggedCommands(server, 'Write');
      assert.ok(writes.some((line) => /count=0x10000 fua=1/.test(line)), 'FUA write sent with FUA');
      assert.ok(loggedCommands(server, 'Flush').length >= 2, 'preflush and pure flush sent FLUSH');
      assert.equal(loggedCommands(server, 'Trim').length, 1);
      assert.ok(loggedCommands(server, 'Zero').some((line) => /fua=1/.test(line)));
    });
  });

  test('FUA is emulated with a FLUSH after the write when the server lacks SEND_FUA', async (t) => {
    if (!requireTools(t, 'nbdkit')) return;
    // nbdkit 1.32's fua filter rejects fuamode=none; an eval plugin says can_fua=none instead.
    await withServer((dir) => ['--filter=log', 'eval', `logfile=${path.join(dir, 'log')}`,
      'get_size=echo 1M', 'pread=dd if=/dev/zero count=$3 iflag=count_bytes status=none',
      'can_write=exit 0', 'pwrite=cat >/dev/null', 'can_flush=exit 0', 'flush=exit 0',
      'can_fua=echo none'], async (server) => {
      const device = await openNbdDevice(server.uri);
      assert.equal(device.transmissionFlags & 0x8, 0, 'no SEND_FUA advertised');
      assert.equal(device.limits.fua, true);
      assert.equal(await submit(device, request('write', 0, 8, [pattern(0, 4096)], { fua: true })), null);
      await device.close();
      const log = readFileSync(path.join(server.dir, 'log'), 'utf8');
      const write = log.indexOf(' Write id=');
      assert.ok(write >= 0 && log.indexOf(' Flush id=', write) > write, 'Flush follows the write');
      assert.ok(!/Write id=.* fua=1/.test(log));
    });
  });

  test('many requests pipelined under tight in-flight bounds, FIFO overflow refused', async (t) => {
    if (!requireTools(t, 'nbdkit')) return;
    await withServer(['memory', '64M'], async (server) => {
      const device = await openNbdDevice(server.uri, { inflightRequestsMax: 4,
        inflightBytesMax: 256 * 1024, queuedRequestsMax: 300 });
      const chunkBytes = 64 * 1024;
      const writes = [];
      let peak = 0;
      for (let index = 0; index < 256; index += 1) {
        const sector = ((index * 37) % 1000) * 128;
        writes.push(submit(device, request('write', sector, 128, [pattern(sector * 512, chunkBytes, 3)])));
        peak = Math.max(peak, device.inflightCommands);
      }
      assert.ok(peak <= 4 + 300);
      assert.deepEqual((await Promise.all(writes)).filter((error) => error !== null), []);
      // Overflow: 4 in flight + 300 waiting; the next ones fail at once with EAGAIN.
      const flood = [];
      for (let index = 0; index < 310; index += 1) {
        flood.push(submit(device, request('read', 0, 128, [new Uint8Array(chunkBytes)])));
      }
      const results = await Promise.all(flood);
      const refused = results.filter((error) => error !== null);
      assert.ok(refused.length >= 6, `refused ${refused.length}`);
      for (const error of refused) assert.equal(error?.errno, 'EAGAIN');
      // Verify the data in parallel reads.
      const reads = [];
      for (let index = 0; index < 1000; index += 97) {
        const buffer = new Uint8Array(chunkBytes);
        reads.push(submit(device, request('read', index * 128, 128, [buffer])).then((error) => {
          assert.equal(error, null);
          const written = [...Array(256).keys()].some((w) => (w * 37) % 1000 === index);
          const expected = written ? pattern(index * 128 * 512, chunkBytes, 3) : new Uint8Array(chunkBytes);
          assert.deepEqual(buffer, expected);
        }));
      }
      await Promise.all(reads);
      await device.close();
    });
  });

  test('simple replies (--no-sr) and in-order server (-t 1)', async (t) => {
    if (!requireTools(t, 'nbdkit')) return;
    await withServer(['--no-sr', '-t', '1', 'memory', '8M'], async (server) => {
      const device = await openNbdDevice(server.uri);
      assert.equal(device.structuredReplies, false);
      const data = pattern(4096, 3 * 4096, 11);
      const jobs = [submit(device, request('write', 8, 24, split(data, 100 * 0 + 512, 4096)))];
      jobs.push(submit(device, request('write', 1024, 8, [pattern(0, 4096, 2)])));
      assert.deepEqual(await Promise.all(jobs), [null, null]);
      const out = new Uint8Array(3 * 4096);
      assert.equal(await submit(device, request('read', 8, 24, split(out, 512, 512, 8192))), null);
      assert.deepEqual(out, data);
      const miss = await submit(device, request('read', 16384 - 8, 16, [new Uint8Array(8192)]));
      assert.equal(miss?.errno, 'EIO', 'past end refused locally');
      await device.close();
    });
  });

  test('structuredReplies: false forces simple replies on an SR-capable server', async (t) => {
    if (!requireTools(t, 'nbdkit')) return;
    await withServer(['memory', '8M'], async (server) => {
      const device = await openNbdDevice(server.uri, { structuredReplies: false });
      assert.equal(device.structuredReplies, false);
      const data = pattern(0, 65536, 5);
      assert.equal(await submit(device, request('write', 0, 128, [data])), null);
      const out = new Uint8Array(65536);
      assert.equal(await submit(device, request('read', 0, 128, [out])), null);
      assert.deepEqual(out, data);
      await device.close();
    });
  });

  test('multi-conn spreads requests over several connections when the server allows', async (t) => {
    if (!requireTools(t, 'nbdkit', 'nbdcopy')) return;
    await withServer((dir) => ['--filter=log', 'memory', '16M', `logfile=${path.join(dir, 'log')}`], async (server) => {
      const device = await openNbdDevice(server.uri, { connections: 4 });
      assert.equal(device.connectionCount, 4);
      const model = Buffer.alloc(16 * MiB);
      const jobs = [];
      for (let index = 0; index < 64; index += 1) {
        const data = pattern(index * 256 * 1024, 256 * 1024, 21);
        model.set(data, index * 256 * 1024);
        jobs.push(submit(device, request('write', index * 512, 512, [data])));
      }
      assert.deepEqual((await Promise.all(jobs)).filter((error) => error !== null), []);
      assert.equal(await submit(device, flushRequest()), null);
      await device.close();
      const perConnection = new Set(loggedCommands(server, 'Write').map((line) => line.split(' ')[2]));
      assert.ok(perConnection.size >= 2, `writes used ${perConnection.size} connections`);
      assert.ok(dumpWithNbdcopy(server).equals(model));
    });
  });

  test('multi-conn fills connections in order: a moderate read queue stays on one', async (t) => {
    if (!requireTools(t, 'nbdkit')) return;
    await withServer((dir) => ['--filter=log', 'memory', '64M', `logfile=${path.join(dir, 'log')}`], async (server) => {
      const device = await openNbdDevice(server.uri, { connections: 4 });
      assert.equal(device.connectionCount, 4);
      const readAll = async (count: number): Promise<void> => {
        const errors = await Promise.all(Array.from({ length: count }, (_, index) =>
          submit(device, request('read', index * 2048, 2048, [new Uint8Array(MiB)]))));
        assert.deepEqual(errors.filter((error) => error !== null), []);
      };
      // 16 × 1 MiB: exactly the per-connection target, so one connection carries them all.
      await readAll(16);
      const first = new Set(loggedCommands(server, 'Read').map((line) => line.split(' ')[2]));
      assert.equal(first.size, 1, `16 reads used ${first.size} connections`);
      // 48 × 1 MiB fill three connections' targets.
      await readAll(48);
      const later = new Set(loggedCommands(server, 'Read').map((line) => line.split(' ')[2]));
      assert.ok(later.size >= 3, `48 reads used ${later.size} connections`);
      // Commands without a payload never reach the byte target; the command target spreads them.
      const zeroErrors = await Promise.all(Array.from({ length: 48 }, (_, index) =>
        submit(device, request('write-zeroes', index * 8, 8))));
      assert.deepEqual(zeroErrors.filter((error) => error !== null), []);
      const zeroes = new Set(loggedCommands(server, 'Zero').map((line) => line.split(' ')[2]));
      assert.ok(zeroes.size >= 3, `48 write-zeroes used ${zeroes.size} connections`);
      await device.close();
    });
  });

  test('multi-conn falls back to one connection without CAN_MULTI_CONN', async (t) => {
    if (!requireTools(t, 'nbdkit')) return;
    await withServer(['--filter=multi-conn', 'memory', '8M', 'multi-conn-mode=disable'], async (server) => {
      const device = await openNbdDevice(server.uri, { connections: 4 });
      assert.equal(device.connectionCount, 1);
      await device.close();
    });
  });

  test('advertised block sizes become limits; violations are refused without sending', async (t) => {
    if (!requireTools(t, 'nbdkit')) return;
    await withServer((dir) => ['--filter=log', '--filter=blocksize-policy', 'memory', '16M',
      `logfile=${path.join(dir, 'log')}`, 'blocksize-minimum=4096', 'blocksize-preferred=64K',
      'blocksize-maximum=1M', 'blocksize-error-policy=error'], async (server) => {
      const device = await openNbdDevice(server.uri);
      assert.deepEqual(device.blockSizes, { minimumBytes: 4096, preferredBytes: 65536,
        maximumBytes: MiB });
      assert.equal(device.limits.logicalBlockBytes, 4096);
      assert.equal(device.limits.physicalBlockBytes, 65536);
      assert.equal(device.limits.maxSectorsPerRequest, 2048);
      const data = pattern(0, MiB, 1);
      assert.equal(await submit(device, request('write', 0, 2048, [data])), null);
      const out = new Uint8Array(MiB);
      assert.equal(await submit(device, request('read', 0, 2048, [out])), null);
      assert.deepEqual(out, data);
      const misaligned = await submit(device, request('read', 1, 8, [new Uint8Array(4096)]));
      assert.equal(misaligned?.errno, 'EINVAL');
      const oversized = await submit(device, request('read', 0, 4096, [new Uint8Array(2 * MiB)]));
      assert.equal(oversized?.errno, 'EINVAL');
      await device.close();
      assert.equal(loggedCommands(server, 'Read').length, 1, 'only the valid read was sent');
    });
  });

  test('a read-only export makes the device read-only; writes never reach the server', async (t) => {
    if (!requireTools(t, 'nbdkit')) return;
    await withServer((dir) => ['-r', '--filter=log', 'pattern', '8M', `logfile=${path.join(dir, 'log')}`], async (server) => {
      const device = await openNbdDevice(server.uri);
      assert.equal(device.readOnly, true);
      for (const op of ['write', 'discard', 'write-zeroes'] as const) {
        const error = await submit(device, request(op, 0, 8, op === 'write' ? [new Uint8Array(4096)] : []));
        assert.ok(error !== null && (error.errno === 'EROFS' || error.errno === 'EOPNOTSUPP'), op);
      }
      const out = new Uint8Array(4096);
      assert.equal(await submit(device, request('read', 8, 8, [out])), null);
      // The pattern plugin stores each 8-byte word's own offset, big-endian.
      assert.equal(Buffer.from(out).readBigUInt64BE(8), 4096n + 8n);
      await device.close();
      assert.equal(loggedCommands(server, 'Write').length, 0);
      assert.equal(loggedCommands(server, '(Trim|Zero)').length, 0);
    });
  });

  test('readOnly option on a writable export refuses writes locally', async (t) => {
    if (!requireTools(t, 'nbdkit')) return;
    await withServer(['memory', '8M'], async (server) => {
      const device = await openNbdDevice(server.uri, { readOnly: true });
      assert.equal(device.readOnly, true);
      const error = await submit(device, request('write', 0, 8, [new Uint8Array(4096)]));
      assert.equal(error?.errno, 'EROFS');
      assert.ok(isDmIoError(error?.cause, 'DMIO_ERR_READ_ONLY'));
      await device.close();
    });
  });

  test('EXPORT_NAME fallback against a plain-newstyle server (--mask-handshake=0)', async (t) => {
    if (!requireTools(t, 'nbdkit')) return;
    await withServer(['--mask-handshake=0', 'memory', '8M'], async (server) => {
      const device = await openNbdDevice(server.uri);
      assert.equal(device.negotiation, 'export-name');
      assert.equal(device.structuredReplies, false);
      assert.equal(device.blockSizes, null);
      const data = pattern(0, 8192, 4);
      assert.equal(await submit(device, request('write', 16, 16, [data])), null);
      const out = new Uint8Array(8192);
      assert.equal(await submit(device, request('read', 16, 16, [out])), null);
      assert.deepEqual(out, data);
      await device.close();
    });
  });

  test('a missing export is a clear NbdError; a missing socket is an OpenError', async (t) => {
    if (!requireTools(t, 'nbdkit')) return;
    await withServer(['--filter=exportname', 'memory', '8M', 'exportname=disk1',
      'exportname-strict=true'], async (server) => {
      const wrong = unixUri(server.socketPath, 'nosuch');
      await assert.rejects(openNbdDevice(wrong), (error: unknown) => {
        assert.ok(error instanceof NbdError);
        assert.equal(error.code, 'DMIO_ERR_NBD_SERVER');
        assert.match(error.message, /no such export "nosuch"/);
        return true;
      });
      const device = await openNbdDevice(unixUri(server.socketPath, 'disk1'));
      assert.equal(device.exportName, 'disk1');
      await device.close();
    });
    const dir = makeTempDir();
    await assert.rejects(openNbdDevice(unixUri(path.join(dir, 'absent.sock'))),
      (error: unknown) => isDmIoError(error, 'DMIO_ERR_OPEN_FAILED') &&
        (error as { errno?: string }).errno === 'ENOENT');
    execFileSync('rm', ['-rf', dir]);
  });

  test('close is idempotent, waits for requests, and later submits fail at once', async (t) => {
    if (!requireTools(t, 'nbdkit')) return;
    await withServer(['--filter=delay', 'memory', '8M', 'rdelay=200ms'], async (server) => {
      const device: NbdDevice = await openNbdDevice(server.uri);
      const pending = submit(device, request('read', 0, 8, [new Uint8Array(4096)]));
      const first = device.close();
      const second = device.close();
      assert.equal(first, second);
      assert.equal(device.closed, true);
      const late = await submit(device, request('read', 0, 8, [new Uint8Array(4096)]));
      assert.ok(isDmIoError(late?.cause, 'DMIO_ERR_DEVICE_CLOSED'));
      await first;
      assert.equal(await pending, null, 'the request in flight completed before close resolved');
      assert.equal(device.connectionCount, 0);
    });
  });
});
