// Owns the adaptation of NBD connections to dm-io's `BlockDevice` contract.
//
// One device request becomes up to three NBD commands run in order: FLUSH (for `preflush`),
// the operation itself (READ / WRITE / TRIM / WRITE_ZEROES, with NBD_CMD_FLAG_FUA when asked
// and advertised), and FLUSH (FUA emulated when the server flushes but lacks SEND_FUA). Every
// command passes the device's `InflightLimiter`, then goes to a usable connection: the first
// that is not backed up (see `pickConnection`), else the one with the fewest bytes in flight.
//
// Failure model, chosen and documented here:
// - A server error fails only its request: an `IoError` (code DMIO_ERR_IO) whose errno is the
//   NBD error mapped to its name and whose syscall is the command (`NBD_CMD_READ`), with an
//   `NbdError` DMIO_ERR_NBD_SERVER carrying the server's message as `cause`.
// - A connection failure (EOF, socket error, malformed reply, timeout) fails every command in
//   flight on it: each gets an `IoError` (code DMIO_ERR_IO, errno EIO, or ETIMEDOUT for a
//   timeout) whose `cause` is the `NbdError` (_DISCONNECTED / _PROTOCOL / _TIMEOUT). Without
//   `reconnect` the device is then broken: `broken` turns true, other connections are aborted,
//   and every later submit fails at once with cause DMIO_ERR_NBD_BROKEN. With `reconnect`, the
//   device reopens connections (at most `attemptsMax` failed tries in a row, `delayMs` apart)
//   while new commands wait; if acknowledged writes were not yet flushed when a connection
//   died, the next flush reports EIO, since they may have been lost with the server's cache.
// - `done` always runs from a later turn (process.nextTick at the latest).
//
// Extents: `extents` sends NBD_CMD_BLOCK_STATUS through the same limiter and connections as
// every other command, when the handshake selected `base:allocation` (`blockStatus`); the
// reply streams into a `StatusTarget` (status-target.ts), which rounds and bounds it. Without
// the context the method stays, and answers the whole range as one data extent without
// sending anything: what the contract says of a device that cannot tell.

import assert from '../assert.js';
import { IoError, NbdError, NotSupportedError, StateError } from '../errors.js';
import { MIB, SECTOR_SIZE } from '../constants.js';
import { pastEndError } from '../devices/request-error.js';
import {
  requestPastEnd, segmentsBytes, type BlockDevice, type DeviceDone, type DeviceExtent,
  type DeviceLimits, type DeviceRequest, type ExtentsDone,
} from '../devices/block-device.js';
import { connectNbd, type ConnectSettings } from './connect.js';
import type { CommandOutcome, NbdConnection } from './connection.js';
import type { NbdBlockSizes, NbdExportInfo } from './handshake.js';
import { InflightLimiter } from '../inflight-limiter.js';
import { newReplyCounters, type NbdReplyCounters } from './reply-parser.js';
import { nbdGeometry } from './nbd-limits.js';
import { planBlockStatus, type StatusTarget } from './status-target.js';
import {
  NBD_CMD_BLOCK_STATUS, NBD_CMD_FLAG_FUA, NBD_CMD_FLUSH, NBD_CMD_READ, NBD_CMD_TRIM,
  NBD_CMD_WRITE, NBD_CMD_WRITE_ZEROES, NBD_FLAG_CAN_MULTI_CONN, NBD_FLAG_READ_ONLY,
  NBD_FLAG_SEND_FLUSH, NBD_FLAG_SEND_FUA, nbdCommandName, nbdErrnoName, payloadBytesOf,
  type NbdCommandType,
} from './protocol.js';
import type { NbdUri } from './uri.js';

/** Settings of a device, already validated (see open-nbd.ts for defaults and bounds). */
export interface NbdDeviceSettings {
  readonly target: NbdUri;
  readonly readOnly: boolean;
  readonly connectTimeoutMs: number;
  readonly requestTimeoutMs: number;
  readonly inflightRequestsMax: number;
  readonly inflightBytesMax: number;
  readonly queuedRequestsMax: number;
  readonly connections: number;
  readonly structuredReplies: boolean;
  readonly reconnect: { readonly attemptsMax: number; readonly delayMs: number } | null;
}

