// Owns the `mirror` target (dm-raid1): N legs holding the same data, a dirty-region log, and
// resync. Pieces never cross a region (maxIoSectors = region size).
//
// Writes: the region is marked dirty in the log and the log is flushed (disk: the bit is 0 on
// the media) before any leg sees the write; then one multi-region dm-io write goes to every
// writable leg of an in-sync region, or to the default leg alone when the region is out of
// sync. A leg whose bit comes back set is marked `D` and written no more; the region is then
// out of sync (it stays dirty in the log, so the next open resyncs it). The write succeeds when
// any leg took it; all legs failing is EIO. Deviation: the kernel with `handle_errors` holds
// such writes until the next suspend; here they complete at once (a server cannot hold them).
// When a region's last write completes it is cleaned, lazily: the legs are flushed, then the
// clean bit is written.
//
// Reads go to the default leg while it is error-free, else the nearest error-free leg; a failed
// read marks the leg `R` and retries on another leg if the region is in sync. Out-of-sync
// regions are read from the default leg only.
//
// Resync (mirror-recovery.ts) copies out-of-sync regions from the default leg to the others
// with kcopyd, one region at a time in ascending order; a write to the region being copied
// waits until the copy ends. Flushes go to every writable leg.

import type { DmIoClient } from '../core/client.js';
import type { BlockDevice } from '../devices/block-device.js';
import type { DmIoError } from '../errors.js';
import type { DirtyLog } from './dirty-log.js';
import { InflightCounter } from './inflight.js';
import { failLeg, readLeg, writable, type Leg } from './mirror-legs.js';
import { MirrorRecovery } from './mirror-recovery.js';
import type { Target, TargetDone, TargetEnv, TargetIo } from './target.js';
import { completeLater, flushDevices, ioToDevice, ioToRegions, targetError } from './target-io.js';

/** How long a region whose writes ended stays marked before it is cleaned, in milliseconds. */
const CLEAN_DELAY_MS = 200;

/** Mirror features. */
export interface MirrorFeatures {
  readonly handleErrors: boolean;
  readonly keepLog: boolean;
}

/** A mirror target. */
export class MirrorTarget implements Target {
  readonly type = 'mirror';
  readonly maxIoSectors: number;
  readonly devices: readonly BlockDevice[];
  readonly limits = {};
  readonly legs: readonly Leg[];
  readonly log: DirtyLog;
  readonly #client: DmIoClient;
  readonly #features: MirrorFeatures;
  readonly #readOnly: boolean;
  /** Writes in flight per region. */
  readonly #pending: Uint32Array;
  /** Log generation that marked each region; the region's bit is on disk once flushed past it. */
  readonly #markGeneration: Float64Array;
  #generation = 0;
  #flushedGeneration = 0;
  #logChain: Promise<void> = Promise.resolve();
  #queuedFlush: Promise<void> | null = null;
  readonly #toClean = new Set<number>();
  #cleanTimer: NodeJS.Timeout | null = null;
  readonly #inflight = new InflightCounter();
  readonly #recovery: MirrorRecovery;
  #defaultLeg = 0;
  #stopping: Promise<void> | null = null;

