// Owns the connection threads of a threaded NbdServer: starting them, handing each connection
// to the thread with the fewest, counting what they serve, and stopping them. One event loop
// reads every socket and copies every payload of an unthreaded server; with threads, several
// cores do, as nbdkit's thread per connection does (docs/performance.md, "Serve on connection
// threads"). Each thread opens the exports again (thread-exports.ts). Two kinds, one per
// server (`ThreadSetup.driver`):
// - 'poll' (poll-thread.ts): the server runs the handshake and hands over the connection with
//   what was negotiated (`handTransmission`), then signals the thread's wake-up eventfd, which
//   this class owns; the thread serves it from its poll loop (polled-connection.ts).
// - 'events' (connection-thread.ts): the thread is handed the accepted connection (`hand`) and
//   runs an NbdServer of its own over it.
//
// A connection moves as a descriptor: the socket's descriptor is duplicated, the socket
// closed, and the duplicate posted to the thread. A thread that dies has its connections
// counted closed, its share of every export's write gate cleared, and the descriptors posted
// to it that it never took closed, and those a polling thread took and still held; later
// connections go to the others.

import fs from 'node:fs';
import { Worker } from 'node:worker_threads';
import type { Socket } from 'node:net';
import { duplicateSocketFd } from '../sys/socket-handoff.js';
import { closeFd, createWakeFd, signalWakeFd } from '../sys/socket-poll.js';
import { clearWriteGateSlot } from './thread-write-gate.js';
import type { NbdServerTlsOptions } from './tls.js';
import type { ThreadExport } from './thread-exports.js';

/** What every thread is started with. */
export interface ThreadSetup {
  readonly exports: readonly ThreadExport[];
  readonly slot: number;
  readonly inflightRequestsMax: number;
  readonly connectionBytesMax: number;
  readonly handshakeTimeoutMs: number;
  readonly shutdownGraceMs: number;
  readonly poolRetainedBytes: number;
  readonly tls: NbdServerTlsOptions | undefined;
  /**
   * 'events': each thread runs an NbdServer of its own and is handed accepted sockets
   * (connection-thread.ts). 'poll': the server runs each handshake and hands the thread the
   * negotiated connection, which it serves from its poll loop (poll-thread.ts).
   */
  readonly driver: 'events' | 'poll';
  /** The descriptor the server signals after posting to a polling thread (-1 otherwise). */
  readonly wakeFd: number;
}

/** A connection past its handshake, as a polling thread takes it over. */
export interface HandedTransmission {
  readonly type: 'transmission';
  readonly fd: number;
  readonly exportIndex: number;
  readonly structuredReplies: boolean;
  readonly baseAllocation: boolean;
  readonly blockSizesAsked: boolean;
  /** Bytes the handshake read past its end (pipelined requests). */
  readonly kept: Uint8Array;
}

/** Messages from the server to a thread. */
export type ToThread = { readonly type: 'connection'; readonly fd: number } |
  HandedTransmission | { readonly type: 'shutdown' };

/** Messages from a thread to the server. */
export type FromThread = { readonly type: 'ready' } |
  { readonly type: 'taken'; readonly fd: number } |
  { readonly type: 'failed'; readonly message: string } |
  { readonly type: 'log'; readonly message: string } |
  { readonly type: 'closed'; readonly fd?: number };

/**
 * Starts one thread. Run from TypeScript source (the tests, through tsx), a thread must first
 * register tsx's loader itself: Node 20 does not carry the parent's loader hooks into worker
 * threads.
 */
function startWorker(workerData: ThreadSetup): Worker {
  // The thread module lies next to this one: .js when built, .ts when run from source.
  const fromSource = import.meta.url.endsWith('.ts');
  const entry = workerData.driver === 'poll' ? 'poll-thread' : 'connection-thread';
  const module = new URL(`./${entry}${fromSource ? '.ts' : '.js'}`, import.meta.url);
  if (!fromSource) return new Worker(module, { workerData });
  const tsx = JSON.stringify(import.meta.resolve('tsx/esm/api'));
  return new Worker(`import(${tsx}).then((api) => { api.register(); ` +
    `return import(${JSON.stringify(module.href)}); });`, { eval: true, workerData });
}

/** How long past its grace period a stopping thread has to exit before it is left behind. */
const THREAD_EXIT_MARGIN_MS = 5_000;

interface Running {
  readonly worker: Worker;
  readonly slot: number;
  /** A polling thread's wake-up descriptor, owned here and closed after the thread exits. */
  readonly wakeFd: number;
  connections: number;
  /**
   * Descriptors posted to the thread that it has not yet said it took, with how many times
   * (a number the thread closed may come back from `dup` before its message says so).
   */
  readonly posted: FdCounts;
  /**
   * Descriptors a polling thread took and has not yet said it closes: plain descriptors, not
   * sockets of its event loop, so nothing closes them if the thread dies but this server.
   */
  readonly owned: FdCounts;
  alive: boolean;
  stopped: Promise<void>;
}

