// The NBD client's kernel send buffer on Unix sockets, read back from the kernel with `ss`:
// a connection that has only read keeps the default (its request headers are 28 bytes), and
// the first WRITE asks for 2 MiB, so a 1 MiB WRITE goes to the kernel in one piece; over TLS
// the socket under the TLS socket gets it. The server is a real nbdkit; the socket is found by
// the inodes of this process's descriptors.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { test } from 'node:test';
import { openNbdDevice } from '../src/nbd/open-nbd.js';
import { pattern, request, submit } from './helpers/device-io.js';
import { makeTempDir, requireTools, startNbdkit } from './helpers/nbdkit.js';
import { makePskFile } from './helpers/tls-certs.js';

const MiB = 1024 * 1024;

/** Inodes of the sockets this process holds. */
function socketInodes(): Set<string> {
  const inodes = new Set<string>();
  for (const fd of readdirSync('/proc/self/fd')) {
    let target: string;
    try {
      target = readlinkSync(`/proc/self/fd/${fd}`);
    } catch {
      continue;
    }
    const match = /^socket:\[(\d+)\]$/.exec(target);
    if (match !== null) inodes.add(match[1]!);
  }
  return inodes;
}

/** The kernel send buffer (`tb` of `ss -x -m`) of the Unix socket with local inode `inode`. */
function sendBufferOf(inode: string): number {
  const text = execFileSync('ss', ['-x', '-m', '-a'], { encoding: 'utf8' })
    .replace(/\n\s+skmem/g, ' skmem');
  for (const line of text.split('\n')) {
    const fields = line.trim().split(/\s+/);
    // Netid State Recv-Q Send-Q Local-Address Local-Port(inode) Peer-Address Peer-Port ...
    if (fields[5] !== inode) continue;
    const match = /tb(\d+)/.exec(line);
    assert.ok(match !== null, `no skmem in: ${line}`);
    return Number(match[1]);
  }
  throw new Error(`socket inode ${inode} not listed by ss`);
}

test('an NBD connection asks for a 2 MiB send buffer at its first WRITE, not before', async (t) => {
  if (!requireTools(t, 'nbdkit', 'ss')) return;
  const server = await startNbdkit(['memory', '8M']);
  t.after(() => server.stop());
  const before = socketInodes();
  const device = await openNbdDevice(server.uri, { connections: 1 });
  const added = [...socketInodes()].filter((inode) => !before.has(inode));
  assert.equal(added.length, 1, `one new socket: ${added.join(', ')}`);
  const inode = added[0]!;
  const defaultBytes = Number(readFileSync('/proc/sys/net/core/wmem_default', 'utf8'));
  const maxBytes = Number(readFileSync('/proc/sys/net/core/wmem_max', 'utf8'));

  assert.equal(await submit(device, request('read', 0, 2048, [new Uint8Array(MiB)])), null);
  assert.equal(sendBufferOf(inode), defaultBytes, 'reads leave the default');

  const data = pattern(0, MiB, 5);
  assert.equal(await submit(device, request('write', 0, 2048, [data])), null);
  // The kernel doubles the value asked for, after capping it at net.core.wmem_max.
  assert.equal(sendBufferOf(inode), 2 * Math.min(2 * MiB, maxBytes), 'the first WRITE sized it');
  const back = new Uint8Array(MiB);
  assert.equal(await submit(device, request('read', 0, 2048, [back])), null);
  assert.deepEqual(back, data);
  await device.close();
});

test('over TLS on a Unix socket, the socket under the TLS socket gets it', async (t) => {
  if (!requireTools(t, 'nbdkit', 'ss')) return;
  // The key file lives in the server's directory, which stopping the server removes.
  const dir = makeTempDir('dmio-send-buffer-tls-');
  const psk = makePskFile(dir, 'keys.psk', 'alice');
  const server = await startNbdkit(['--tls=require', `--tls-psk=${psk}`, 'memory', '8M'], { dir });
  t.after(() => server.stop());
  const before = socketInodes();
  const device = await openNbdDevice(
    `nbds+unix://alice@/?socket=${server.socketPath}&tls-psk-file=${psk}`,
    { connections: 1, connectTimeoutMs: 10_000 });
  t.after(() => device.close());
  const added = [...socketInodes()].filter((inode) => !before.has(inode));
  assert.equal(added.length, 1, `one new socket: ${added.join(', ')}`);
  const inode = added[0]!;
  const defaultBytes = Number(readFileSync('/proc/sys/net/core/wmem_default', 'utf8'));
  const maxBytes = Number(readFileSync('/proc/sys/net/core/wmem_max', 'utf8'));
  assert.equal(sendBufferOf(inode), defaultBytes, 'the handshake leaves the default');
  const data = pattern(0, MiB, 3);
  assert.equal(await submit(device, request('write', 0, 2048, [data])), null);
  // The TLS socket's handle reports the descriptor under it, which is the one sized.
  assert.equal(sendBufferOf(inode), 2 * Math.min(2 * MiB, maxBytes), 'the first WRITE sized it');
});