/** One NBD command of a device request's plan. */
interface Step {
  readonly type: NbdCommandType;
  readonly commandFlags: number;
  readonly offsetBytes: number;
  readonly lengthBytes: number;
  readonly segments: readonly Uint8Array[];
  /** BLOCK_STATUS only: where the reply's descriptors go. */
  readonly statusTarget?: StatusTarget;
}

/** The sectors a command works for: what its errors name. */
type Scope = Pick<DeviceRequest, 'sector' | 'countSectors'>;

type StepDone = (error: IoError | null) => void;

/**
 * Payload bytes in flight on one connection before the next command prefers another (16 MiB:
 * nbdcopy's per-connection default of 64 requests of 256 KiB).
 */
const CONNECTION_INFLIGHT_BYTES_TARGET = 16 * MIB;

/**
 * Commands in flight on one connection before multi-conn fills the next: commands without a
 * payload (flush, trim, write-zeroes) never reach the byte target, and would otherwise all
 * queue on the first connection.
 */
const CONNECTION_INFLIGHT_COMMANDS_TARGET = 16;

/** A remote disk over NBD, as a dm-io `BlockDevice`. */
export class NbdDevice implements BlockDevice {
  /** The URI the device was opened with. */
  readonly name: string;
  /** Always `'nbd'`. */
  readonly kind = 'nbd' as const;
  /** Usable size in 512-byte sectors. */
  readonly sizeSectors: number;
  /** True when opened read-only or the export is read-only (NBD_FLAG_READ_ONLY). */
  readonly readOnly: boolean;
  /** Limits derived from the server's advertisement. */
  readonly limits: DeviceLimits;
  /** NBD devices complete requests only asynchronously. */
  readonly canBlock = false;
  /** The export's name on the server. */
  readonly exportName: string;
  /** The export's size in bytes, as the server reported it. */
  readonly sizeBytes: number;
  /** The server's transmission flags (NBD_FLAG_*). */
  readonly transmissionFlags: number;
  /** True when structured replies were negotiated. */
  readonly structuredReplies: boolean;
  /** Block sizes the server advertised, or null. */
  readonly blockSizes: NbdBlockSizes | null;
  /** How the export was selected: `NBD_OPT_GO` or the legacy `NBD_OPT_EXPORT_NAME`. */
  readonly negotiation: 'go' | 'export-name';
  /**
   * True when the server selected `base:allocation`: `extents` then asks it with
   * NBD_CMD_BLOCK_STATUS; otherwise `extents` answers data without asking.
   */
  readonly blockStatus: boolean;

  readonly #settings: NbdDeviceSettings;
  readonly #limiter: InflightLimiter<NbdError>;
  #connections: NbdConnection[] = [];
  #connectionsWanted = 1;
  readonly #parked: Array<() => void> = [];
  #activeRequests = 0;
  #idleWaiters: Array<() => void> = [];
  #closing = false;
  #closePromise: Promise<void> | null = null;
  #brokenBy: NbdError | null = null;
  #reconnectPromise: Promise<void> | null = null;
  #writeAckSequence = 0;
  #flushedSequence = 0;
  #writebackLost = false;
  #connectSettings: ConnectSettings | null = null;
  #replyCounters: NbdReplyCounters = newReplyCounters();

