// Owns making TLS credentials for tests with openssl in a directory: a CA, a server certificate
// for localhost and 127.0.0.1 (the layout nbdkit, qemu-nbd and `dmio serve` read:
// ca-cert.pem, server-cert.pem, server-key.pem), optionally a client certificate
// (client-cert.pem, client-key.pem, as libnbd and dmio's client send), and nbdkit-style PSK
// files (`username:hexkey`).

import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { runToolOk } from './dmio-serve.js';

const EC = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

const openssl = (args: string[]): Promise<unknown> => runToolOk('openssl', args);

/** A CA, a server certificate (and with `client`, a client one) in `dir`. */
export async function makeCertificates(dir: string, options: { client?: boolean } = {}): Promise<void> {
  await openssl(['req', '-x509', ...EC, '-keyout', path.join(dir, 'ca-key.pem'),
    '-out', path.join(dir, 'ca-cert.pem'), '-days', '2', '-subj', '/CN=dmio test CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
  await signed(dir, 'server', '/CN=localhost', 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' +
    'extendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n');
  if (options.client === true) {
    await signed(dir, 'client', '/CN=client.test', 'extendedKeyUsage=clientAuth\n' +
      'keyUsage=critical,digitalSignature,keyEncipherment\n');
  }
}

/** `NAME-key.pem` and `NAME-cert.pem` signed by the CA in `dir`. */
async function signed(dir: string, name: string, subject: string, extensions: string): Promise<void> {
  const extFile = path.join(dir, `${name}.ext`);
  writeFileSync(extFile, extensions);
  await openssl(['req', ...EC, '-keyout', path.join(dir, `${name}-key.pem`),
    '-out', path.join(dir, `${name}.csr`), '-subj', subject]);
  await openssl(['x509', '-req', '-in', path.join(dir, `${name}.csr`), '-CA', path.join(dir, 'ca-cert.pem'),
    '-CAkey', path.join(dir, 'ca-key.pem'), '-CAcreateserial', '-out', path.join(dir, `${name}-cert.pem`),
    '-days', '2', '-extfile', extFile]);
}

/** Writes a PSK file with one random 32-byte key for `user`; returns its path. */
export function makePskFile(dir: string, name: string, user: string): string {
  const file = path.join(dir, name);
  writeFileSync(file, `${user}:${randomBytes(32).toString('hex')}\n`);
  return file;
}
