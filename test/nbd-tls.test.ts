// dmio's NBD client over TLS (nbds:// and nbds+unix://): x509 and PSK against
// `dmio serve --tls=require`, `nbdkit --tls=require` and `qemu-nbd --tls-creds`, with
// credentials made by the test with openssl; a server without TLS, a plain URI to a server
// that requires TLS, a wrong key and a missing client certificate are all refused, and the
// client never goes on in plaintext. Also the server's --tls-verify-peer, and nbds+unix URIs
// through `openDevice` (the generic opener the CLI uses) against nbdkit.

import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test, type TestContext } from 'node:test';
import { NbdError } from '../src/errors.js';
import type { BlockDevice } from '../src/devices/block-device.js';
import { openNbdDevice } from '../src/nbd/open-nbd.js';
import { parseNbdUri } from '../src/nbd/uri.js';
import { openDevice } from '../src/open/open-device.js';
import { pattern, request, submit } from './helpers/device-io.js';
import { startDmioServe } from './helpers/dmio-serve.js';
import { makeTempDir, requireTools, startNbdkit, startQemuNbd } from './helpers/nbdkit.js';
import { makeCertificates, makePskFile } from './helpers/tls-certs.js';

const BYTES = 256 * 1024;

/**
 * Writes a pattern through `uri`, reads it back, closes. `open` is the NBD opener by default,
 * or `openDevice`, the generic opener the CLI uses.
 */
async function roundTrip(uri: string,
  open: (uri: string, options: { connectTimeoutMs: number }) => Promise<BlockDevice> = openNbdDevice,
): Promise<void> {
  const device = await open(uri, { connectTimeoutMs: 10_000 });
  try {
    const data = pattern(0, BYTES, 7);
    assert.equal(await submit(device, request('write', 8, BYTES / 512, [data])), null);
    const back = new Uint8Array(BYTES);
    assert.equal(await submit(device, request('read', 8, BYTES / 512, [back])), null);
    assert.deepEqual(back, data);
  } finally {
    await device.close();
  }
}

async function refused(uri: string, pattern: RegExp): Promise<void> {
  await assert.rejects(openNbdDevice(uri, { connectTimeoutMs: 10_000 }), (error: unknown) => {
    assert.ok(error instanceof NbdError, String(error));
    assert.match(error.message, pattern);
    return true;
  });
}

/** A temp dir with x509 credentials (server and client) and a PSK file for alice. */
async function credentials(t: TestContext): Promise<{ dir: string; pki: string; psk: string } | null> {
  if (!requireTools(t, 'openssl')) return null;
  const dir = makeTempDir('dmio-nbd-tls-');
  const pki = path.join(dir, 'pki');
  mkdirSync(pki);
  await makeCertificates(pki, { client: true });
  return { dir, pki, psk: makePskFile(dir, 'keys.psk', 'alice') };
}

test('nbds URIs parse their TLS parameters; plain schemes refuse them', () => {
  const parsed = parseNbdUri('nbds+unix://alice@/disk?socket=/tmp/s&tls-psk-file=/k.psk');
  assert.deepEqual(parsed.tls, { verifyPeer: true, pskFile: '/k.psk', username: 'alice' });
  assert.deepEqual(parsed.address, { transport: 'unix', socketPath: '/tmp/s' });
  assert.equal(parsed.exportName, 'disk');
  const tcp = parseNbdUri('nbds://127.0.0.1:1234/?tls-certificates=/pki&tls-verify-peer=false');
  assert.deepEqual(tcp.tls, { verifyPeer: false, certificatesDir: '/pki' });
  assert.equal(parseNbdUri('nbds://h/?tls-psk-file=/k&tls-username=bob').tls?.username, 'bob');
  assert.equal(parseNbdUri('nbd://h/').tls, undefined);
  for (const bad of ['nbd://h/?tls-certificates=/pki', 'nbd+unix:///?socket=/s&tls-psk-file=/k',
    'nbds://h/?tls-certificates=/a&tls-psk-file=/b', 'nbds://h/?tls-verify-peer=maybe',
    'nbds://h/?bogus=1', 'nbd://alice@h/', 'nbds://a@h/?tls-psk-file=/k&tls-username=b']) {
    assert.throws(() => parseNbdUri(bad), /DMIO_ERR_INVALID_DEVICE_SPEC|nbds|tls|unknown|given|user/,
      bad);
  }
});

