// The NBD server against hostile clients, driven byte by byte over a raw Unix socket: bad
// client flags and magic, oversized, malformed and too many options, unknown exports and
// commands, requests past the end, huge lengths, clients that vanish mid-request, idle
// handshakes, a flood of pipelined reads, and more connections than allowed, against a RAM
// export on the event loop and a file export on two connection threads. Beside them a
// well-behaved client (dmio's own) keeps writing and reading back patterns, and must see every
// byte right; the server must stay up and end with no connection left.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { rmSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import {
  createRamDevice, dmIo, dmIoClientCreate, dmIoClientDestroy, openDevice, openFileDevice,
  type BlockDevice,
} from '../src/index.js';
import { createNbdServer, type NbdServer } from '../src/server.js';
import {
  NBD_CMD_BLOCK_STATUS, NBD_CMD_READ, NBD_CMD_WRITE, NBD_CMD_WRITE_ZEROES, NBD_EINVAL,
  NBD_ENOSPC, NBD_OPT_EXPORT_NAME, NBD_OPT_GO, NBD_OPT_INFO, NBD_OPT_LIST,
  NBD_OPT_SET_META_CONTEXT, NBD_OPT_STARTTLS, NBD_OPT_STRUCTURED_REPLY,
  NBD_REP_ACK, NBD_REP_ERR_INVALID, NBD_REP_ERR_POLICY, NBD_REP_ERR_UNKNOWN, NBD_REP_ERR_UNSUP,
  NBD_REP_INFO, NBD_REPLY_TYPE_ERROR, NBD_REPLY_TYPE_NONE, NBD_REPLY_TYPE_OFFSET_DATA,
} from '../src/nbd/protocol.js';
import { makeTempDir } from './helpers/nbdkit.js';
import { infoPayload, metaPayload, RawClient, u32 } from './helpers/raw-nbd-client.js';

const MiB = 1024 * 1024;
const EXPORT_BYTES = 64 * MiB;

