// Owns opening one NBD connection: the socket (TCP with TCP_NODELAY, or a Unix socket) with its
// `SocketInput` as `onread` (given at creation, as Node requires), the handshake reading
// through that input, and one deadline covering both. For an nbds URI the handshake starts
// TLS first (STARTTLS, then tls-client.ts); the TLS socket cannot take `onread`, so its data
// events feed a new input. tls-client.ts (with Node's TLS and crypto) is imported when a
// handshake reaches STARTTLS, the step that needs it, so a plaintext connection and a program
// that never opens an nbds URI do not load them (docs/cli.md, Start-up). Failures are typed: a socket that cannot connect is an `OpenError`
// with the OS errno; a server that refuses or breaks the handshake (or TLS) is an `NbdError`
// (_SERVER, _PROTOCOL, _DISCONNECTED); the deadline is `DMIO_ERR_NBD_TIMEOUT`. On any failure
// the socket is destroyed before the promise rejects.
import net from 'node:net';
import { errnoOf, NbdError, OpenError } from '../errors.js';
import { NbdConnection, type ConnectionSettings } from './connection.js';
import { HandshakeReader } from './handshake-reader.js';
import { negotiate, type TlsUpgrade } from './handshake.js';
import { SocketInput } from './socket-input.js';
import type { NbdUri } from './uri.js';

/** What opening a connection needs. */
export interface ConnectSettings extends ConnectionSettings {
  /** Deadline for connect plus handshake. */
  readonly connectTimeoutMs: number;
  /** Ask the server for structured replies. */
  readonly structuredReplies: boolean;
}

/**
 * Connects, negotiates and returns a connection in the transmission phase.
 * @throws OpenError when the socket cannot connect; NbdError when the handshake fails.
 */
export async function connectNbd(
  target: NbdUri,
  settings: ConnectSettings,
): Promise<NbdConnection> {
  const address = target.address;
  const input = new SocketInput();
  const socket = address.transport === 'unix' ?
    net.createConnection({ path: address.socketPath, onread: input.onread }) :
    net.createConnection({ host: address.host, port: address.port, noDelay: true,
      onread: input.onread });
  // Attached before the socket connects, so no byte the server sends arrives unclaimed.
  let live = { socket, input, reader: new HandshakeReader(socket) };
  input.attach(live.reader);
  const upgrade: TlsUpgrade = async () => {
    const { startClientTls } = await import('./tls-client.js').catch((error: unknown) => {
      throw new NbdError('DMIO_ERR_NBD_PROTOCOL', target.uri,
        `TLS is not available: ${String(error)}`, { cause: error });
    });
    live.reader.detach();
    const secure = await startClientTls(socket, target);
    const secureInput = new SocketInput();
    live = { socket: secure, input: secureInput, reader: new HandshakeReader(secure) };
    secureInput.attach(live.reader);
    secure.on('data', (chunk: Buffer) => secureInput.feedChunk(chunk));
    return live;
  };
  let timer: NodeJS.Timeout | null = null;
  const deadline = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new NbdError('DMIO_ERR_NBD_TIMEOUT', target.uri,
      `connect and handshake took longer than ${settings.connectTimeoutMs} ms`)),
    settings.connectTimeoutMs);
  });
  try {
    await Promise.race([connected(socket, target.uri), deadline]);
    const info = await Promise.race([negotiate(socket, live.reader, {
      uri: target.uri, exportName: target.exportName, structuredReplies: settings.structuredReplies,
    }, target.tls === undefined ? undefined : upgrade), deadline]);
    const leftover = live.reader.detach();
    return new NbdConnection(live.socket, live.input, info, leftover, settings);
  } catch (error) {
    live.socket.destroy();
    socket.destroy();
    throw error;
  } finally {
    if (timer !== null) clearTimeout(timer);
  }
}

function connected(socket: net.Socket, uri: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (error: Error): void => {
      const message = `cannot connect to the NBD server: ${error.message}`;
      reject(new OpenError(uri, errnoOf(error), message, { cause: error }));
    };
    socket.once('error', onError);
    socket.once('connect', () => {
      socket.off('error', onError);
      resolve();
    });
  });
}
