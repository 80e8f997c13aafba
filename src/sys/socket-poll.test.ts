// Tests the polling thread's socket calls against the real kernel: one end of a Unix-domain
// connection is taken out of Node (a duplicated descriptor, the Node socket destroyed) and
// driven with receiveNow/sendNow/PollSet, while the other end stays a Node socket that writes,
// reads, ends and closes. The wake fd is signalled from this thread and from a worker thread
// while this one blocks in `wait(…, -1)`.

import assert from 'node:assert/strict';
import { once } from 'node:events';
import net from 'node:net';
import { join } from 'node:path';
import { describe, test, type TestContext } from 'node:test';
import { Worker } from 'node:worker_threads';
import { tempDir } from '../../test/helpers/tmp.js';
import { SysError } from './libc.js';
import { duplicateSocketFd } from './socket-handoff.js';
import { setUnixSendBufferBytes } from './socket-options.js';
import {
  closeFd, createWakeFd, drainWakeFd, PollSet, POLLIN, POLLOUT, receiveNow, sendNow,
  setNonBlocking, signalWakeFd,
} from './socket-poll.js';

/** One connection: our end as a bare descriptor, the peer as a Node socket. */
interface Connection {
  readonly fd: number;
  readonly peer: net.Socket;
}

/**
 * Connects to a fresh server (a Unix socket in a temporary directory, or TCP on the loopback)
 * and takes the accepted end out of Node.
 */
async function connection(t: TestContext, family: 'unix' | 'tcp' = 'unix'): Promise<Connection> {
  const server = net.createServer();
  if (family === 'unix') server.listen(join(await tempDir(t), 'poll.sock'));
  else server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address();
  const peer = typeof address === 'string' ? net.connect(address) :
    net.connect((address as net.AddressInfo).port, '127.0.0.1');
  const [accepted] = await once(server, 'connection') as [net.Socket];
  await once(peer, 'connect');
  const fd = duplicateSocketFd(accepted);
  assert.equal(typeof fd, 'number', `duplicate: ${String(fd)}`);
  accepted.destroy();
  server.close();
  t.after(() => {
    closeFd(fd as number);
    peer.destroy();
  });
  setNonBlocking(fd as number);
  return { fd: fd as number, peer };
}

/** Waits until `socket` has flushed `bytes` to the kernel. */
function written(socket: net.Socket, bytes: Uint8Array | string): Promise<void> {
  return new Promise((resolve, reject) => {
    socket.write(bytes, (error) => (error ? reject(error) : resolve()));
  });
}

/** receiveNow until `lengthBytes` arrived, polling for POLLIN in between. */
function receiveAll(fd: number, lengthBytes: number): Uint8Array {
  const target = new Uint8Array(lengthBytes);
  const polls = new PollSet(1);
  polls.set(0, fd, POLLIN);
  let doneBytes = 0;
  while (doneBytes < lengthBytes) {
    const got = receiveNow(fd, target, doneBytes, lengthBytes - doneBytes);
    assert.notEqual(got, 0, 'the stream ended early');
    if (got > 0) doneBytes += got;
    else assert.equal(polls.wait(1, 2000), 1, 'data within 2 s');
  }
  return target;
}

/** The peer's incoming bytes, collected until `lengthBytes` arrived. */
async function peerReceives(peer: net.Socket, lengthBytes: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  while (total < lengthBytes) {
    const [chunk] = await once(peer, 'data') as [Buffer];
    chunks.push(chunk);
    total += chunk.length;
  }
  return Buffer.concat(chunks);
}

const pattern = (lengthBytes: number, seed: number): Uint8Array =>
  Uint8Array.from({ length: lengthBytes }, (_, index) => (index * 7 + seed) & 0xff);

