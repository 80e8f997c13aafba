// Owns the mirror's dirty-region log (dm-log), `core` and the state `disk` shares: three
// bitsets over the regions — clean (no write may be in flight, the region is consistent), sync
// (in sync on every leg) and recovering — plus the sync count and the resync cursor. `core`
// keeps them in memory only: every open starts with every region clean and, unless `nosync`,
// none in sync (a full resync). `disk` (disk-log.ts) persists the clean bits.

import { Bitset } from './bitset.js';

/** `sync` forces a full resync, `nosync` declares every region in sync, `default` neither. */
export type SyncMode = 'default' | 'sync' | 'nosync';

/** A dirty-region log. */
export class DirtyLog {
  readonly regionCount: number;
  readonly regionSectors: number;
  readonly syncMode: SyncMode;
  protected readonly clean: Bitset;
  protected readonly sync: Bitset;
  readonly #recovering: Bitset;
  #syncCount: number;
  #cursor = 0;
  /** Regions dirtied or cleaned since the last flush. */
  protected touchedDirtied = false;
  protected touchedCleaned = false;
  /** A flush of the legs failed: no region may be cleaned again until the next open. */
  flushFailed = false;

  constructor(regionCount: number, regionSectors: number, syncMode: SyncMode) {
    this.regionCount = regionCount;
    this.regionSectors = regionSectors;
    this.syncMode = syncMode;
    this.clean = new Bitset(regionCount, true);
    this.sync = new Bitset(regionCount, syncMode === 'nosync');
    this.#recovering = new Bitset(regionCount, false);
    this.#syncCount = syncMode === 'nosync' ? regionCount : 0;
  }

  /** Regions in sync. */
  get syncCount(): number {
    return this.#syncCount;
  }

  /** True when the log keeps its bits across opens (`disk`); `core` does not. */
  get persistent(): boolean {
    return false;
  }

  /** True when the log device failed (its bits can no longer be trusted); never for core. */
  get failed(): boolean {
    return false;
  }

  /** True when regions were cleaned since the last flush (the legs must be flushed first). */
  get needsLegFlush(): boolean {
    return this.touchedCleaned;
  }

  /** A write is about to go to `region`: it is no longer clean. */
  markRegion(region: number): void {
    if (!this.clean.get(region)) return;
    this.clean.set(region, false);
    this.touchedDirtied = true;
  }

  /** No write is in flight to `region` and the legs hold it: clean again (unless a flush failed). */
  clearRegion(region: number): void {
    if (this.flushFailed || this.clean.get(region)) return;
    this.clean.set(region, true);
    this.touchedCleaned = true;
  }

  isClean(region: number): boolean {
    return this.clean.get(region);
  }

  inSync(region: number): boolean {
    return this.sync.get(region);
  }

  /** The next region needing resync at or after the cursor, now marked recovering; or null. */
  getResyncWork(): number | null {
    for (let region = this.#cursor; region < this.regionCount; region += 1) {
      if (!this.sync.get(region) && !this.#recovering.get(region)) {
        this.#recovering.set(region, true);
        this.#cursor = region + 1;
        return region;
      }
    }
    this.#cursor = this.regionCount;
    return null;
  }

  /** Ends recovery of `region`: in sync when `ok`, else out of sync. */
  setRegionSync(region: number, ok: boolean): void {
    this.#recovering.set(region, false);
    if (ok && !this.sync.get(region)) {
      this.sync.set(region, true);
      this.#syncCount += 1;
    } else if (!ok && this.sync.get(region)) {
      this.sync.set(region, false);
      this.#syncCount -= 1;
    }
  }

  /** Every region not clean is out of sync (after reading persisted clean bits). */
  protected syncFromClean(): void {
    this.sync.copyFrom(this.clean);
    this.#syncCount = this.sync.popcount();
    this.#cursor = 0;
  }

  /** Loads persisted state; core has none. */
  resume(): Promise<void> {
    this.#cursor = 0;
    return Promise.resolve();
  }

  /** Persists what changed; core persists nothing. */
  flush(): Promise<void> {
    this.touchedDirtied = false;
    this.touchedCleaned = false;
    return Promise.resolve();
  }

  /** `dmsetup status` of the log, e.g. `1 core`. */
  status(): string {
    return '1 core';
  }

  /** `dmsetup table` of the log, with its trailing space, e.g. `core 1 1024 `. */
  table(): string {
    const syncWord = this.syncMode === 'default' ? '' : `${this.syncMode} `;
    return `core ${syncWord === '' ? 1 : 2} ${this.regionSectors} ${syncWord}`;
  }
}
