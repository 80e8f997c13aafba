// Owns the server side of STARTTLS: the TLS mode clients meet and the upgrade of a raw stream
// to TLS with x509 certificates or pre-shared keys. Each upgrade runs inside a `tls.Server`
// that never listens (the socket is handed to it), because only the server's own connection
// handler checks a client certificate's chain; a bare `TLSSocket` would accept any.

import tls from 'node:tls';
import type { Duplex } from 'node:stream';
import { InvalidRequestError } from '../errors.js';
import type { TlsMode } from './handshake.js';

/** x509 credentials in PEM, as read from `ca-cert.pem`, `server-cert.pem`, `server-key.pem`. */
export interface NbdServerCertificates {
  /** The CA that signs client certificates (and the server's). */
  ca: string | Buffer;
  /** The server's certificate chain. */
  cert: string | Buffer;
  /** The server's private key. */
  key: string | Buffer;
  /** A certificate revocation list (`ca-crl.pem`), if any. */
  crl?: string | Buffer;
  /** Require and check a client certificate signed by `ca` (default false). */
  verifyPeer?: boolean;
}

/** TLS options of the server. */
export interface NbdServerTlsOptions {
  /** `off`: STARTTLS is refused; `on`: offered; `require`: nothing but ABORT before it. */
  mode: TlsMode;
  /** x509 credentials; exactly one of `certificates` and `psk` unless `mode` is `off`. */
  certificates?: NbdServerCertificates;
  /** Pre-shared keys by identity (user name), as in nbdkit's `--tls-psk` file. */
  psk?: ReadonlyMap<string, Uint8Array>;
  /** Time a client has for the TLS handshake (default 10000 ms). */
  handshakeTimeoutMs?: number;
}

/** The TLS side of a server: its mode and how to upgrade a stream. */
export interface TlsUpgrade {
  readonly mode: TlsMode;
  upgrade(raw: Duplex): Promise<Duplex>;
}

const TLS_HANDSHAKE_TIMEOUT_MS_DEFAULT = 10_000;

/** Checks the options and prepares upgrades; mode `off` when `options` is absent. */
export function createTlsUpgrade(options: NbdServerTlsOptions | undefined): TlsUpgrade {
  const mode = options?.mode ?? 'off';
  if (options === undefined || mode === 'off') {
    return { mode: 'off', upgrade: () => Promise.reject(new Error('TLS is off')) };
  }
  if (mode !== 'on' && mode !== 'require') {
    throw new InvalidRequestError('DMIO_ERR_INVALID_ARG_VALUE', 'options.tls.mode',
      `must be off, on or require, got ${String(mode)}`);
  }
  if ((options.certificates === undefined) === (options.psk === undefined)) {
    throw new InvalidRequestError('DMIO_ERR_INVALID_ARG_VALUE', 'options.tls',
      'TLS needs exactly one of certificates and psk');
  }
  const serverOptions = tlsServerOptions(options);
  return { mode, upgrade: (raw) => upgradeServerSide(raw, serverOptions) };
}

function tlsServerOptions(options: NbdServerTlsOptions): tls.TlsOptions {
  const common: tls.TlsOptions = {
    minVersion: 'TLSv1.2',
    handshakeTimeout: options.handshakeTimeoutMs ?? TLS_HANDSHAKE_TIMEOUT_MS_DEFAULT,
  };
  const certificates = options.certificates;
  if (certificates !== undefined) {
    const verifyPeer = certificates.verifyPeer === true;
    return {
      ...common, ca: certificates.ca, cert: certificates.cert, key: certificates.key,
      ...(certificates.crl === undefined ? {} : { crl: certificates.crl }),
      requestCert: verifyPeer, rejectUnauthorized: verifyPeer,
    };
  }
  const keys = options.psk ?? new Map<string, Uint8Array>();
  return {
    ...common,
    // TLS 1.2 PSK needs PSK suites named; TLS 1.3 suites stay at their defaults.
    ciphers: 'PSK',
    pskCallback: (_socket: tls.TLSSocket, identity: string) => {
      const key = keys.get(identity);
      return key === undefined ? null : Buffer.from(key);
    },
  } as tls.TlsOptions;
}

/** Runs the server side of a TLS handshake on `raw`; resolves with the secure stream. */
function upgradeServerSide(raw: Duplex, options: tls.TlsOptions): Promise<Duplex> {
  const server = tls.createServer(options);
  return new Promise((resolve, reject) => {
    server.once('secureConnection', (secure: tls.TLSSocket) => resolve(secure));
    server.once('tlsClientError', (error: Error) => reject(error));
    server.emit('connection', raw);
  });
}
