// Owns a mirror's resync: regions out of sync are copied from the default leg to every other
// writable leg with kcopyd (under the table's copy throttle), one region at a time, in
// ascending order (the log's cursor). The region being copied holds new writes: they are
// parked and run again when the copy ends; the copy itself starts only once the writes already
// in flight to that region have completed. A copy that fails on a leg marks it `S`; with
// `handle_errors` the region then stays out of sync (until the next open), without it the
// region counts as in sync anyway, as the kernel does. When every region is in sync, the legs'
// errors are forgotten (status back to all `A`).

import type { DmIoClient } from '../core/client.js';
import { dmKcopydClientDestroy } from '../kcopyd/kcopyd.js';
import type { KcopydClient } from '../kcopyd/kcopyd-client.js';
import { dmKcopydCopy } from '../kcopyd/submit.js';
import { createBackgroundKcopyd } from './background-kcopyd.js';
import type { DirtyLog } from './dirty-log.js';
import { failLeg, resetLegs, writable, type Leg } from './mirror-legs.js';

/** What recovery needs from its mirror. */
export interface RecoveryParts {
  readonly log: DirtyLog;
  readonly legs: readonly Leg[];
  readonly client: DmIoClient;
  readonly throttlePercent: number;
  readonly lengthSectors: number;
  readonly handleErrors: boolean;
  readonly defaultLeg: () => number;
  /** Writes in flight to a region. */
  readonly pending: (region: number) => number;
  /** A region was recovered and cleaned in memory; the mirror persists it soon. */
  readonly recovered: () => void;
}

/** The resync loop of one mirror. */
export class MirrorRecovery {
  readonly #parts: RecoveryParts;
  #kcopyd: KcopydClient | null = null;
  #region: number | null = null;
  #parked: Array<() => void> = [];
  #quiesced: (() => void) | null = null;
  #running: Promise<void> | null = null;
  readonly #abort = new AbortController();
  #stopped = false;
  /** Regions copied since the mirror was opened. */
  copiedRegions = 0;

  constructor(parts: RecoveryParts) {
    this.#parts = parts;
  }

  /** Starts the loop (once). */
  start(): void {
    this.#running ??= this.#run().finally(() => this.#release());
  }

  /** True while `region` is being recovered: writes to it must wait. */
  holds(region: number): boolean {
    return this.#region === region;
  }

  /** Parks a write to the region being recovered until its copy ends. */
  park(region: number, resume: () => void): void {
    if (this.#region !== region) {
      queueMicrotask(resume);
      return;
    }
    this.#parked.push(resume);
  }

  /** The last write in flight to `region` completed. */
  quiesced(region: number): void {
    if (this.#region === region && this.#quiesced !== null) {
      const wake = this.#quiesced;
      this.#quiesced = null;
      wake();
    }
  }

  /** Resolves when the loop has ended (nothing left, or stopped). */
  idle(): Promise<void> {
    return this.#running ?? Promise.resolve();
  }

  /** Stops copying: the copy in flight is cancelled, parked writes go on. */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#abort.abort(new Error('mirror closing'));
    const wake = this.#quiesced;
    this.#quiesced = null;
    wake?.();
    await this.idle();
    if (this.#kcopyd !== null) await dmKcopydClientDestroy(this.#kcopyd);
    this.#kcopyd = null;
  }

  async #run(): Promise<void> {
    const { log, legs } = this.#parts;
    while (!this.#stopped) {
      const region = log.getResyncWork();
      if (region === null) break;
      this.#region = region;
      if (this.#parts.pending(region) > 0) {
        await new Promise<void>((resolve) => {
          this.#quiesced = resolve;
        });
      }
      if (this.#stopped) {
        log.setRegionSync(region, false);
        break;
      }
      const ok = await this.#copy(region);
      log.setRegionSync(region, ok);
      if (ok) {
        log.clearRegion(region);
        this.copiedRegions += 1;
        this.#parts.recovered();
      }
      this.#release();
    }
    if (!this.#stopped && log.syncCount === log.regionCount) resetLegs(legs);
  }

  /** Copies one region from the default leg to the others; true when it counts as in sync. */
  async #copy(region: number): Promise<boolean> {
    const { log, legs, lengthSectors, handleErrors } = this.#parts;
    const source = legs[this.#parts.defaultLeg()] as Leg;
    const dests = legs.filter((leg) => leg !== source && writable(leg));
    const firstSector = region * log.regionSectors;
    const count = Math.min(log.regionSectors, lengthSectors - firstSector);
    if (dests.length === 0 || source.errorCount > 0) return !handleErrors;
    const result = await dmKcopydCopy(this.#kcopydClient(),
      { device: source.device, sector: source.offsetSectors + firstSector, count },
      dests.map((leg) => ({ device: leg.device, sector: leg.offsetSectors + firstSector, count })),
      // The primary's holes and zero blocks reach the other legs as write-zeroes (the same
      // bytes; a sparse leg stays sparse), as kcopyd's sparse option does for any copy.
      { signal: this.#abort.signal, sparse: { holes: 'write-zeroes' } });
    if (result.aborted) return false;
    if (result.readErr) failLeg(source, 'S');
    dests.forEach((leg, index) => {
      if ((result.writeErr >> BigInt(index)) & 1n) failLeg(leg, 'S');
    });
    const clean = !result.readErr && result.writeErr === 0n && dests.length === legs.length - 1;
    return clean || !handleErrors;
  }

  #kcopydClient(): KcopydClient {
    this.#kcopyd ??= createBackgroundKcopyd(this.#parts.client, this.#parts.throttlePercent);
    return this.#kcopyd;
  }

  /** Ends the hold on the current region and runs its parked writes. */
  #release(): void {
    this.#region = null;
    const parked = this.#parked;
    this.#parked = [];
    for (const resume of parked) resume();
  }
}
