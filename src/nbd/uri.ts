// Owns parsing of NBD URIs into an address and an export name. Accepted forms, as in the NBD
// URI standard used by libnbd, qemu and nbdkit:
//   nbd://HOST[:PORT][/EXPORT]          TCP, port 10809 by default
//   nbd+unix:///EXPORT?socket=PATH      Unix domain socket
//   nbds://[USER@]HOST[:PORT][/EXPORT][?TLS]         TCP, TLS required
//   nbds+unix://[USER@]/EXPORT?socket=PATH[&TLS]     Unix domain socket, TLS required
// The export name is the percent-decoded path after the first '/'; an absent path is the
// default export "". TLS query parameters, spelt as libnbd spells them: `tls-certificates=DIR`
// (ca-cert.pem, plus client-cert.pem and client-key.pem when present), `tls-psk-file=FILE`,
// `tls-username=NAME` (or USER@, libnbd's form; default the login name) and
// `tls-verify-peer=false`. They are refused on the plain schemes.

import { InvalidRequestError } from '../errors.js';
import { NBD_STRING_BYTES_MAX } from './protocol.js';

/** IANA port of NBD over TCP. */
export const NBD_DEFAULT_PORT = 10809;

/** Where an NBD server listens. */
export type NbdAddress =
  | { readonly transport: 'tcp'; readonly host: string; readonly port: number }
  | { readonly transport: 'unix'; readonly socketPath: string };

/** A parsed NBD URI. */
export interface NbdUri {
  /** The URI as given, used as the device's name. */
  readonly uri: string;
  /** Where to connect. */
  readonly address: NbdAddress;
  /** The export to ask for ("" is the server's default export). */
  readonly exportName: string;
  /** Present for nbds:// and nbds+unix://: TLS is required, never plaintext. */
  readonly tls?: NbdTlsParams;
}

/** TLS settings from an nbds URI. */
export interface NbdTlsParams {
  /** Directory with ca-cert.pem (and client-cert.pem, client-key.pem); absent: system CAs. */
  readonly certificatesDir?: string;
  /** nbdkit-style PSK file (`username:hexkey` lines); replaces certificates. */
  readonly pskFile?: string;
  /** The PSK identity (from USER@ or tls-username=). */
  readonly username?: string;
  /** Check the server's certificate against the CA and its name (default true). */
  readonly verifyPeer: boolean;
}

/**
 * Parses an NBD URI.
 * @throws InvalidRequestError `DMIO_ERR_INVALID_DEVICE_SPEC` for anything malformed.
 */
