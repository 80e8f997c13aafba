// Owns opening one NBD connection: the socket (TCP with TCP_NODELAY, or a Unix socket) with its
// `SocketInput` as `onread` (given at creation, as Node requires), the handshake reading
// through that input, and one deadline covering both. Failures are typed: a socket that cannot
// connect is an `OpenError` with the OS errno; a server that refuses or breaks the handshake is
// an `NbdError` (_SERVER, _PROTOCOL, _DISCONNECTED); the deadline is `DMIO_ERR_NBD_TIMEOUT`. On
// any failure the socket is destroyed before the promise rejects.

import type net from 'node:net';
import { nodeNet } from '../builtins.js';
import { errnoOf, NbdError, OpenError } from '../errors.js';
import { NbdConnection, type ConnectionSettings } from './connection.js';
import { HandshakeReader } from './handshake-reader.js';
import { negotiate } from './handshake.js';
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
    nodeNet().createConnection({ path: address.socketPath, onread: input.onread }) :
    nodeNet().createConnection({ host: address.host, port: address.port, noDelay: true,
      onread: input.onread });
  // Attached before the socket connects, so no byte the server sends arrives unclaimed.
  const reader = new HandshakeReader(socket);
  input.attach(reader);
  let timer: NodeJS.Timeout | null = null;
  const deadline = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new NbdError('DMIO_ERR_NBD_TIMEOUT', target.uri,
      `connect and handshake took longer than ${settings.connectTimeoutMs} ms`)),
    settings.connectTimeoutMs);
  });
  try {
    await Promise.race([connected(socket, target.uri), deadline]);
    const info = await Promise.race([negotiate(socket, reader, {
      uri: target.uri, exportName: target.exportName, structuredReplies: settings.structuredReplies,
    }), deadline]);
    const leftover = reader.detach();
    return new NbdConnection(socket, input, info, leftover, settings);
  } catch (error) {
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
