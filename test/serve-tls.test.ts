// `dmio serve` with TLS against libnbd clients: x509 certificates (made with openssl by
// test/helpers/tls-certs.ts, in the layout nbdkit and qemu-nbd use) over loopback TCP,
// checked by nbdinfo and nbdcopy both ways; pre-shared keys (nbdkit's username:hexkey file)
// over a Unix socket; a plain client refused by --tls=require and served by --tls=on; a
// wrong key refused.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { runTool, runToolOk, startDmioServe } from './helpers/dmio-serve.js';
import { makeTempDir, requireTools } from './helpers/nbdkit.js';
import { makeCertificates, makePskFile } from './helpers/tls-certs.js';

const MiB = 1024 * 1024;

test('x509 over TCP: nbdinfo and nbdcopy both ways', async (t) => {
  if (!requireTools(t, 'openssl', 'nbdinfo', 'nbdcopy')) return;
  const dir = makeTempDir('dmio-serve-tls-');
  try {
    const pki = path.join(dir, 'pki');
    await runToolOk('mkdir', [pki]);
    await makeCertificates(pki);
    const image = path.join(dir, 'disk.img');
    writeFileSync(image, Buffer.alloc(4 * MiB));
    const served = await startDmioServe([image, '--listen', '127.0.0.1:0', '--tls=require',
      '--tls-certificates', pki]);
    try {
      assert.match(served.uri, /^nbds:\/\/127\.0\.0\.1:\d+\/$/);
      // libnbd checks the certificate against the host named in the URI.
      const uri = `${served.uri.replace('127.0.0.1', 'localhost')}?tls-certificates=${pki}`;
      const { stdout } = await runToolOk('nbdinfo', ['--json', uri]);
      assert.equal((JSON.parse(stdout) as { TLS: boolean }).TLS, true);
      const source = path.join(dir, 'source.img');
      const data = randomBytes(4 * MiB);
      writeFileSync(source, data);
      await runToolOk('nbdcopy', ['--connections=4', '--flush', source, uri]);
      assert.ok(readFileSync(image).equals(data));
      const back = path.join(dir, 'back.img');
      await runToolOk('nbdcopy', [uri, back]);
      assert.ok(readFileSync(back).equals(data));
      const plain = await runTool('nbdinfo', ['--size', served.uri.replace('nbds:', 'nbd:')]);
      assert.notEqual(plain.status, 0, 'a plain client is refused');
      assert.match(plain.stderr, /requires TLS/);
    } finally {
      assert.equal(await served.stop(), 0, served.stderr());
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('PSK over a Unix socket: the right key works, a wrong one fails, --tls=on serves plain too', async (t) => {
  if (!requireTools(t, 'nbdinfo')) return;
  const dir = makeTempDir('dmio-serve-psk-');
  try {
    const keys = makePskFile(dir, 'keys.psk', 'alice');
    const wrong = makePskFile(dir, 'wrong.psk', 'alice');
    const socket = path.join(dir, 's.sock');
    const served = await startDmioServe(['mem:2M', '--socket', socket, '--tls=on', '--tls-psk', keys]);
    try {
      assert.equal(served.uri, `nbds+unix:///?socket=${socket}`);
      const secure = (file: string): string => `nbds+unix://alice@/?socket=${socket}&tls-psk-file=${file}`;
      const { stdout } = await runToolOk('nbdinfo', ['--json', secure(keys)]);
      assert.equal((JSON.parse(stdout) as { TLS: boolean }).TLS, true);
      assert.notEqual((await runTool('nbdinfo', ['--size', secure(wrong)])).status, 0,
        'a wrong key is refused');
      const plain = await runToolOk('nbdinfo', ['--size', `nbd+unix:///?socket=${socket}`]);
      assert.equal(plain.stdout.trim(), String(2 * MiB), '--tls=on still serves plain clients');
    } finally {
      assert.equal(await served.stop(), 0, served.stderr());
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
