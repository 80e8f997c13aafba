// Owns the contract between a table device and its targets: the piece of a request a target
// receives (already cut at the segment's ends and at the target's maximum I/O length, with
// sectors relative to the segment's start), what a target declares (devices, limits, status
// and table strings), and the plan a target type makes from its arguments before any device is
// opened. Each target type (linear, striped, ...) lives in its own file and implements these.
//
// Rules every target keeps:
// - `map`, `flush` and `extents` never call `done` synchronously.
// - Data pieces never carry `preflush`: the table device turns a flush with data into an empty
//   flush of every target followed by the data (as dm core does).
// - `stop` ends background work (timers, resync, writeback) and waits for it; the table device
//   closes the devices afterwards. Nothing is submitted by a target after `stop` resolved.

import type { DmIoClient } from '../core/client.js';
import type {
  BlockDevice, DeviceOp, ExtentsDone, RequestFlags,
} from '../devices/block-device.js';
import type { DmIoError } from '../errors.js';
import type { TableSource } from './table-text.js';

/** One piece of a request given to a target; `sector` is relative to the segment start. */
export interface TargetIo {
  readonly op: DeviceOp;
  /** First sector, relative to the segment's start. */
  readonly sector: number;
  /** Sectors (> 0). */
  readonly countSectors: number;
  /** The piece's memory for read and write, in order; empty for discard and write-zeroes. */
  readonly segments: readonly Uint8Array[];
  /** The request's flags; `preflush` is always false on a piece. */
  readonly flags: RequestFlags;
  readonly ioprio: number;
}

/** Completion of a piece or of a flush: `null` on success. */
export type TargetDone = (error: DmIoError | null) => void;

/** Limits a target adds beyond those of its devices. */
export interface TargetLimits {
  /** A logical block the target needs (writecache: its block size), in bytes. */
  readonly logicalBlockBytes?: number;
  /** Most sectors of one discard the target takes; 0 means it refuses discards. */
  readonly maxDiscardSectors?: number;
  /** Most sectors of one write-zeroes the target takes; 0 means it refuses them. */
  readonly maxWriteZeroesSectors?: number;
}

/** A constructed target: one segment of a table. */
export interface Target {
  /** The target type, e.g. `linear`. */
  readonly type: string;
  /** Pieces never cross a multiple of this many sectors from the segment start; 0 = no limit. */
  readonly maxIoSectors: number;
  /** The devices the target sends I/O to (their limits bound the table's). */
  readonly devices: readonly BlockDevice[];
  /** Limits of the target's own, beyond its devices'. */
  readonly limits: TargetLimits;
  /** Handles one piece; `done` runs once, never synchronously. */
  map(io: TargetIo, done: TargetDone): void;
  /** Handles an empty flush (sent to every target); `done` runs once, never synchronously. */
  flush(done: TargetDone): void;
  /**
   * Optional: how `[sector, sector + countSectors)` of the segment is allocated, sectors
   * relative to the segment's start, with `BlockDevice.extents`' rules. Without it the
   * segment is data.
   */
  extents?(sector: number, countSectors: number, done: ExtentsDone): void;
  /** The runtime state, as `dmsetup status` prints it after `START LENGTH TYPE `. */
  status(): string;
  /** The canonical arguments, as `dmsetup table` prints them after `START LENGTH TYPE `. */
  table(): string;
  /**
   * Optional: the canonical arguments with the devices named `deviceIds` (one per entry of
   * `devices`, in order) instead of as the table named them. Only targets that keep no state
   * at all have it (linear, zero, error): opening that text again over the same devices,
   * elsewhere (a server's connection threads), gives a target that behaves the same beside
   * this one and whose status says the same. (Striped counts each leg's errors for its status,
   * and mirror and writecache keep state of their own: one instance must see every request.)
   */
  tableWith?(deviceIds: readonly string[]): string;
  /** Ends background work and waits for it and for every piece in flight. Idempotent. */
  stop(): Promise<void>;
}

/** A device extent a target uses: checked against the device's size and block before use. */
export interface TargetExtent {
  /** Index into the plan's `deviceArgs`. */
  readonly device: number;
  readonly sector: number;
  readonly countSectors: number;
}

/** What a target constructor gets once its devices are open. */
export interface TargetEnv {
  /** The open devices, parallel to the plan's `deviceArgs`. */
  readonly devices: readonly BlockDevice[];
  /** The device arguments as written in the table, for status and table strings. */
  readonly deviceIds: readonly string[];
  /** Sectors of the segment. */
  readonly lengthSectors: number;
  /** The table's dm-io client. */
  readonly ioClient: DmIoClient;
  /** The table is open read-only: targets write nothing, not even metadata. */
  readonly readOnly: boolean;
  /** Milliseconds now (injectable for tests; default `Date.now`). */
  readonly now: () => number;
  /** The kcopyd throttle of background copies (mirror resync, writecache writeback), percent. */
  readonly copyThrottlePercent: number;
  /** Where the table came from and its line, for errors raised while constructing. */
  readonly source: TableSource;
  readonly lineNumber: number;
}

/** What a target type makes of its arguments, before any device is opened. */
export interface TargetPlan {
  /** Device specs the target needs, in the order `TargetEnv.devices` gives them. */
  readonly deviceArgs: readonly string[];
  /** Extents to check against each device before construction. */
  readonly extents: readonly TargetExtent[];
  /** Builds the target; may read metadata (mirror disk log, writecache). */
  create(env: TargetEnv): Target | Promise<Target>;
}

/** Where a target's arguments sit, for errors. */
export interface TargetLine {
  readonly source: TableSource;
  readonly lineNumber: number;
  readonly lengthSectors: number;
}

/** A target type: parses its arguments into a plan, or throws a TableError naming the line. */
export type TargetParser = (args: readonly string[], line: TargetLine) => TargetPlan;
