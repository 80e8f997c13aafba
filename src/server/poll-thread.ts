// Owns one polling connection thread of a threaded NbdServer (the worker's entry module when
// the server polls; see connection-threads.ts). The server's thread runs each handshake and
// hands over the connection with what was negotiated; this thread serves the transmission
// phase of all the connections it is given from one loop: `poll` over their sockets and a
// wake-up descriptor, then each ready connection read, run and answered on the thread
// (polled-connection.ts). No libuv read and no promise sits on a request's path: the loop
// never returns to the event loop while it serves, so messages from the server are taken
// with `receiveMessageOnPort` after the server signals the wake-up descriptor.
//
// It opens every export again as the event-loop threads do (thread-exports.ts). On
// `shutdown`: no more requests are read, owed replies are sent (within the grace period),
// every writable export's device is flushed, then the devices are closed and the thread exits.

import { performance } from 'node:perf_hooks';
import { parentPort, receiveMessageOnPort, workerData } from 'node:worker_threads';
import { dmIoClientCreate } from '../core/client.js';
import type { BlockDevice } from '../devices/block-device.js';
import { ThreadpoolEngine } from '../devices/file-threadpool-engine.js';
import {
  drainWakeFd, POLLERR, POLLHUP, POLLIN, POLLNVAL, POLLOUT, PollSet, setNonBlocking,
} from '../sys/socket-poll.js';
import { BufferPool } from './buffer-pool.js';
import type { FromThread, ThreadSetup, ToThread, HandedTransmission } from './connection-threads.js';
import { flushProgram } from './export-io.js';
import { runIoProgramBlocking } from './io-program.js';
import { SERVER_CONNECTIONS_MAX, SERVER_REQUEST_BYTES_MAX } from './limits.js';
import { ServedExport } from './nbd-export.js';
import { PolledConnection, type PolledLimits } from './polled-connection.js';
import { closeThreadDevices, openInThread } from './thread-exports.js';
import { ThreadWriteGate } from './thread-write-gate.js';

/**
 * Longest poll. A thread inside a native call can be neither terminated nor left behind by
 * `process.exit` (both wait for the call to return), so the loop never waits longer.
 */
const POLL_MS_MAX = 1_000;

const setup = workerData as ThreadSetup;
const port = parentPort;

function post(message: FromThread): void {
  port?.postMessage(message);
}

function log(message: string): void {
  post({ type: 'log', message });
}

/** What the loop serves with. */
interface Served {
  readonly exports: readonly ServedExport[];
  readonly client: ReturnType<typeof dmIoClientCreate>;
  readonly pool: BufferPool;
  readonly limits: PolledLimits;
}

async function run(): Promise<void> {
  if (port === null) return;
  // Requests run with blocking calls (`submitSync`, `extentsSync`); the engine only opens.
  const engine = new ThreadpoolEngine();
  const devices: BlockDevice[] = [];
  try {
    for (const entry of setup.exports) devices.push(await openInThread(entry, engine));
  } catch (error) {
    await closeThreadDevices(devices, engine);
    post({ type: 'failed', message: (error as Error).message });
    port.close();
    return;
  }
  const served: Served = {
    exports: setup.exports.map((entry, index) => new ServedExport({
      name: entry.name, description: entry.description, readOnly: entry.readOnly,
      device: devices[index] as BlockDevice,
    }, new ThreadWriteGate(entry.gateState, setup.slot))),
    client: dmIoClientCreate(),
    pool: new BufferPool(setup.poolRetainedBytes, SERVER_REQUEST_BYTES_MAX),
    limits: { connectionBytesMax: setup.connectionBytesMax,
      requestsPerTurnMax: setup.inflightRequestsMax },
  };
  post({ type: 'ready' });
  try {
    serve(served);
  } catch (error) {
    // A bug: the server closes the sockets this thread still held once it has exited.
    log(`a polling connection thread failed: ${String(error)}`);
  } finally {
    flushAll(served);
    await closeThreadDevices(devices, engine);
    port.close();
  }
}