test('dmio serve --tls=require: x509 over TCP and PSK over a Unix socket; plain refused', async (t) => {
  const creds = await credentials(t);
  if (creds === null) return;
  try {
    const image = path.join(creds.dir, 'disk.img');
    writeFileSync(image, '');
    truncateSync(image, 4 * 1024 * 1024);
    const x509 = await startDmioServe([image, '--listen', '127.0.0.1:0', '--tls=require',
      '--tls-certificates', creds.pki]);
    try {
      await roundTrip(`${x509.uri}?tls-certificates=${creds.pki}`);
      await refused(x509.uri.replace('nbds:', 'nbd:'), /requires TLS|TLS_REQD/);
    } finally {
      assert.equal(await x509.stop(), 0);
    }
    const socket = path.join(creds.dir, 'psk.sock');
    const psk = await startDmioServe([image, '--socket', socket, '--tls=require', '--tls-psk', creds.psk]);
    try {
      await roundTrip(`nbds+unix://alice@/?socket=${socket}&tls-psk-file=${creds.psk}`);
      const wrong = makePskFile(creds.dir, 'wrong.psk', 'alice');
      await refused(`nbds+unix://alice@/?socket=${socket}&tls-psk-file=${wrong}`, /TLS handshake failed/);
      await refused(`nbds+unix://bob@/?socket=${socket}&tls-psk-file=${creds.psk}`, /no key for user bob/);
    } finally {
      assert.equal(await psk.stop(), 0);
    }
  } finally {
    rmSync(creds.dir, { recursive: true, force: true });
  }
});

test('dmio serve --tls-verify-peer: a client certificate signed by the CA is required', async (t) => {
  const creds = await credentials(t);
  if (creds === null) return;
  try {
    const socket = path.join(creds.dir, 'verify.sock');
    const served = await startDmioServe(['mem:8M', '--socket', socket, '--tls=require',
      '--tls-certificates', creds.pki, '--tls-verify-peer']);
    try {
      await roundTrip(`nbds+unix:///?socket=${socket}&tls-certificates=${creds.pki}`);
      const noClient = path.join(creds.dir, 'ca-only');
      mkdirSync(noClient);
      copyFileSync(path.join(creds.pki, 'ca-cert.pem'), path.join(noClient, 'ca-cert.pem'));
      await refused(`nbds+unix:///?socket=${socket}&tls-certificates=${noClient}`,
        /TLS|closed|lost|handshake/);
    } finally {
      assert.equal(await served.stop(), 0);
    }
  } finally {
    rmSync(creds.dir, { recursive: true, force: true });
  }
});

test('nbdkit --tls=require: x509 and PSK, also through openDevice; nbds to plain nbdkit refused',
  async (t) => {
  if (!requireTools(t, 'nbdkit')) return;
  const creds = await credentials(t);
  if (creds === null) return;
  try {
    // Each server gets its own directory: stopping it removes that directory.
    const x509 = await startNbdkit(['--tls=require', `--tls-certificates=${creds.pki}`, 'memory', '8M'],
      { dir: makeTempDir('dmio-nbd-tls-x509-') });
    try {
      const uri = `nbds+unix:///?socket=${x509.socketPath}&tls-certificates=${creds.pki}`;
      await roundTrip(uri);
      await roundTrip(uri, openDevice);
      await refused(x509.uri, /requires TLS/);
    } finally {
      await x509.stop();
    }
    const psk = await startNbdkit(['--tls=require', `--tls-psk=${creds.psk}`, 'memory', '8M'],
      { dir: makeTempDir('dmio-nbd-tls-psk-') });
    try {
      const uri = `nbds+unix://alice@/?socket=${psk.socketPath}&tls-psk-file=${creds.psk}`;
      await roundTrip(uri);
      await roundTrip(uri, openDevice);
    } finally {
      await psk.stop();
    }
    const plain = await startNbdkit(['memory', '8M'], { dir: makeTempDir('dmio-nbd-tls-plain-') });
    try {
      await refused(`nbds+unix:///?socket=${plain.socketPath}&tls-certificates=${creds.pki}`,
        /STARTTLS/);
    } finally {
      await plain.stop();
    }
  } finally {
    rmSync(creds.dir, { recursive: true, force: true });
  }
});

test('qemu-nbd --tls-creds (x509, verify-peer on by default): the client certificate is sent', async (t) => {
  if (!requireTools(t, 'qemu-nbd')) return;
  const creds = await credentials(t);
  if (creds === null) return;
  try {
    const image = path.join(creds.dir, 'disk.img');
    writeFileSync(image, '');
    truncateSync(image, 4 * 1024 * 1024);
    const server = await startQemuNbd(['--object',
      `tls-creds-x509,id=tls0,dir=${creds.pki},endpoint=server`, '--tls-creds', 'tls0',
      '-f', 'raw', '--persistent', image], { dir: makeTempDir('dmio-nbd-tls-qemu-') });
    try {
      await roundTrip(`nbds+unix:///?socket=${server.socketPath}&tls-certificates=${creds.pki}`);
    } finally {
      await server.stop();
    }
  } finally {
    rmSync(creds.dir, { recursive: true, force: true });
  }
});