/** The suite, over a RAM export on the event loop and over a file export on two threads. */
for (const variant of ['RAM export', 'file export on two connection threads'] as const) {
  describe(`NBD server against hostile clients: ${variant}`, () => {
    let dir = '';
    let socketPath = '';
    let device: BlockDevice | null = null;
    let server: NbdServer | null = null;
    const logged: string[] = [];
    // The well-behaved client, running for the whole suite.
    let goodStop = false;
    let goodRounds = 0;
    let goodFailure: Error | null = null;
    let goodLoop: Promise<void> = Promise.resolve();

    before(async () => {
      dir = makeTempDir('dmio-serve-hostile-');
      socketPath = path.join(dir, 's.sock');
      const threaded = variant !== 'RAM export';
      device = threaded ?
        await openFileDevice(path.join(dir, 'disk.img'), { create: { sizeBytes: EXPORT_BYTES } }) :
        await createRamDevice({ sizeBytes: EXPORT_BYTES });
      server = createNbdServer({ exports: [{ name: 'disk', device }], connectionsMax: 8,
        handshakeTimeoutMs: 1500, log: (message) => logged.push(message),
        threads: threaded ? 2 : 0 });
      await server.listen({ socketPath });
      goodLoop = wellBehaved(`nbd+unix:///disk?socket=${socketPath}`);
    });

    after(async () => {
      goodStop = true;
      await goodLoop;
      await server?.close();
      await device?.close();
      rmSync(dir, { recursive: true, force: true });
    });

    /** Writes a fresh pattern to the last 8 MiB, reads it back, over and over. */
    async function wellBehaved(uri: string): Promise<void> {
      const good = await openDevice(uri);
      const client = dmIoClientCreate();
      try {
        const base = (EXPORT_BYTES - 8 * MiB) / 512;
        while (!goodStop) {
          const data = randomBytes(256 * 1024);
          const sector = base + (goodRounds % 32) * 512;
          const written = await dmIo({ op: 'write', mem: { type: 'vm', data }, client },
            [{ device: good, sector, count: 512 }]);
          assert.equal(written.errorBits, 0n, 'the good client writes');
          const back = Buffer.alloc(data.length);
          const read = await dmIo({ op: 'read', mem: { type: 'vm', data: back }, client },
            [{ device: good, sector, count: 512 }]);
          assert.equal(read.errorBits, 0n, 'the good client reads');
          assert.ok(back.equals(data), 'the good client reads what it wrote');
          goodRounds += 1;
        }
      } catch (error) {
        goodFailure = error as Error;
      } finally {
        await dmIoClientDestroy(client);
        await good.close();
      }
    }

    test('unknown client flags close the connection', async () => {
      const client = await RawClient.negotiating(socketPath, 7);
      assert.ok(await client.closedBy());
    });

    test('a bad option magic closes the connection', async () => {
      const client = await RawClient.negotiating(socketPath);
      client.send(Buffer.alloc(16, 0x41));
      assert.ok(await client.closedBy());
    });

    test('an unknown option of 4097 bytes is drained and refused; 64 KiB + 1 closes', async () => {
      const client = await RawClient.negotiating(socketPath);
      client.option(99, Buffer.alloc(4097, 1));
      assert.equal((await client.optionReply()).type, NBD_REP_ERR_UNSUP);
      client.option(99, Buffer.alloc(0), 64 * 1024 + 1);
      assert.ok(await client.closedBy());
    });

    test('a 4 GiB option length closes before anything is read', async () => {
      const client = await RawClient.negotiating(socketPath);
      client.option(NBD_OPT_LIST, Buffer.alloc(0), 0xffffffff);
      assert.ok(await client.closedBy());
    });

    test('more than 64 options close the connection', async () => {
      const client = await RawClient.negotiating(socketPath);
      for (let index = 0; index < 64; index += 1) {
        client.option(99);
        assert.equal((await client.optionReply()).type, NBD_REP_ERR_UNSUP);
      }
      client.option(99);
      assert.ok(await client.closedBy());
    });

    test('malformed options get ERR_INVALID, unknown exports ERR_UNKNOWN, and the loop goes on', async () => {
      const client = await RawClient.negotiating(socketPath);
      const expect = async (option: number, payload: Buffer, type: number): Promise<void> => {
        client.option(option, payload);
        let reply = await client.optionReply();
        while (reply.type === NBD_REP_INFO || reply.type === 2 || reply.type === 4) {
          reply = await client.optionReply();
        }
        assert.equal(reply.type, type, `option ${option}`);
      };
      await expect(NBD_OPT_LIST, Buffer.alloc(3), NBD_REP_ERR_INVALID);
      await expect(NBD_OPT_LIST, Buffer.alloc(0), NBD_REP_ACK);
      await expect(NBD_OPT_SET_META_CONTEXT, metaPayload('disk', ['base:allocation']), NBD_REP_ERR_INVALID);
      await expect(NBD_OPT_STRUCTURED_REPLY, Buffer.alloc(0), NBD_REP_ACK);
      await expect(NBD_OPT_STRUCTURED_REPLY, Buffer.alloc(0), NBD_REP_ERR_INVALID);
      await expect(NBD_OPT_SET_META_CONTEXT, metaPayload('disk', ['base:allocation']).subarray(0, 20),
        NBD_REP_ERR_INVALID);
      await expect(NBD_OPT_INFO, Buffer.alloc(5), NBD_REP_ERR_INVALID);
      await expect(NBD_OPT_INFO, Buffer.concat([infoPayload('disk', []), Buffer.alloc(1)]),
        NBD_REP_ERR_INVALID);
      await expect(NBD_OPT_INFO, infoPayload('x'.repeat(4097), []), NBD_REP_ERR_INVALID);
      await expect(NBD_OPT_INFO, infoPayload('nope', []), NBD_REP_ERR_UNKNOWN);
      await expect(NBD_OPT_INFO, infoPayload('disk', [3, 1, 2]), NBD_REP_ACK);
      await expect(NBD_OPT_STARTTLS, Buffer.alloc(0), NBD_REP_ERR_POLICY);
      client.option(NBD_OPT_EXPORT_NAME, Buffer.from('nope'));
      assert.ok(await client.closedBy(), 'EXPORT_NAME of an unknown export closes');
    });

    test('bad requests get EINVAL or ENOSPC and the connection stays usable', async () => {
      const client = await RawClient.transmitting(socketPath);
      const expectError = async (errorNumber: number, what: string): Promise<void> => {
        const chunk = await client.chunk();
        assert.equal(chunk.type, NBD_REPLY_TYPE_ERROR, what);
        assert.equal(chunk.payload.readUInt32BE(0), errorNumber, what);
      };
      client.request(NBD_CMD_READ, BigInt(EXPORT_BYTES - 512), 1024);
      await expectError(NBD_EINVAL, 'read straddling the end');
      client.request(NBD_CMD_READ, 1n << 63n, 512);
      await expectError(NBD_EINVAL, 'read at 2^63');
      client.request(NBD_CMD_READ, 0n, 32 * MiB + 512);
      await expectError(NBD_EINVAL, 'read above 32 MiB');
      client.request(NBD_CMD_WRITE_ZEROES, BigInt(EXPORT_BYTES), 512);
      await expectError(NBD_ENOSPC, 'zero past the end');
      client.request(NBD_CMD_WRITE, BigInt(EXPORT_BYTES), 512);
      client.send(Buffer.alloc(512));
      await expectError(NBD_ENOSPC, 'write past the end');
      client.request(42, 0n, 512);
      await expectError(NBD_EINVAL, 'unknown command');
      client.request(NBD_CMD_READ, 0n, 512, 0x40);
      await expectError(NBD_EINVAL, 'unknown flag');
      client.request(NBD_CMD_BLOCK_STATUS, 0n, 512);
      await expectError(NBD_EINVAL, 'block status without a context');
      client.request(NBD_CMD_READ, 0n, 0);
      assert.equal((await client.chunk()).type, NBD_REPLY_TYPE_NONE, 'zero-length read');
      client.request(NBD_CMD_READ, 512n, 4096, 0, 7n);
      const data = await client.chunk();
      assert.equal(data.type, NBD_REPLY_TYPE_OFFSET_DATA);
      assert.equal(data.cookie, 7n);
      assert.equal(data.payload.length, 8 + 4096);
      client.destroy();
    });

    test('partial-block writes from a client without block sizes are merged, never lost', async () => {
      const client = await RawClient.transmitting(socketPath);
      const base = 16 * MiB;
      // 64 pipelined 100-byte writes, neighbours sharing 512-byte blocks, then one read.
      for (let index = 0; index < 64; index += 1) {
        client.request(NBD_CMD_WRITE, BigInt(base + index * 100), 100, 0, BigInt(index));
        client.send(Buffer.alloc(100, index + 1));
      }
      for (let index = 0; index < 64; index += 1) {
        const reply = await client.read(16);
        assert.equal(reply.readUInt32BE(4), 0, 'write succeeded');
      }
      client.request(NBD_CMD_READ, BigInt(base), 6400, 0, 99n);
      const chunk = await client.chunk();
      assert.equal(chunk.type, NBD_REPLY_TYPE_OFFSET_DATA);
      for (let index = 0; index < 64; index += 1) {
        const at = 8 + index * 100;
        assert.ok(chunk.payload.subarray(at, at + 100).every((byte) => byte === index + 1),
          `write ${index} is intact`);
      }
      client.destroy();
    });

    test('a WRITE above 32 MiB and a bad request magic close the connection', async () => {
      const big = await RawClient.transmitting(socketPath);
      big.request(NBD_CMD_WRITE, 0n, 32 * MiB + 512);
      assert.ok(await big.closedBy());
      const magic = await RawClient.transmitting(socketPath);
      magic.send(Buffer.alloc(28, 0x55));
      assert.ok(await magic.closedBy());
    });

    test('clients that vanish mid-request are cleaned up', async () => {
      const writer = await RawClient.transmitting(socketPath);
      writer.request(NBD_CMD_WRITE, 0n, MiB);
      writer.send(Buffer.alloc(MiB / 2, 9));
      writer.destroy();
      const reader = await RawClient.transmitting(socketPath);
      for (let index = 0; index < 8; index += 1) reader.request(NBD_CMD_READ, 0n, 8 * MiB, 0, BigInt(index));
      reader.destroy();
      const handshaking = await RawClient.negotiating(socketPath);
      handshaking.option(NBD_OPT_GO, infoPayload('disk', []).subarray(0, 6), 10);
      handshaking.destroy();
      await waitFor(() => (server?.connectionCount ?? 0) === 1, 'only the good client is left');
    });

    test('an idle handshake is closed after the timeout', async () => {
      const idle = await RawClient.connect(socketPath);
      assert.ok(await idle.closedBy(4000));
    });

    test('a flood of pipelined reads that are never read stays bounded', async () => {
      const flood = await RawClient.transmitting(socketPath);
      flood.socket.pause(); // replies pile up on the server's side
      const before = process.memoryUsage();
      for (let index = 0; index < 64; index += 1) {
        flood.request(NBD_CMD_READ, 0n, 32 * MiB, 0, BigInt(index));
      }
      await new Promise((resolve) => setTimeout(resolve, 1500));
      const grownBytes = process.memoryUsage().arrayBuffers - before.arrayBuffers;
      assert.ok(grownBytes < 160 * MiB, `${grownBytes} bytes held for 2 GiB of reads`);
      flood.destroy();
      await waitFor(() => (server?.connectionCount ?? 0) === 1, 'the flood was cleaned up');
    });

    test('connections beyond the cap are closed at once', async () => {
      const held: RawClient[] = [];
      for (let index = 0; index < 7; index += 1) held.push(await RawClient.connect(socketPath));
      await waitFor(() => (server?.connectionCount ?? 0) === 8, 'eight connections');
      const extra = await RawClient.connect(socketPath);
      assert.ok(await extra.closedBy(1000), 'the ninth connection is refused');
      for (const client of held) client.destroy();
      await waitFor(() => (server?.connectionCount ?? 0) === 1, 'back to the good client');
    });

    test('the good client saw every byte right and the server logged its hard closes', () => {
      assert.equal(goodFailure, null);
      assert.ok(goodRounds > 0, 'the good client made progress');
      assert.ok(logged.some((line) => line.includes('bad option magic')), logged.join('\n'));
      assert.ok(logged.some((line) => line.includes('refused a connection')));
    });
  });
}

async function waitFor(condition: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
