// Owns parsing of NBD URIs into an address and an export name. Accepted forms, as in the NBD
// URI standard used by libnbd, qemu and nbdkit:
//   nbd://HOST[:PORT][/EXPORT]          TCP, port 10809 by default
//   nbd+unix:///EXPORT?socket=PATH      Unix domain socket
// The export name is the percent-decoded path after the first '/'; an absent path is the
// default export "". TLS forms (nbds://, nbds+unix://) are refused: this client has no TLS.

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
}

/**
 * Parses an NBD URI.
 * @throws InvalidRequestError `DMIO_ERR_INVALID_DEVICE_SPEC` for anything malformed.
 */
export function parseNbdUri(uri: string): NbdUri {
  if (typeof uri !== 'string' || uri.length === 0) fail(String(uri), 'an NBD URI is required');
  let url: URL;
  try {
    url = new URL(uri);
  } catch {
    fail(uri, 'not a URI');
  }
  const exportName = exportNameOf(uri, url);
  if (url.username !== '' || url.password !== '') fail(uri, 'user names are not supported');
  if (url.hash !== '') fail(uri, 'a fragment is not allowed');
  switch (url.protocol) {
    case 'nbd:':
      return { uri, address: tcpAddress(uri, url), exportName };
    case 'nbd+unix:':
      return { uri, address: unixAddress(uri, url), exportName };
    case 'nbds:':
    case 'nbds+unix:':
      return fail(uri, 'TLS (nbds) is not supported');
    default:
      return fail(uri, `scheme ${url.protocol} is not nbd: or nbd+unix:`);
  }
}

function tcpAddress(uri: string, url: URL): NbdAddress {
  if (url.search !== '') fail(uri, 'nbd:// takes no query parameters');
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

function unixAddress(uri: string, url: URL): NbdAddress {
  if (url.host !== '') fail(uri, 'nbd+unix:// takes no host (write nbd+unix:///EXPORT?socket=…)');
  // Query values are percent-decoded only: '+' stays '+', as in a file name.
  const sockets: string[] = [];
  for (const pair of url.search.slice(1).split('&')) {
    if (pair === '') continue;
    const equals = pair.indexOf('=');
    const name = equals < 0 ? pair : pair.slice(0, equals);
    if (name !== 'socket') fail(uri, `unknown query parameter ${name}`);
    try {
      sockets.push(decodeURIComponent(equals < 0 ? '' : pair.slice(equals + 1)));
    } catch {
      fail(uri, 'the socket path is not valid percent-encoding');
    }
  }
  if (sockets.length !== 1 || sockets[0] === '') fail(uri, 'nbd+unix needs exactly one ?socket=');
  return { transport: 'unix', socketPath: sockets[0] ?? '' };
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