/** The threads of one server. */
export class ConnectionThreads {
  readonly #threads: Running[];
  readonly #gates: readonly SharedArrayBuffer[];
  readonly #log: (message: string) => void;
  readonly #onClosed: () => void;
  readonly #shutdownGraceMs: number;

  private constructor(
    threads: Running[], gates: readonly SharedArrayBuffer[], log: (message: string) => void,
    onClosed: () => void, shutdownGraceMs: number,
  ) {
    this.#threads = threads;
    this.#shutdownGraceMs = shutdownGraceMs;
    this.#gates = gates;
    this.#log = log;
    this.#onClosed = onClosed;
  }

  /**
   * Starts `count` threads and resolves once each has opened every export; rejects (and
   * stops those started) when one cannot. `onClosed` runs once per connection that ends.
   */
  static async start(
    count: number, setup: Omit<ThreadSetup, 'slot' | 'wakeFd'>, log: (message: string) => void,
    onClosed: () => void,
  ): Promise<ConnectionThreads> {
    const threads: Running[] = [];
    const pool = new ConnectionThreads(threads, setup.exports.map((entry) => entry.gateState),
      log, onClosed, setup.shutdownGraceMs);
    const ready: Array<Promise<void>> = [];
    try {
      for (let slot = 0; slot < count; slot += 1) threads.push(pool.#startOne(setup, slot, ready));
      await Promise.all(ready);
    } catch (error) {
      // The other threads' readiness may still fail; that is this failure's consequence.
      for (const started of ready) started.catch(() => undefined);
      // Asked to stop, not terminated: ending a thread while it runs native code (koffi, as
      // it does while loading) aborts the whole process. One that has not yet listened gets the message when
      // it does; one that failed has already exited.
      await pool.stop();
      throw error;
    }
    return pool;
  }

  /** Starts the thread of `slot`, its readiness pushed on `ready`; throws, leaving nothing. */
  #startOne(setup: Omit<ThreadSetup, 'slot' | 'wakeFd'>, slot: number,
    ready: Array<Promise<void>>): Running {
    const wakeFd = setup.driver === 'poll' ? createWakeFd() : -1;
    let worker: Worker;
    try {
      worker = startWorker({ ...setup, slot, wakeFd });
    } catch (error) {
      if (wakeFd >= 0) closeFd(wakeFd);
      throw error;
    }
    const running: Running = { worker, slot, wakeFd, connections: 0, posted: new FdCounts(),
      owned: new FdCounts(), alive: true, stopped: Promise.resolve() };
    running.stopped = new Promise((resolve) => worker.once('exit', () => resolve()));
    ready.push(this.#watch(running));
    return running;
  }

  /** True while at least one thread lives. */
  get anyAlive(): boolean {
    return this.#threads.some((running) => running.alive);
  }

  /** Connections per thread, in slot order (0 for a dead thread). */
  get connectionCounts(): number[] {
    return this.#threads.map((running) => running.connections);
  }

  /**
   * Gives the connection to the least busy live thread: 'handed'; 'no thread' when none
   * lives, 'failed' when the descriptor cannot be duplicated (`socket` untouched for both).
   */
  hand(socket: Socket): 'handed' | 'no thread' | 'failed' {
    return this.#post(socket, (fd) => ({ type: 'connection', fd }), []);
  }

  /**
   * Gives a connection past its handshake to the least busy live polling thread, as `hand`
   * does an accepted one; `socket` must have nothing left to send or read. `handed.kept`'s
   * buffer moves to the thread.
   */
  handTransmission(
    socket: Socket, handed: Omit<HandedTransmission, 'type' | 'fd'>,
  ): 'handed' | 'no thread' | 'failed' {
    return this.#post(socket, (fd) => ({ type: 'transmission', fd, ...handed }),
      [handed.kept.buffer as ArrayBuffer]);
  }