describe('receiveNow', () => {
  test('-1 on an empty socket, the exact bytes once written, 0 after the end', async (t) => {
    const { fd, peer } = await connection(t);
    const target = new Uint8Array(64).fill(0xee);
    assert.equal(receiveNow(fd, target, 0, 64), -1);
    await written(peer, Uint8Array.from([1, 2, 3, 4, 5]));
    const polls = new PollSet(1);
    polls.set(0, fd, POLLIN);
    assert.equal(polls.wait(1, 2000), 1);
    assert.equal(receiveNow(fd, target, 10, 3), 3, 'no more than asked');
    assert.equal(receiveNow(fd, target, 13, 50), 2);
    assert.deepEqual([...target.subarray(8, 17)], [0xee, 0xee, 1, 2, 3, 4, 5, 0xee, 0xee]);
    assert.equal(receiveNow(fd, target, 0, 64), -1);
    peer.end();
    await once(peer, 'finish');
    assert.equal(polls.wait(1, 2000), 1);
    assert.equal(receiveNow(fd, target, 0, 64), 0);
  });

  test('a reset connection throws ECONNRESET (TCP)', async (t) => {
    const { fd, peer } = await connection(t, 'tcp');
    peer.resetAndDestroy();
    await once(peer, 'close');
    const polls = new PollSet(1);
    polls.set(0, fd, POLLIN);
    assert.equal(polls.wait(1, 2000), 1);
    assert.throws(() => receiveNow(fd, new Uint8Array(16), 0, 16), (error: unknown) =>
      error instanceof SysError && error.code === 'ECONNRESET' && error.syscall === 'recv');
  });
});

describe('sendNow', () => {
  test('several pieces with an offset arrive byte-exact; empty pieces are skipped', async (t) => {
    const { fd, peer } = await connection(t);
    const header = Buffer.from('0123456789abcdef'); // A small buffer, as a reply header is.
    const body = pattern(8192, 3);
    const tail = pattern(100, 9).subarray(10, 60);
    const pieces = [header, new Uint8Array(0), body, tail, new Uint8Array(0)];
    const expected = Buffer.concat([header.subarray(4), body, tail]);
    const arrived = peerReceives(peer, expected.length);
    assert.equal(sendNow(fd, pieces, 4), expected.length);
    assert.deepEqual(await arrived, expected);
    assert.equal(sendNow(fd, [header], header.length), 0, 'nothing left to offer');
    assert.equal(sendNow(fd, [], 0), 0);
  });

  test('a peer that closed gives EPIPE or ECONNRESET', async (t) => {
    const { fd, peer } = await connection(t);
    peer.destroy();
    await once(peer, 'close');
    assert.throws(() => {
      // The first send after the peer's close may still be taken on some kernels.
      for (let attempt = 0; attempt < 2; attempt += 1) sendNow(fd, [pattern(64, 2)], 0);
    }, (error: unknown) => error instanceof SysError &&
      (error.code === 'EPIPE' || error.code === 'ECONNRESET') && error.syscall === 'sendmsg');
  });

  test('a full send buffer gives -1 or a short count, then POLLOUT once drained', async (t) => {
    const { fd, peer } = await connection(t);
    peer.pause();
    assert.equal(setUnixSendBufferBytes(fd, 4096), true);
    const block = pattern(64 * 1024, 5);
    let sentBytes = 0;
    let short = false;
    let blocked = false;
    for (let attempt = 0; attempt < 1000 && !blocked; attempt += 1) {
      const result = sendNow(fd, [block], 0);
      if (result < 0) blocked = true;
      else {
        if (result < block.length) short = true;
        sentBytes += result;
      }
    }
    assert.ok(blocked, 'the kernel stopped taking bytes');
    assert.ok(short || sentBytes === 0 || sentBytes % block.length === 0);
    const polls = new PollSet(1);
    polls.set(0, fd, POLLOUT);
    assert.equal(polls.wait(1, 0), 0, 'not writable while full');
    const arrived = peerReceives(peer, sentBytes);
    peer.resume();
    const received = await arrived;
    assert.equal(received.length, sentBytes);
    for (let offset = 0; offset < sentBytes; offset += block.length) {
      const part = received.subarray(offset, Math.min(offset + block.length, sentBytes));
      assert.deepEqual(part, Buffer.from(block.subarray(0, part.length)));
    }
    assert.equal(polls.wait(1, 2000), 1);
    assert.ok((polls.revents(0) & POLLOUT) !== 0);
  });
});