  private constructor(settings: NbdDeviceSettings, info: NbdExportInfo) {
    const target = settings.target;
    const geometry = nbdGeometry(target.uri, info, settings.inflightBytesMax);
    this.#settings = settings;
    this.name = target.uri;
    this.exportName = target.exportName;
    this.sizeBytes = info.sizeBytes;
    this.sizeSectors = geometry.sizeSectors;
    this.limits = geometry.limits;
    this.transmissionFlags = info.transmissionFlags;
    this.readOnly = settings.readOnly || (info.transmissionFlags & NBD_FLAG_READ_ONLY) !== 0;
    this.structuredReplies = info.structuredReplies;
    this.blockSizes = info.blockSizes;
    this.negotiation = info.negotiation;
    this.blockStatus = info.baseAllocationContextId !== null;
    this.#limiter = new InflightLimiter<NbdError>({ requestsMax: settings.inflightRequestsMax,
      bytesMax: settings.inflightBytesMax, waitingMax: settings.queuedRequestsMax });
  }

  /**
   * Connects (several connections when asked and the server sets CAN_MULTI_CONN) and returns
   * the device. On failure every connection opened so far is closed.
   */
  static async open(settings: NbdDeviceSettings): Promise<NbdDevice> {
    let device: NbdDevice | null = null;
    const connectSettings: ConnectSettings = {
      uri: settings.target.uri,
      connectTimeoutMs: settings.connectTimeoutMs,
      requestTimeoutMs: settings.requestTimeoutMs,
      structuredReplies: settings.structuredReplies,
      onDead: (connection, error) => {
        if (device !== null) device.#connectionDied(connection, error);
      },
      counters: newReplyCounters(),
    };
    const first = await connectNbd(settings.target, connectSettings);
    try {
      device = new NbdDevice(settings, first.info);
    } catch (error) {
      await first.disconnect();
      throw error;
    }
    device.#connections.push(first);
    device.#connectSettings = connectSettings;
    device.#replyCounters = connectSettings.counters;
    const multi = (first.info.transmissionFlags & NBD_FLAG_CAN_MULTI_CONN) !== 0;
    device.#connectionsWanted = multi ? settings.connections : 1;
    try {
      const extra = Array.from({ length: device.#connectionsWanted - 1 },
        () => connectNbd(settings.target, connectSettings));
      for (const result of await Promise.allSettled(extra)) {
        if (result.status === 'rejected') throw result.reason;
        if (!device.#adopt(result.value)) throw device.#mismatchError();
      }
    } catch (error) {
      await device.close();
      throw error;
    }
    return device;
  }

  /** True after `close()` began. */
  get closed(): boolean {
    return this.#closing;
  }

  /** True once a connection failure broke the device; every later submit fails at once. */
  get broken(): boolean {
    return this.#brokenBy !== null;
  }

  /** Why the device broke (DMIO_ERR_NBD_BROKEN, with the original failure as cause), or null. */
  get brokenError(): NbdError | null {
    return this.#brokenBy;
  }

  /** Connections currently open. */
  get connectionCount(): number {
    return this.#connections.length;
  }

  /** Replies received so far, by kind (simple replies, data/hole/error/none chunks). */
  get replies(): Readonly<NbdReplyCounters> {
    return { ...this.#replyCounters };
  }

  /** NBD commands in flight plus those waiting for room. */
  get inflightCommands(): number {
    return this.#limiter.requests + this.#limiter.waitingCount;
  }

  /** Starts one request; `done` runs exactly once, never synchronously. */
  submit(request: DeviceRequest, done: DeviceDone): void {
    const refusal = this.#refusal(request);
    if (refusal !== null) {
      process.nextTick(done, refusal);
      return;
    }
    this.#activeRequests += 1;
    this.#runSteps(request, this.#plan(request), 0, (error) => {
      this.#requestEnded();
      process.nextTick(done, error);
    });
  }

  /**
   * How `[sector, sector + countSectors)` is allocated (see `BlockDevice.extents`): one
   * NBD_CMD_BLOCK_STATUS over the range, widened to whole logical blocks and cut at
   * NBD_BLOCK_STATUS_BYTES_MAX; the server may describe less, and the answer is then a prefix
   * (at least the first sector). Without `blockStatus`, one data extent for the whole range.
   * Errors are `IoError`s with syscall `NBD_CMD_BLOCK_STATUS`, as for other commands.
   */
  extents(sector: number, countSectors: number, done: ExtentsDone): void {
    const scope: Scope = { sector, countSectors };
    const refusal = this.#extentsRefusal(scope);
    if (refusal !== null) {
      process.nextTick(done, refusal, []);
      return;
    }
    if (!this.blockStatus) {
      const whole: DeviceExtent = { sector, countSectors, hole: false, zero: false };
      process.nextTick(done, null, [whole]);
      return;
    }
    const step = this.#blockStatusStep(sector, countSectors);
    const target = step.statusTarget;
    assert.ok(target !== undefined);
    this.#activeRequests += 1;
    this.#runCommand(scope, step, (error) => {
      this.#requestEnded();
      process.nextTick(done, error, error === null ? target.finish() : []);
    });
  }

  /** The BLOCK_STATUS for a sector range (see `planBlockStatus`). */
  #blockStatusStep(sector: number, countSectors: number): Step {
    const plan = planBlockStatus(sector, countSectors, this.limits.logicalBlockBytes);
    return { type: NBD_CMD_BLOCK_STATUS, commandFlags: 0, offsetBytes: plan.offsetBytes,
      lengthBytes: plan.lengthBytes, segments: [], statusTarget: plan.target };
  }

  /** The error an `extents` query gets without being sent, or null. */
  #extentsRefusal(scope: Scope): IoError | null {
    const fail = (errno: string, cause?: unknown): IoError => new IoError({ errno,
      syscall: nbdCommandName(NBD_CMD_BLOCK_STATUS), device: this.name, ...scope,
      ...(cause === undefined ? {} : { cause }) });
    if (this.#closing) {
      return fail('EIO', new StateError('DMIO_ERR_DEVICE_CLOSED', this.name, 'device is closed'));
    }
    if (this.#brokenBy !== null) return fail('EIO', this.#brokenBy);
    const { sector, countSectors } = scope;
    if (!Number.isSafeInteger(sector) || sector < 0 || !Number.isSafeInteger(countSectors) ||
      countSectors < 1) {
      return fail('EINVAL');
    }
    return sector + countSectors > this.sizeSectors ? fail('EIO') : null;
  }

  /** A request or query finished: waiters for idleness run once none is left. */
  #requestEnded(): void {
    this.#activeRequests -= 1;
    assert.ok(this.#activeRequests >= 0);
    if (this.#activeRequests === 0) this.#wakeIdle();
  }

  /**
   * Waits for requests in flight, sends NBD_CMD_DISC on every connection and closes them.
   * Idempotent: later calls return the same promise.
   */
  close(): Promise<void> {
    if (this.#closePromise !== null) return this.#closePromise;
    this.#closing = true;
    this.#closePromise = (async () => {
      await this.#idle();
      if (this.#reconnectPromise !== null) await this.#reconnectPromise;
      const connections = this.#connections;
      this.#connections = [];
      await Promise.all(connections.map((connection) => connection.disconnect()));
    })();
    return this.#closePromise;
  }

  /** The error a request gets without being sent, or null when it may go ahead. */
  #refusal(request: DeviceRequest): IoError | null {
    const fail = (errno: string, cause?: unknown): IoError => new IoError({ errno,
      syscall: nbdCommandName(commandTypeOf(request)), device: this.name,
      sector: request.sector, countSectors: request.countSectors,
      ...(cause === undefined ? {} : { cause }) });
    if (this.#closing) {
      return fail('EIO', new StateError('DMIO_ERR_DEVICE_CLOSED', this.name, 'device is closed'));
    }
    if (this.#brokenBy !== null) return fail('EIO', this.#brokenBy);
    const writes = request.op !== 'read';
    if (writes && request.countSectors > 0 && this.readOnly) {
      return fail('EROFS', new StateError('DMIO_ERR_READ_ONLY', this.name,
        'the NBD export is read-only'));
    }
    if (!Number.isSafeInteger(request.sector) || request.sector < 0 ||
      !Number.isSafeInteger(request.countSectors) || request.countSectors < 0) {
      return fail('EINVAL');
    }
    if (requestPastEnd(this, request)) return pastEndError(this, request);
    const blockSectors = this.limits.logicalBlockBytes / SECTOR_SIZE;
    if (request.sector % blockSectors !== 0 || request.countSectors % blockSectors !== 0) {
      return fail('EINVAL');
    }
    return this.#limitRefusal(request, fail);
  }

  #limitRefusal(request: DeviceRequest, fail: (errno: string) => IoError): IoError | null {
    const details = { syscall: nbdCommandName(commandTypeOf(request)), device: this.name,
      sector: request.sector, countSectors: request.countSectors };
    switch (request.op) {
      case 'read':
      case 'write':
        if (request.countSectors > this.limits.maxSectorsPerRequest) return fail('EINVAL');
        if (segmentsBytes(request.segments) !== request.countSectors * SECTOR_SIZE) {
          return fail('EINVAL');
        }
        if (request.countSectors === 0 && !(request.op === 'write' && request.flags.preflush)) {
          return fail('EINVAL');
        }
        return null;
      case 'discard':
        if (this.limits.maxDiscardSectors === 0) return new NotSupportedError(details);
        return outside(request.countSectors, this.limits.maxDiscardSectors) ? fail('EINVAL') : null;
      case 'write-zeroes':
        if (this.limits.maxWriteZeroesSectors === 0) return new NotSupportedError(details);
        return outside(request.countSectors, this.limits.maxWriteZeroesSectors) ?
          fail('EINVAL') : null;
    }
  }

  /** The NBD commands for one request, in the order they must complete. */
  #plan(request: DeviceRequest): Step[] {
    const flags = this.transmissionFlags;
    const steps: Step[] = [];
    const flush: Step = { type: NBD_CMD_FLUSH, commandFlags: 0, offsetBytes: 0, lengthBytes: 0,
      segments: [] };
    const canFlush = (flags & NBD_FLAG_SEND_FLUSH) !== 0;
    if (request.flags.preflush && canFlush) steps.push(flush);
    if (request.countSectors === 0) return steps;
    const type = commandTypeOf(request);
    const wantsFua = request.flags.fua && type !== NBD_CMD_READ;
    const nativeFua = wantsFua && (flags & NBD_FLAG_SEND_FUA) !== 0;
    steps.push({
      type,
      commandFlags: nativeFua ? NBD_CMD_FLAG_FUA : 0,
      offsetBytes: request.sector * SECTOR_SIZE,
      lengthBytes: request.countSectors * SECTOR_SIZE,
      segments: type === NBD_CMD_READ || type === NBD_CMD_WRITE ? request.segments : [],
    });
    if (wantsFua && !nativeFua && canFlush) steps.push(flush);
    return steps;
  }

  #runSteps(request: DeviceRequest, steps: Step[], index: number, done: StepDone): void {
    const step = steps[index];
    if (step === undefined) {
      done(null);
      return;
    }
    this.#runCommand(request, step, (error) => {
      if (error !== null) done(error);
      else this.#runSteps(request, steps, index + 1, done);
    });
  }

  /** Admits one command through the limiter and sends it when there is room. */
  #runCommand(request: Scope, step: Step, done: StepDone): void {
    if (step.type === NBD_CMD_FLUSH && this.#writebackLost) {
      this.#writebackLost = false;
      this.#flushedSequence = this.#writeAckSequence;
      done(this.#connectionError(request, step, new NbdError('DMIO_ERR_NBD_DISCONNECTED', this.name,
        'a connection was lost while acknowledged writes were unflushed; they may be lost')));
      return;
    }
    const payloadBytes = payloadBytesOf(step.type, step.lengthBytes);
    const flushCovers = this.#writeAckSequence;
    const admitted = this.#limiter.admit({
      heldBytes: payloadBytes,
      start: () => this.#dispatch(request, step, payloadBytes, (outcome) => {
        this.#limiter.release(payloadBytes);
        if (outcome === null) this.#noteSuccess(step, flushCovers);
        done(this.#outcomeError(request, step, outcome));
      }),
      reject: (error) => done(this.#connectionError(request, step, error)),
    });
    if (!admitted) {
      done(new IoError({ errno: 'EAGAIN', syscall: nbdCommandName(step.type), device: this.name,
        sector: request.sector, countSectors: request.countSectors }));
    }
  }

  /** Sends an admitted command, or parks it until a connection is back. */
  #dispatch(
    request: Scope,
    step: Step,
    payloadBytes: number,
    done: (outcome: CommandOutcome) => void,
  ): void {
    if (this.#brokenBy !== null) {
      done({ kind: 'connection', error: this.#brokenBy });
      return;
    }
    const connection = this.#pickConnection();
    if (connection === null) {
      this.#parked.push(() => this.#dispatch(request, step, payloadBytes, done));
      return;
    }
    connection.send({ ...step, done });
  }

  /**
   * Connections are filled in order rather than spread evenly: a command goes to the first
   * usable connection whose socket has nothing queued and which holds less than
   * `CONNECTION_INFLIGHT_BYTES_TARGET` and fewer than `CONNECTION_INFLIGHT_COMMANDS_TARGET`
   * commands in flight. WRITE payloads back a socket up while they
   * drain, so writes still spread over every connection; READ requests are 28 bytes, so a
   * moderate read queue stays on one connection. That keeps the server's threads (and their
   * competition with the client for the cores) fewer (measured in docs/performance.md, "NBD
   * connections filled in order"). When every connection is backed up or full, the command
   * goes to the one with the fewest bytes in flight.
   */
  #pickConnection(): NbdConnection | null {
    for (const connection of this.#connections) {
      if (connection.usable && connection.queuedWriteBytes === 0 &&
        connection.inflightBytes < CONNECTION_INFLIGHT_BYTES_TARGET &&
        connection.inflightCount < CONNECTION_INFLIGHT_COMMANDS_TARGET) {
        return connection;
      }
    }
    let best: NbdConnection | null = null;
    for (const connection of this.#connections) {
      if (!connection.usable) continue;
      if (best === null || connection.inflightBytes < best.inflightBytes ||
        (connection.inflightBytes === best.inflightBytes &&
          connection.inflightCount < best.inflightCount)) {
        best = connection;
      }
    }
    return best;
  }

  #noteSuccess(step: Step, flushCovers: number): void {
    if (step.type === NBD_CMD_FLUSH) {
      this.#flushedSequence = Math.max(this.#flushedSequence, flushCovers);
    } else if (step.type !== NBD_CMD_READ && step.type !== NBD_CMD_BLOCK_STATUS &&
      (step.commandFlags & NBD_CMD_FLAG_FUA) === 0) {
      this.#writeAckSequence += 1;
    }
  }

  #outcomeError(
    request: Scope,
    step: Step,
    outcome: CommandOutcome,
  ): IoError | null {
    if (outcome === null) return null;
    if (outcome.kind === 'connection') return this.#connectionError(request, step, outcome.error);
    const { errorNumber, message } = outcome.error;
    const errno = nbdErrnoName(errorNumber);
    const command = nbdCommandName(step.type);
    const text = message === '' ? '' : `: ${message.replace(/[^\x20-\x7e]/g, '?')}`;
    const cause = new NbdError('DMIO_ERR_NBD_SERVER', this.name,
      `${command} of ${step.lengthBytes} bytes at byte ${step.offsetBytes} failed with ` +
      `${errno} (${errorNumber})${text}`);
    return new IoError({ errno, syscall: command, device: this.name, sector: request.sector,
      countSectors: request.countSectors, cause });
  }

  #connectionError(request: Scope, step: Step, error: NbdError): IoError {
    return new IoError({ errno: error.code === 'DMIO_ERR_NBD_TIMEOUT' ? 'ETIMEDOUT' : 'EIO',
      syscall: nbdCommandName(step.type), device: this.name, sector: request.sector,
      countSectors: request.countSectors, cause: error });
  }

  /** A connection died on its own (not through `close()`). */
  #connectionDied(connection: NbdConnection, error: NbdError): void {
    if (!this.#connections.includes(connection)) return;
    this.#connections = this.#connections.filter((candidate) => candidate !== connection);
    if (this.limits.flush && this.#writeAckSequence > this.#flushedSequence) {
      this.#writebackLost = true;
    }
    if (this.#brokenBy !== null) return;
    if (this.#settings.reconnect === null) {
      this.#becomeBroken(error);
      return;
    }
    this.#reconnectPromise ??= this.#reconnectLoop(this.#settings.reconnect).finally(() => {
      this.#reconnectPromise = null;
    });
  }

  #becomeBroken(reason: NbdError): void {
    if (this.#brokenBy !== null) return;
    this.#brokenBy = new NbdError('DMIO_ERR_NBD_BROKEN', this.name,
      `device is broken: ${reason.message}`, { cause: reason });
    const connections = this.#connections;
    this.#connections = [];
    for (const connection of connections) connection.abort(this.#brokenBy);
    for (const entry of this.#limiter.takeWaiting()) entry.reject(this.#brokenBy);
    this.#runParked();
  }

  #runParked(): void {
    const parked = this.#parked.splice(0, this.#parked.length);
    for (const resume of parked) resume();
  }

  /** Reopens connections until `connectionsWanted` are open or `attemptsMax` tries fail. */
  async #reconnectLoop(policy: { attemptsMax: number; delayMs: number }): Promise<void> {
    const connectSettings = this.#connectSettings;
    assert.ok(connectSettings !== null);
    let failures = 0;
    while (this.#brokenBy === null && this.#connections.length < this.#connectionsWanted) {
      if (this.#closing && this.#parked.length === 0 && this.#limiter.waitingCount === 0) return;
      await new Promise((resolve) => setTimeout(resolve, policy.delayMs));
      let connection: NbdConnection;
      try {
        connection = await connectNbd(this.#settings.target, connectSettings);
      } catch (error) {
        failures += 1;
        if (failures >= policy.attemptsMax && this.#connections.length === 0) {
          this.#becomeBroken(new NbdError('DMIO_ERR_NBD_DISCONNECTED', this.name,
            `reconnect failed ${failures} times`, { cause: error }));
        }
        if (failures >= policy.attemptsMax) return;
        continue;
      }
      if (!this.#adopt(connection)) {
        this.#becomeBroken(this.#mismatchError());
        return;
      }
      failures = 0;
      this.#runParked();
    }
  }

  /**
   * Adds a new connection if it serves the export the device was built for; otherwise closes
   * it and returns false.
   */
  #adopt(connection: NbdConnection): boolean {
    const info = connection.info;
    if (info.sizeBytes !== this.sizeBytes || info.transmissionFlags !== this.transmissionFlags ||
      info.structuredReplies !== this.structuredReplies ||
      (info.baseAllocationContextId !== null) !== this.blockStatus) {
      void connection.disconnect();
      return false;
    }
    this.#connections.push(connection);
    return true;
  }

  #mismatchError(): NbdError {
    return new NbdError('DMIO_ERR_NBD_SERVER', this.name,
      'export changed between connections (size, flags or meta context differ)');
  }

  #idle(): Promise<void> {
    if (this.#activeRequests === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  #wakeIdle(): void {
    const waiters = this.#idleWaiters;
    this.#idleWaiters = [];
    for (const wake of waiters) wake();
  }
}

/** True when a discard or write-zeroes of `countSectors` is empty or above `maxSectors`. */
function outside(countSectors: number, maxSectors: number): boolean {
  return countSectors === 0 || countSectors > maxSectors;
}

function commandTypeOf(request: DeviceRequest): NbdCommandType {
  switch (request.op) {
    case 'read':
      return NBD_CMD_READ;
    case 'write':
      return request.countSectors === 0 ? NBD_CMD_FLUSH : NBD_CMD_WRITE;
    case 'discard':
      return NBD_CMD_TRIM;
    case 'write-zeroes':
      return NBD_CMD_WRITE_ZEROES;
  }
}