export function parseNbdUri(uri: string): NbdUri {
  if (typeof uri !== 'string' || uri.length === 0) fail(String(uri), 'an NBD URI is required');
  // `nbds+unix://alice@/…` (libnbd's form) has a user but no host, which URL refuses: the
  // user is taken off first.
  const unixUser = /^nbds\+unix:\/\/([^@/?#]*)@\//i.exec(uri);
  let url: URL;
  try {
    url = new URL(unixUser === null ? uri : `nbds+unix:///${uri.slice(unixUser[0].length)}`);
  } catch {
    fail(uri, 'not a URI');
  }
  const exportName = exportNameOf(uri, url);
  if (url.hash !== '') fail(uri, 'a fragment is not allowed');
  const secure = url.protocol === 'nbds:' || url.protocol === 'nbds+unix:';
  const user = unixUser === null ? url.username : unixUser[1] ?? '';
  if (url.password !== '' || (user !== '' && !secure)) {
    fail(uri, 'only nbds URIs take a user name (the TLS PSK identity), and none a password');
  }
  const query = queryOf(uri, url);
  const tls = secure ? tlsParams(uri, user, query) : undefined;
  if (!secure) {
    for (const name of query.keys()) if (name.startsWith('tls-')) fail(uri, `${name} needs nbds`);
  }
  const unix = url.protocol === 'nbd+unix:' || url.protocol === 'nbds+unix:';
  if (!unix && url.protocol !== 'nbd:' && url.protocol !== 'nbds:') {
    fail(uri, `scheme ${url.protocol} is not nbd:, nbd+unix:, nbds: or nbds+unix:`);
  }
  for (const name of query.keys()) {
    if (!(name === 'socket' && unix) && !TLS_PARAMETERS.includes(name)) {
      fail(uri, `unknown query parameter ${name}`);
    }
  }
  const address = unix ? unixAddress(uri, url, query) : tcpAddress(uri, url, query);
  return tls === undefined ? { uri, address, exportName } : { uri, address, exportName, tls };
}

const TLS_PARAMETERS = ['tls-certificates', 'tls-psk-file', 'tls-username', 'tls-verify-peer'];

/** The query's parameters, percent-decoded ('+' stays '+', as in a file name); no repeats. */
function queryOf(uri: string, url: URL): Map<string, string> {
  const query = new Map<string, string>();
  for (const pair of url.search.slice(1).split('&')) {
    if (pair === '') continue;
    const equals = pair.indexOf('=');
    const name = equals < 0 ? pair : pair.slice(0, equals);
    if (query.has(name)) fail(uri, `${name} is given twice`);
    try {
      query.set(name, decodeURIComponent(equals < 0 ? '' : pair.slice(equals + 1)));
    } catch {
      fail(uri, `${name} is not valid percent-encoding`);
    }
  }
  return query;
}

function tlsParams(uri: string, user: string, query: ReadonlyMap<string, string>): NbdTlsParams {
  const certificatesDir = query.get('tls-certificates');
  const pskFile = query.get('tls-psk-file');
  const fromQuery = query.get('tls-username');
  let fromUser: string | undefined;
  try {
    fromUser = user === '' ? undefined : decodeURIComponent(user);
  } catch {
    fail(uri, 'the user name is not valid percent-encoding');
  }
  if (fromQuery !== undefined && fromUser !== undefined && fromQuery !== fromUser) {
    fail(uri, 'the user name and tls-username differ');
  }
  const verify = query.get('tls-verify-peer') ?? 'true';
  if (verify !== 'true' && verify !== 'false') fail(uri, 'tls-verify-peer must be true or false');
  for (const [name, value] of [['tls-certificates', certificatesDir], ['tls-psk-file', pskFile]]) {
    if (value === '') fail(uri, `${String(name)} needs a path`);
  }
  if (certificatesDir !== undefined && pskFile !== undefined) {
    fail(uri, 'give tls-certificates or tls-psk-file, not both');
  }
  const username = fromQuery ?? fromUser;
  return {
    verifyPeer: verify === 'true',
    ...(certificatesDir === undefined ? {} : { certificatesDir }),
    ...(pskFile === undefined ? {} : { pskFile }),
    ...(username === undefined ? {} : { username }),
  };
}

function tcpAddress(uri: string, url: URL, query: ReadonlyMap<string, string>): NbdAddress {
  if (query.has('socket')) fail(uri, 'nbd:// takes no socket parameter');
  let host = url.hostname;
  if (host === '') fail(uri, 'nbd:// needs a host');
  if (host.startsWith('[') && host.endsWith(']')) host = host.slice(1, -1);
  let port = NBD_DEFAULT_PORT;
  if (url.port !== '') {
    port = Number(url.port);
    if (!Number.isInteger(port) || port < 1 || port > 65535) fail(uri, 'port must be 1-65535');
  }
  return { transport: 'tcp', host: decodeURIComponent(host), port };
}

function unixAddress(uri: string, url: URL, query: ReadonlyMap<string, string>): NbdAddress {
  if (url.hostname !== '') {
    fail(uri, 'nbd+unix:// takes no host (write nbd+unix:///EXPORT?socket=…)');
  }
  const socketPath = query.get('socket') ?? '';
  if (socketPath === '') fail(uri, 'nbd+unix needs exactly one ?socket=');
  return { transport: 'unix', socketPath };
}

function exportNameOf(uri: string, url: URL): string {
  const path = url.pathname;
  let exportName: string;
  try {
    exportName = path === '' || path === '/' ? '' : decodeURIComponent(path.slice(1));
  } catch {
    fail(uri, 'the export name is not valid percent-encoding');
  }
  if (Buffer.byteLength(exportName) > NBD_STRING_BYTES_MAX) {
    fail(uri, `export names are at most ${NBD_STRING_BYTES_MAX} bytes`);
  }
  return exportName;
}

function fail(uri: string, message: string): never {
  throw new InvalidRequestError('DMIO_ERR_INVALID_DEVICE_SPEC', 'uri', `${message}: ${uri}`);
}