/** The loop: serves every connection handed over until a shutdown has drained them. */
function serve(served: Served): void {
  const connections: PolledConnection[] = [];
  const pollSet = new PollSet(1 + SERVER_CONNECTIONS_MAX);
  let stopAtMs = Infinity;
  for (;;) {
    const stopping = takeMessages(served, connections) || stopAtMs !== Infinity;
    if (stopping && stopAtMs === Infinity) stopAtMs = performance.now() + setup.shutdownGraceMs;
    // Every connection, also one handed over after the shutdown began.
    if (stopping) for (const connection of connections) connection.stop();
    const nowMs = performance.now();
    for (const connection of connections) connection.checkDeadline(nowMs);
    if (nowMs >= stopAtMs) for (const connection of connections) connection.abandon();
    retireFinished(connections);
    if (stopAtMs !== Infinity && connections.length === 0) return;
    pollSet.set(0, setup.wakeFd, POLLIN);
    connections.forEach((connection, index) => pollSet.set(index + 1, connection.fd, connection.events));
    pollSet.wait(1 + connections.length, pollTimeoutMs(connections, stopAtMs));
    if (pollSet.revents(0) !== 0) drainWakeFd(setup.wakeFd);
    connections.forEach((connection, index) => {
      const revents = pollSet.revents(index + 1);
      // Bytes the handshake read ahead are parsed with no POLLIN to announce them.
      if ((revents & (POLLIN | POLLHUP | POLLERR | POLLNVAL)) !== 0 || connection.hasKeptBytes) {
        connection.readable();
      }
      if ((revents & POLLOUT) !== 0) connection.writable();
    });
  }
}

/** Takes the server's messages; true once it asked the thread to stop. */
function takeMessages(served: Served, connections: PolledConnection[]): boolean {
  let stopping = false;
  for (let entry = receiveMessageOnPort(port as NonNullable<typeof port>); entry !== undefined;
    entry = receiveMessageOnPort(port as NonNullable<typeof port>)) {
    const message = entry.message as ToThread;
    if (message.type === 'shutdown') {
      stopping = true;
    } else if (message.type === 'transmission') {
      post({ type: 'taken', fd: message.fd });
      connections.push(adopt(served, message));
    }
  }
  return stopping;
}

function adopt(served: Served, handed: HandedTransmission): PolledConnection {
  const exported = served.exports[handed.exportIndex] as ServedExport;
  const negotiated = {
    served: exported, structuredReplies: handed.structuredReplies,
    baseAllocation: handed.baseAllocation, blockSizesAsked: handed.blockSizesAsked,
  };
  const connection = new PolledConnection(handed.fd, negotiated, handed.kept, served.client,
    served.pool, served.limits, log);
  try {
    setNonBlocking(handed.fd);
  } catch (error) {
    // Ended, not closed here: the server hears of it before the descriptor closes.
    log(`closing a connection: ${(error as Error).message}`);
    connection.abandon();
  }
  return connection;
}

/** Closes the connections that are over, telling the server of each. */
function retireFinished(connections: PolledConnection[]): void {
  let kept = 0;
  for (const connection of connections) {
    if (connection.finished) {
      // Said before the descriptor closes: the server closes what a dead thread still owns.
      post({ type: 'closed', fd: connection.fd });
      connection.dispose();
    } else {
      connections[kept] = connection;
      kept += 1;
    }
  }
  connections.length = kept;
}

function pollTimeoutMs(connections: readonly PolledConnection[], stopAtMs: number): number {
  if (connections.some((connection) => connection.hasKeptBytes)) return 0;
  let untilMs = stopAtMs;
  for (const connection of connections) untilMs = Math.min(untilMs, connection.deadlineMs);
  if (untilMs === Infinity) return POLL_MS_MAX;
  return Math.max(0, Math.min(POLL_MS_MAX, Math.ceil(untilMs - performance.now())));
}

/** Flushes every writable export's device; a failure is logged (the server flushes again). */
function flushAll(served: Served): void {
  for (const exported of served.exports) {
    if (exported.readOnly) continue;
    const failure = runIoProgramBlocking(served.client, exported, flushProgram());
    if (failure !== null) log(`flushing '${exported.name}' failed: ${failure.message}`);
  }
}

void run();