  /** Moves `socket`'s descriptor to the least busy live thread in the message made for it. */
  #post(
    socket: Socket, messageFor: (fd: number) => ToThread, transfer: ArrayBuffer[],
  ): 'handed' | 'no thread' | 'failed' {
    const target = this.#leastBusy();
    if (target === null) return 'no thread';
    const copy = duplicateSocketFd(socket);
    if (typeof copy === 'string') {
      this.#log(`cannot hand a connection to a thread: ${copy}`);
      return 'failed';
    }
    socket.destroy();
    target.connections += 1;
    target.posted.add(copy);
    target.worker.postMessage(messageFor(copy), transfer);
    // A polling thread takes messages only when its poll wakes (at the latest after 1 s).
    if (target.wakeFd >= 0) signalQuietly(target.wakeFd, this.#log);
    return 'handed';
  }

  /**
   * Stops every thread: each stops accepting requests, lets those in flight reply, flushes
   * and closes its devices, then exits.
   */
  async stop(): Promise<void> {
    for (const running of this.#threads) {
      if (!running.alive) continue;
      running.worker.postMessage({ type: 'shutdown' } satisfies ToThread);
      if (running.wakeFd >= 0) signalQuietly(running.wakeFd, this.#log);
    }
    // A thread closes its connections hard after its own grace period. One still running
    // THREAD_EXIT_MARGIN_MS later is left behind (unref'd, so it does not keep the process
    // alive), so close() cannot hang on it. It is not terminated: terminating a thread in the
    // middle of a native call (koffi) aborts the whole process.
    let stopTimer: NodeJS.Timeout | undefined;
    const abandoned = new Promise<void>((resolve) => {
      stopTimer = setTimeout(() => {
        for (const running of this.#threads) {
          if (running.alive) {
            this.#log('a connection thread did not stop in time and was left behind');
            running.worker.unref();
            // Its connections count as closed: the server's close() must not wait for them.
            this.#countClosed(running);
          }
        }
        resolve();
      }, this.#shutdownGraceMs + THREAD_EXIT_MARGIN_MS);
    });
    await Promise.race([Promise.all(this.#threads.map((running) => running.stopped)), abandoned]);
    clearTimeout(stopTimer);
  }

  /** Counts every connection `running` still serves as closed. */
  #countClosed(running: Running): void {
    const lost = running.connections;
    running.connections = 0;
    for (let index = 0; index < lost; index += 1) this.#onClosed();
  }

  #leastBusy(): Running | null {
    let best: Running | null = null;
    for (const running of this.#threads) {
      if (running.alive && (best === null || running.connections < best.connections)) best = running;
    }
    return best;
  }

  /** Follows one thread's messages; resolves when it is ready, rejects if it fails first. */
  #watch(running: Running): Promise<void> {
    return new Promise((resolve, reject) => {
      let ready = false;
      running.worker.on('message', (message: FromThread) => {
        switch (message.type) {
          case 'ready':
            ready = true;
            resolve();
            break;
          case 'failed':
            reject(new Error(message.message));
            break;
          case 'taken':
            running.posted.remove(message.fd);
            if (running.wakeFd >= 0) running.owned.add(message.fd);
            break;
          case 'log':
            this.#log(message.message);
            break;
          case 'closed':
            // A polling thread says so before it closes the descriptor.
            if (message.fd !== undefined) running.owned.remove(message.fd);
            // None left when a thread left behind at stop (counted closed then) ends them late.
            if (running.connections > 0) {
              running.connections -= 1;
              this.#onClosed();
            }
            break;
        }
      });
      running.worker.on('error', (error) => {
        if (!ready) reject(error);
        else this.#log(`a connection thread failed: ${error.message}`);
      });
      running.worker.once('exit', () => {
        running.alive = false;
        // Closed only now: the thread polls it until it exits, and the number must not be
        // reused by another descriptor while anything may still signal it.
        if (running.wakeFd >= 0) closeFd(running.wakeFd);
        if (!ready) reject(new Error('a connection thread exited before it was ready'));
        for (const gate of this.#gates) clearWriteGateSlot(gate, running.slot);
        // A thread says it took a descriptor before it wraps it, and Node delivers a thread's
        // messages before its 'exit': what is still posted was never taken, and is ours.
        for (const fd of running.posted.fds()) closeQuietly(fd);
        running.posted.clear();
        // A polling thread's messages come before its 'exit' too, and it says it closes a
        // descriptor before it does: what it still owns is open, and no one else's.
        for (const fd of running.owned.fds()) closeQuietly(fd);
        running.owned.clear();
        this.#countClosed(running);
      });
    });
  }
}

/** Descriptor numbers with how many claims each has (add, remove; `fds` lists those held). */
class FdCounts {
  readonly #counts = new Map<number, number>();

  add(fd: number): void {
    this.#counts.set(fd, (this.#counts.get(fd) ?? 0) + 1);
  }

  remove(fd: number): void {
    const count = this.#counts.get(fd) ?? 0;
    if (count <= 1) this.#counts.delete(fd);
    else this.#counts.set(fd, count - 1);
  }

  fds(): number[] {
    return [...this.#counts.keys()];
  }

  clear(): void {
    this.#counts.clear();
  }
}

/** Wakes a polling thread; a failure is logged (the thread still wakes within 1 s). */
function signalQuietly(fd: number, log: (message: string) => void): void {
  try {
    signalWakeFd(fd);
  } catch (error) {
    log(`cannot wake a connection thread: ${(error as Error).message}`);
  }
}

function closeQuietly(fd: number): void {
  try {
    fs.closeSync(fd);
  } catch {
    // Nothing more can be done for a descriptor that will not close.
  }
}
