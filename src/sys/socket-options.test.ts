// Tests the send-buffer option against the real kernel: a Unix-domain socket gets the larger
// buffer (the kernel reports twice the value asked), a TCP socket and a regular file are left
// alone.

import assert from 'node:assert/strict';
import { closeSync, openSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { test } from 'node:test';
import { tempDir } from '../../test/helpers/tmp.js';
import { sendBufferBytes, setUnixSendBufferBytes } from './socket-options.js';

/** The descriptor of the server side of one connection to `listener`, as accepted. */
async function acceptedFd(listen: (server: net.Server) => Promise<net.Socket>): Promise<{
  fd: number; close: () => void;
}> {
  let accepted: net.Socket | undefined;
  const server = net.createServer((socket) => {
    accepted = socket;
  });
  const client = await listen(server);
  while (accepted === undefined) await new Promise((resolve) => setImmediate(resolve));
  const socket = accepted;
  const fd = (socket as unknown as { _handle: { fd: number } })._handle.fd;
  return { fd, close: () => {
    client.destroy();
    socket.destroy();
    server.close();
  } };
}

test('a Unix socket gets the send buffer asked for', async (t) => {
  const path = join(await tempDir(t), 's.sock');
  const { fd, close } = await acceptedFd((server) => new Promise((resolve) => {
    server.listen(path, () => resolve(net.connect(path)));
  }));
  t.after(close);
  assert.equal(setUnixSendBufferBytes(fd, 1024 * 1024), true);
  assert.equal(sendBufferBytes(fd), 2 * 1024 * 1024, 'the kernel doubles what is asked');
});

test('TCP sockets and files are left alone', async (t) => {
  const { fd, close } = await acceptedFd((server) => new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      resolve(net.connect((server.address() as net.AddressInfo).port, '127.0.0.1'));
    });
  }));
  t.after(close);
  const before = sendBufferBytes(fd);
  assert.equal(setUnixSendBufferBytes(fd, 1024 * 1024), false);
  assert.equal(sendBufferBytes(fd), before);
  const file = openSync(join(await tempDir(t), 'f'), 'w');
  t.after(() => closeSync(file));
  assert.equal(setUnixSendBufferBytes(file, 1024 * 1024), false);
  assert.equal(setUnixSendBufferBytes(-1, 1024 * 1024), false);
  assert.equal(setUnixSendBufferBytes(file, 0), false);
});