describe('PollSet', () => {
  test('times out with 0 on a quiet socket, reports POLLIN once the peer writes', async (t) => {
    const { fd, peer } = await connection(t);
    const polls = new PollSet(2);
    polls.set(0, fd, POLLIN);
    polls.set(1, -1, POLLIN); // A negative descriptor is ignored.
    const before = Date.now();
    assert.equal(polls.wait(2, 30), 0);
    assert.ok(Date.now() - before >= 25, 'waited for the timeout');
    assert.equal(polls.revents(0), 0);
    await written(peer, 'x');
    assert.equal(polls.wait(2, 2000), 1);
    assert.equal(polls.revents(0) & POLLIN, POLLIN);
    assert.equal(polls.revents(1), 0);
    assert.deepEqual([...receiveAll(fd, 1)], [0x78]);
    assert.equal(polls.wait(1, 0), 0);
  });
});

describe('wake fd', () => {
  test('signalWakeFd wakes a wait with no timeout; drainWakeFd empties it', (t) => {
    const wakeFd = createWakeFd();
    t.after(() => closeFd(wakeFd));
    const polls = new PollSet(1);
    polls.set(0, wakeFd, POLLIN);
    assert.equal(polls.wait(1, 0), 0);
    signalWakeFd(wakeFd);
    signalWakeFd(wakeFd);
    assert.equal(polls.wait(1, -1), 1);
    assert.equal(polls.revents(0), POLLIN);
    drainWakeFd(wakeFd);
    assert.equal(polls.wait(1, 0), 0, 'drained');
    drainWakeFd(wakeFd);
  });

  test('a signal from another thread wakes a wait with no timeout', async (t) => {
    const wakeFd = createWakeFd();
    t.after(() => closeFd(wakeFd));
    const polls = new PollSet(1);
    polls.set(0, wakeFd, POLLIN);
    const worker = signallingWorker(wakeFd);
    t.after(() => worker.terminate());
    // The thread has loaded the module and is about to sleep before it signals: only then
    // does this thread block, so a thread that failed to start cannot hang the test.
    const [message] = await once(worker, 'message') as [unknown];
    assert.equal(message, 'ready');
    const before = Date.now();
    assert.equal(polls.wait(1, -1), 1);
    assert.ok(Date.now() - before >= 20, 'woken by the other thread, after its sleep');
    drainWakeFd(wakeFd);
    assert.equal(polls.wait(1, 0), 0);
    const [exitCode] = await once(worker, 'exit') as [number];
    assert.equal(exitCode, 0);
  });

  test('closed and foreign descriptors fail with SysError', () => {
    assert.throws(() => signalWakeFd(-1), (error: unknown) =>
      error instanceof SysError && error.code === 'EBADF');
    assert.throws(() => setNonBlocking(-1), (error: unknown) =>
      error instanceof SysError && error.code === 'EBADF');
    assert.throws(() => receiveNow(-1, new Uint8Array(8), 0, 8), (error: unknown) =>
      error instanceof SysError && error.code === 'EBADF' && error.syscall === 'recv');
  });
});

/** A thread that loads this module (through tsx), says 'ready', sleeps 50 ms and signals. */
function signallingWorker(wakeFd: number): Worker {
  const tsx = JSON.stringify(import.meta.resolve('tsx/esm/api'));
  const module = JSON.stringify(new URL('./socket-poll.ts', import.meta.url).href);
  return new Worker(`(async () => {
    const { parentPort, workerData } = await import('node:worker_threads');
    (await import(${tsx})).register();
    const { signalWakeFd } = await import(${module});
    parentPort.postMessage('ready');
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 50);
    signalWakeFd(workerData);
  })();`, { eval: true, workerData: wakeFd });
}