  constructor(env: TargetEnv, log: DirtyLog, legs: readonly Leg[], features: MirrorFeatures) {
    this.#client = env.ioClient;
    this.#features = features;
    this.#readOnly = env.readOnly;
    this.log = log;
    this.legs = legs;
    this.devices = legs.map((leg) => leg.device);
    this.maxIoSectors = log.regionSectors;
    this.#pending = new Uint32Array(log.regionCount);
    this.#markGeneration = new Float64Array(log.regionCount);
    this.#recovery = new MirrorRecovery({
      log, legs, client: env.ioClient, throttlePercent: env.copyThrottlePercent,
      lengthSectors: env.lengthSectors, handleErrors: features.handleErrors,
      defaultLeg: () => this.#defaultLeg,
      pending: (region) => this.#pending[region] as number,
      recovered: () => this.#scheduleClean(),
    });
  }

  /** Starts resync (nothing on a read-only table). */
  start(): void {
    if (!this.#readOnly) this.#recovery.start();
  }

  /** Regions copied by resync since the table was opened. */
  get resyncedRegions(): number {
    return this.#recovery.copiedRegions;
  }

  /** Resolves when resync has nothing left to do (or was stopped). */
  resyncIdle(): Promise<void> {
    return this.#recovery.idle();
  }

  map(io: TargetIo, done: TargetDone): void {
    const region = Math.floor(io.sector / this.log.regionSectors);
    const tracked = this.#inflight.track(done);
    if (io.op === 'read') this.#read(io, region, new Set(), tracked);
    else this.#write(io, region, tracked);
  }

  flush(done: TargetDone): void {
    const legs = this.legs.filter(writable);
    const tracked = this.#inflight.track(done);
    flushDevices(this.#client, legs.map((leg) => leg.device), (outcome) => {
      legs.forEach((leg, index) => {
        if (outcome.errors[index] !== undefined) failLeg(leg, 'F');
      });
      if (outcome.errorBits !== 0n) this.log.flushFailed = true;
      const anyOk = legs.some((_leg, index) => outcome.errors[index] === undefined);
      tracked(anyOk ? null : outcome.errors[0] ?? targetError('mirror', null));
    });
  }

  #read(io: TargetIo, region: number, tried: Set<number>, done: TargetDone): void {
    const inSync = this.log.inSync(region);
    const defaultLeg = this.legs[this.#defaultLeg] as Leg;
    const leg = inSync ? readLeg(this.legs, this.#defaultLeg, tried) :
      (defaultLeg.errorCount === 0 && !tried.has(defaultLeg.index) ? defaultLeg : null);
    if (leg === null) {
      completeLater(done, targetError('mirror', io));
      return;
    }
    ioToDevice(this.#client, leg.device, leg.offsetSectors + io.sector, io, (error) => {
      if (error === null) {
        done(null);
        return;
      }
      failLeg(leg, 'R');
      this.#switchDefault(leg);
      tried.add(leg.index);
      if (this.log.inSync(region)) this.#read(io, region, tried, done);
      else done(error);
    });
  }

  #write(io: TargetIo, region: number, done: TargetDone): void {
    if (this.#recovery.holds(region)) {
      this.#recovery.park(region, () => this.#write(io, region, done));
      return;
    }
    this.#pending[region] = (this.#pending[region] as number) + 1;
    if (this.log.isClean(region)) {
      this.log.markRegion(region);
      this.#generation += 1;
      this.#markGeneration[region] = this.#generation;
    }
    if ((this.#markGeneration[region] as number) <= this.#flushedGeneration) {
      this.#writeLegs(io, region, done);
      return;
    }
    this.#flushLog().then(() => this.#writeLegs(io, region, done),
      () => this.#writeLegs(io, region, done));
  }

  #writeLegs(io: TargetIo, region: number, done: TargetDone): void {
    const inSync = this.log.inSync(region);
    const defaultLeg = this.legs[this.#defaultLeg] as Leg;
    const legs = inSync ? this.legs.filter(writable) : writable(defaultLeg) ? [defaultLeg] : [];
    if (legs.length === 0) {
      this.#endWrite(region);
      completeLater(done, targetError('mirror', io));
      return;
    }
    const regions = legs.map((leg) => ({
      device: leg.device, sector: leg.offsetSectors + io.sector, count: io.countSectors,
    }));
    ioToRegions(this.#client, regions, io, (outcome) => {
      let firstError: DmIoError | null = null;
      legs.forEach((leg, index) => {
        const error = outcome.errors[index];
        if (error === undefined || error.code === 'DMIO_ERR_NOT_SUPPORTED') return;
        firstError ??= error;
        failLeg(leg, 'D');
        this.#switchDefault(leg);
      });
      const degraded = firstError !== null || legs.length < this.legs.length;
      if (inSync && degraded && io.op !== 'discard') this.log.setRegionSync(region, false);
      this.#endWrite(region);
      // With keep_log a degraded write whose log has failed cannot be recorded: EIO.
      const anyOk = legs.some((_leg, index) => outcome.errors[index] === undefined) &&
        !(degraded && this.#features.keepLog && this.log.failed);
      const unsupported = outcome.errors.find((error) => error?.code === 'DMIO_ERR_NOT_SUPPORTED');
      done(anyOk ? null : unsupported ?? firstError ?? targetError('mirror', io));
    });
  }

  /** One write to `region` ended: an idle in-sync region is cleaned soon. */
  #endWrite(region: number): void {
    const pending = (this.#pending[region] as number) - 1;
    this.#pending[region] = pending;
    if (pending > 0) return;
    this.#recovery.quiesced(region);
    if (this.log.inSync(region)) {
      this.#toClean.add(region);
      this.#scheduleClean();
    }
  }

  /**
   * With `handle_errors`, a failed default leg hands over to the first error-free leg - only
   * while the mirror is fully in sync, or with `keep_log` (else out-of-sync regions, which only
   * the default leg holds, could be read from a stale leg; their reads fail instead, as the
   * kernel's do).
   */
  #switchDefault(failed: Leg): void {
    if (!this.#features.handleErrors || failed.index !== this.#defaultLeg) return;
    if (this.log.syncCount !== this.log.regionCount && !this.#features.keepLog) return;
    const next = this.legs.find((leg) => leg.errorCount === 0);
    if (next !== undefined) this.#defaultLeg = next.index;
  }

  #scheduleClean(): void {
    if (this.#cleanTimer !== null || this.#stopping !== null) return;
    this.#cleanTimer = setTimeout(() => {
      this.#cleanTimer = null;
      this.#cleanIdleRegions();
      void this.#flushLog().catch(() => undefined);
    }, CLEAN_DELAY_MS);
  }

  #cleanIdleRegions(): void {
    for (const region of this.#toClean) {
      if (this.#pending[region] === 0 && this.log.inSync(region) && !this.#recovery.holds(region)) {
        this.log.clearRegion(region);
      }
    }
    this.#toClean.clear();
  }

  /**
   * Flushes the log: the legs first when regions were cleaned (their data must be durable
   * before a clean bit is), then the log. Serialized; a call joins a flush not yet started.
   */
  #flushLog(): Promise<void> {
    if (this.#queuedFlush !== null) return this.#queuedFlush;
    const run = this.#logChain.then(async () => {
      this.#queuedFlush = null;
      const generation = this.#generation;
      // Clean bits are only worth the legs' flush when the log persists them.
      if (this.log.needsLegFlush && this.log.persistent) await this.#flushLegsForLog();
      await this.log.flush();
      this.#flushedGeneration = Math.max(this.#flushedGeneration, generation);
    });
    this.#queuedFlush = run;
    this.#logChain = run.catch(() => undefined);
    return run;
  }

  #flushLegsForLog(): Promise<void> {
    return new Promise((resolve) => this.flush((error) => {
      if (error !== null) this.log.flushFailed = true;
      resolve();
    }));
  }

  status(): string {
    const ids = this.legs.map((leg) => leg.deviceId).join(' ');
    const health = this.legs.map((leg) => leg.health).join('');
    return `${this.legs.length} ${ids} ${this.log.syncCount}/${this.log.regionCount} 1 ` +
      `${health} ${this.log.status()}`;
  }

  table(): string {
    const pairs = this.legs.map((leg) => `${leg.deviceId} ${leg.offsetSectors}`).join(' ');
    const words = [this.#features.handleErrors ? 'handle_errors' : '',
      this.#features.keepLog ? 'keep_log' : ''].filter((word) => word !== '');
    return `${this.log.table()}${this.legs.length} ${pairs}` +
      (words.length > 0 ? ` ${words.length} ${words.join(' ')}` : '');
  }

  stop(): Promise<void> {
    this.#stopping ??= this.#stop();
    return this.#stopping;
  }

  async #stop(): Promise<void> {
    await this.#recovery.stop();
    await this.#inflight.idle();
    if (this.#cleanTimer !== null) clearTimeout(this.#cleanTimer);
    this.#cleanTimer = null;
    if (this.#readOnly) return;
    for (let region = 0; region < this.log.regionCount; region += 1) {
      if (this.log.inSync(region)) this.#toClean.add(region);
    }
    this.#cleanIdleRegions();
    await this.#flushLog().catch(() => undefined);
  }
}
