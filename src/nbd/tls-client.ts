// Owns the client side of NBD TLS: turning an nbds URI's parameters into Node TLS options, and
// running the TLS handshake on the socket right after the server acknowledged STARTTLS.
// x509: ca-cert.pem from tls-certificates=DIR is the only trust anchor (the system CAs when no
// directory is given), client-cert.pem and client-key.pem are sent when both exist, and the
// server's certificate must name the host (for a Unix socket: "localhost", what test and
// qemu/nbdkit deployments put in it) unless tls-verify-peer=false. PSK: the key of the
// identity (USER@, tls-username=, else the login name) from an nbdkit-style file; PSK
// replaces certificates. TLS 1.2 or later. Any failure is an NbdError and the connection is
// closed: a client that asked for TLS never goes on in plaintext.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import type { Socket } from 'node:net';
import { NbdError } from '../errors.js';
import type { NbdUri, NbdTlsParams } from './uri.js';
import { MIB } from '../constants.js';

/** Longest PSK identity accepted (bytes), and longest key (OpenSSL's PSK limit). */
const PSK_IDENTITY_BYTES_MAX = 128;
const PSK_KEY_BYTES_MAX = 256;
/** Largest credential file read (a PEM bundle or a PSK file). */
const CREDENTIAL_FILE_BYTES_MAX = MIB;

/** The server name checked against the certificate for a Unix socket. */
const UNIX_SOCKET_SERVER_NAME = 'localhost';

/**
 * Runs the TLS client handshake on `socket` (STARTTLS already acknowledged) and resolves
 * with the secure socket. Rejects with `NbdError` (`DMIO_ERR_NBD_SERVER` for a refused or
 * failed handshake, `DMIO_ERR_INVALID_DEVICE_SPEC`-like configuration errors as
 * `DMIO_ERR_NBD_PROTOCOL`) after destroying the socket.
 */
export async function startClientTls(socket: Socket, target: NbdUri): Promise<tls.TLSSocket> {
  const params = target.tls;
  if (params === undefined) throw new Error('startClientTls needs an nbds URI');
  const options = clientTlsOptions(target, params);
  return new Promise((resolve, reject) => {
    const secure = tls.connect({ ...options, socket });
    const onError = (error: Error): void => {
      secure.destroy();
      socket.destroy();
      reject(new NbdError('DMIO_ERR_NBD_SERVER', target.uri,
        `TLS handshake failed: ${error.message}`, { cause: error }));
    };
    secure.once('error', onError);
    secure.once('secureConnect', () => {
      secure.off('error', onError);
      resolve(secure);
    });
  });
}

/** Node TLS client options for an nbds URI; reads the credential files. */
export function clientTlsOptions(target: NbdUri, params: NbdTlsParams): tls.ConnectionOptions {
  const servername = target.address.transport === 'tcp' ?
    target.address.host : UNIX_SOCKET_SERVER_NAME;
  const base: tls.ConnectionOptions = { minVersion: 'TLSv1.2', rejectUnauthorized: params.verifyPeer };
  if (params.pskFile !== undefined) {
    const identity = params.username ?? os.userInfo().username;
    const key = pskKeyOf(target.uri, params.pskFile, identity);
    return {
      ...base,
      // TLS 1.2 needs PSK suites named; TLS 1.3 keeps Node's default suites.
      ciphers: 'PSK:ECDHE-PSK',
      checkServerIdentity: () => undefined,
      pskCallback: () => ({ psk: key, identity }),
    };
  }
  const options: tls.ConnectionOptions = {
    ...base,
    ...(isIpAddress(servername) ? {} : { servername }),
    checkServerIdentity: (_host, cert) => tls.checkServerIdentity(servername, cert),
  };
  const dir = params.certificatesDir;
  if (dir === undefined) return options;
  const read = (name: string): Buffer | undefined => readCredential(target.uri, path.join(dir, name));
  const ca = read('ca-cert.pem');
  if (ca === undefined) configError(target.uri, `${path.join(dir, 'ca-cert.pem')} is missing`);
  const cert = read('client-cert.pem');
  const key = read('client-key.pem');
  const crl = read('ca-crl.pem');
  return {
    ...options, ca,
    ...(cert !== undefined && key !== undefined ? { cert, key } : {}),
    ...(crl === undefined ? {} : { crl }),
  };
}

/** The hex key of `identity` in an nbdkit-style PSK file. */
function pskKeyOf(uri: string, file: string, identity: string): Buffer {
  if (Buffer.byteLength(identity) > PSK_IDENTITY_BYTES_MAX) {
    configError(uri, `the PSK identity is longer than ${PSK_IDENTITY_BYTES_MAX} bytes`);
  }
  const text = readCredential(uri, file)?.toString('utf8');
  if (text === undefined) configError(uri, `the PSK file ${file} does not exist`);
  for (const rawLine of text.split('\n')) {
    const line = rawLine.replace(/\r$/, '');
    if (!line.startsWith(`${identity}:`)) continue;
    const hex = line.slice(identity.length + 1);
    if (!/^(?:[0-9a-fA-F]{2})+$/.test(hex) || hex.length / 2 > PSK_KEY_BYTES_MAX) {
      configError(uri, `the key of ${identity} in ${file} is not 1 to ${PSK_KEY_BYTES_MAX} bytes of hex`);
    }
    return Buffer.from(hex, 'hex');
  }
  return configError(uri, `no key for user ${identity} in ${file}`);
}

/** A credential file's bytes, or undefined when it does not exist. */
function readCredential(uri: string, file: string): Buffer | undefined {
  try {
    const stat = fs.statSync(file);
    if (stat.size > CREDENTIAL_FILE_BYTES_MAX) configError(uri, `${file} is too large`);
    return fs.readFileSync(file);
  } catch (error) {
    if (error instanceof NbdError) throw error;
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    return configError(uri, `cannot read ${file}: ${(error as Error).message}`);
  }
}

function isIpAddress(host: string): boolean {
  return /^[\d.]+$/.test(host) || host.includes(':');
}

function configError(uri: string, message: string): never {
  throw new NbdError('DMIO_ERR_NBD_PROTOCOL', uri, `TLS configuration: ${message}`);
}
