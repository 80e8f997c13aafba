// Owns one event-loop connection thread of a threaded NbdServer (the worker's entry module
// for the 'events' driver; see connection-threads.ts). It opens every export again
// (thread-exports.ts: files through the server's descriptor, tables from their text over
// those), on an io_uring engine of its own set as `dmio serve` sets its own, and serves the
// connections it is handed with an NbdServer of its own (threads: 0), so a connection runs
// exactly the code it runs on the main thread. On `shutdown` it closes that server (requests
// in flight reply, devices are flushed), closes its devices and engine, and exits.

import net from 'node:net';
import { parentPort, workerData } from 'node:worker_threads';
import { IoUringEngine } from '../devices/file-ring.js';
import type { BlockDevice } from '../devices/block-device.js';
import { NbdServer } from './nbd-server.js';
import { closeThreadDevices, openInThread } from './thread-exports.js';
import { SERVER_CONNECTIONS_MAX } from './limits.js';
import { ThreadWriteGate } from './thread-write-gate.js';
import type { NbdServerTlsOptions } from './tls.js';
import type { FromThread, ThreadSetup, ToThread } from './connection-threads.js';

const setup = workerData as ThreadSetup;
const port = parentPort;

function post(message: FromThread): void {
  port?.postMessage(message);
}

async function run(): Promise<void> {
  if (port === null) return;
  const engine = new IoUringEngine({ sqPollIdleMs: 0, inlineWrites: true });
  const devices: BlockDevice[] = [];
  let server: NbdServer;
  try {
    for (const entry of setup.exports) devices.push(await openInThread(entry, engine));
    server = new NbdServer({
      exports: setup.exports.map((entry, index) => ({
        name: entry.name, description: entry.description, readOnly: entry.readOnly,
        device: devices[index] as BlockDevice,
      })),
      connectionsMax: SERVER_CONNECTIONS_MAX,
      inflightRequestsMax: setup.inflightRequestsMax,
      connectionBytesMax: setup.connectionBytesMax,
      handshakeTimeoutMs: setup.handshakeTimeoutMs,
      shutdownGraceMs: setup.shutdownGraceMs,
      ...(setup.tls === undefined ? {} : { tls: reviveTls(setup.tls) }),
      log: (message) => post({ type: 'log', message }),
    }, {
      gates: setup.exports.map((entry) => new ThreadWriteGate(entry.gateState, setup.slot)),
      poolRetainedBytes: setup.poolRetainedBytes,
      onConnectionClosed: () => post({ type: 'closed' }),
    });
  } catch (error) {
    await closeThreadDevices(devices, engine);
    post({ type: 'failed', message: (error as Error).message });
    port.close();
    return;
  }
  let stopping: Promise<void> | null = null;
  port.on('message', (message: ToThread) => {
    if (message.type === 'connection') {
      // Said before the descriptor is wrapped: after this the thread owns it.
      post({ type: 'taken', fd: message.fd });
      // Paused, as a listener with pauseOnConnect would give it (server-socket.ts needs that).
      server.handleConnection(new net.Socket({
        fd: message.fd, readable: true, writable: true, pauseOnCreate: true,
      } as net.SocketConstructorOpts));
    } else {
      stopping ??= stop(server, devices, engine);
    }
  });
  post({ type: 'ready' });
}

async function stop(server: NbdServer, devices: readonly BlockDevice[], engine: IoUringEngine): Promise<void> {
  try {
    await server.close();
  } catch (error) {
    post({ type: 'log', message: (error as Error).message });
  }
  await closeThreadDevices(devices, engine);
  port?.close();
}

/** Certificates arrive as Uint8Array after the message copy; TLS wants strings or Buffers. */
function reviveTls(tls: NbdServerTlsOptions): NbdServerTlsOptions {
  const certificates = tls.certificates;
  if (certificates === undefined) return tls;
  const revive = (value: string | Uint8Array): string | Buffer =>
    typeof value === 'string' ? value : Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  return {
    ...tls,
    certificates: {
      ...certificates, ca: revive(certificates.ca), cert: revive(certificates.cert),
      key: revive(certificates.key),
      ...(certificates.crl === undefined ? {} : { crl: revive(certificates.crl) }),
    },
  };
}

void run();
