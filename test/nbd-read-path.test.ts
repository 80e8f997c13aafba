// The READ path against real servers and real sockets: nbdkit memory filled with random bytes
// by nbdcopy, read back through the device the way the bench does (1 MiB reads, 16 in flight,
// four connections) and through a raw connection (8 MiB reads into one buffer, which the
// socket fills directly, and into 4 KiB pages, which it cannot); and a test server that drips a
// large READ reply in uneven pieces, so direct reads start and stop mid-payload on a socket.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { connectNbd } from '../src/nbd/connect.js';
import type { CommandOutcome, NbdConnection } from '../src/nbd/connection.js';
import { openNbdDevice } from '../src/nbd/open-nbd.js';
import { NBD_CMD_READ, NBD_REPLY_FLAG_DONE } from '../src/nbd/protocol.js';
import { newReplyCounters } from '../src/nbd/reply-parser.js';
import { STAGING_BYTES } from '../src/nbd/socket-input.js';
import { parseNbdUri } from '../src/nbd/uri.js';
import { request, split, submit } from './helpers/device-io.js';
import {
  chunk, offsetDataChunk, serveCorrectly, startFakeServer,
} from './helpers/fake-nbd-server.js';
import { makeTempDir, requireTools, startNbdkit, type NbdServer } from './helpers/nbdkit.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const EXPORT_BYTES = 64 * MiB;

/** Runs `body` against nbdkit memory holding `EXPORT_BYTES` random bytes (also returned). */
async function withRandomExport(
  body: (server: NbdServer, disk: Buffer) => Promise<void>,
): Promise<void> {
  const dir = makeTempDir();
  const server = await startNbdkit(['memory', String(EXPORT_BYTES)], { dir });
  try {
    const disk = randomBytes(EXPORT_BYTES);
    const source = path.join(dir, 'source.img');
    writeFileSync(source, disk);
    execFileSync('nbdcopy', [source, server.uri], { stdio: 'pipe' });
    await body(server, disk);
  } finally {
    await server.stop();
  }
}

/** Sends one READ on a raw connection and resolves with its outcome. */
function readRaw(
  connection: NbdConnection, offsetBytes: number, segments: readonly Uint8Array[],
): Promise<CommandOutcome> {
  const lengthBytes = segments.reduce((sum, segment) => sum + segment.length, 0);
  return new Promise((resolve) => connection.send({ type: NBD_CMD_READ, commandFlags: 0,
    offsetBytes, lengthBytes, segments, done: resolve }));
}

describe('READ path on real sockets', () => {
  test('1 MiB reads, 16 in flight over four connections, byte-exact', async (t) => {
    if (!requireTools(t, 'nbdkit', 'nbdcopy')) return;
    await withRandomExport(async (server, disk) => {
      const device = await openNbdDevice(server.uri, { connections: 4, readOnly: true });
      assert.equal(device.connectionCount, 4);
      const slots = Array.from({ length: 16 }, () => new Uint8Array(MiB));
      for (let first = 0; first < EXPORT_BYTES / MiB; first += slots.length) {
        const errors = await Promise.all(slots.map((slot, index) =>
          submit(device, request('read', (first + index) * 2048, 2048, [slot.fill(0xee)]))));
        assert.deepEqual(errors.filter((error) => error !== null), []);
        slots.forEach((slot, index) => {
          const offsetBytes = (first + index) * MiB;
          assert.ok(Buffer.from(slot).equals(disk.subarray(offsetBytes, offsetBytes + MiB)),
            `MiB ${first + index}`);
        });
      }
      assert.equal(device.replies.dataChunks, EXPORT_BYTES / MiB);
      await device.close();
    });
  });

  test('8 MiB reads: one buffer read directly, 4 KiB pages through staging', async (t) => {
    if (!requireTools(t, 'nbdkit', 'nbdcopy')) return;
    await withRandomExport(async (server, disk) => {
      const connection = await connectNbd(parseNbdUri(server.uri), { uri: server.uri,
        connectTimeoutMs: 5000, requestTimeoutMs: 10000, structuredReplies: true,
        counters: newReplyCounters(), onDead: () => undefined });
      const whole = new Uint8Array(8 * MiB);
      const offsets = [0, 8 * MiB + 4096, EXPORT_BYTES - 8 * MiB];
      for (const offsetBytes of offsets) {
        const before = connection.directReadBytes;
        assert.equal(await readRaw(connection, offsetBytes, [whole]), null);
        assert.ok(Buffer.from(whole).equals(disk.subarray(offsetBytes, offsetBytes + 8 * MiB)));
        // Only the read that brings the reply's header goes through staging.
        assert.ok(connection.directReadBytes - before >= 8 * MiB - STAGING_BYTES);
      }
      const pagesBuffer = new Uint8Array(8 * MiB);
      const pages = split(pagesBuffer, ...Array.from({ length: 2047 }, () => 4 * KiB));
      const before = connection.directReadBytes;
      assert.equal(await readRaw(connection, 3 * MiB, pages), null);
      assert.ok(Buffer.from(pagesBuffer).equals(disk.subarray(3 * MiB, 11 * MiB)));
      assert.equal(connection.directReadBytes, before, 'pages are below the direct-read minimum');
      await connection.disconnect();
    });
  });

  test('a 512 KiB READ reply dripped in uneven pieces by a test server', async () => {
    const server = await startFakeServer({
      sizeBytes: 4 * MiB,
      onRequest: (req) => {
        if (req.type !== NBD_CMD_READ) return serveCorrectly(req);
        const data = req.disk.subarray(req.offsetBytes, req.offsetBytes + req.lengthBytes);
        const bytes = Buffer.concat([offsetDataChunk(req.cookie, req.offsetBytes, data, false),
          chunk(req.cookie, NBD_REPLY_FLAG_DONE, 0, Buffer.alloc(0))]);
        let position = 0;
        let step = 1;
        const drip = (): void => {
          if (position >= bytes.length) return;
          step = (step * 7919) % 40000 + 1;
          req.socket.write(bytes.subarray(position, position + step));
          position += step;
          setImmediate(drip);
        };
        drip();
      },
    });
    try {
      randomBytes(4 * MiB).copy(server.disk);
      const device = await openNbdDevice(server.uri);
      for (const offsetBytes of [0, MiB + 4096]) {
        const out = new Uint8Array(512 * KiB);
        assert.equal(await submit(device, request('read', offsetBytes / 512, 1024, [out])), null);
        const expected = server.disk.subarray(offsetBytes, offsetBytes + 512 * KiB);
        assert.ok(Buffer.from(out).equals(expected));
      }
      await device.close();
    } finally {
      await server.close();
    }
  });
});
