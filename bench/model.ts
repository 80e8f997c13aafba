// Owns the vocabulary of a bench run: a series of samples for one (workload, case, variant),
// the runs that were skipped and why, and the target checks. Every number carries its unit in
// the series, and every series says how the page cache was prepared and how it was timed, so
// the table and the JSON file can never show a figure without its conditions.

/**
 * The five workloads of issue 5, workload 6 (`dmio serve`, issue 18) and workload 7 (device
 * stacks through `dmio serve`, issue 19).
 */
export type WorkloadId = 1 | 2 | 3 | 4 | 5 | 6 | 7;

/** Units a series may be in. IOPS and MiB/s: higher is better; MiB of RSS: lower is better. */
export type Unit = 'IOPS' | 'MiB/s' | 'MiB';

/**
 * What a variant is: dmio itself, a peer it is compared with, or a diagnostic that explains a
 * dmio figure (for example the dm-io core over a bench-local device that only calls `fs`).
 */
export type Role = 'dmio' | 'peer' | 'diagnostic';

/** How a sample was timed: inside the measuring process, or the wall time of a command. */
export type Timer = 'in-process' | 'wall';

/** Identifies a series (one variant on one case) and states its conditions. */
export interface SeriesKey {
  readonly workload: WorkloadId;
  /** For example `4K randread QD32 loop`. */
  readonly caseName: string;
  /** For example `fio io_uring` or `dmio notify uring`. */
  readonly variant: string;
  readonly role: Role;
  readonly unit: Unit;
  readonly timer: Timer;
  /** How the page cache was prepared before each run, in words. */
  readonly cache: string;
}

/** The samples of one variant on one case. */
export interface Series extends SeriesKey {
  /** One value per repetition, in `unit`. */
  readonly samples: number[];
  /**
   * CPU microseconds per operation (IOPS series) or per MiB (MiB/s series) of the measuring
   * process, all threads, one per repetition; empty when not measured (external programs).
   * Less sensitive to a busy machine than the rate itself.
   */
  readonly cpuUsPerUnit: number[];
}

/** A variant that did not run (missing peer, missing dmio piece, failure), and why. */
export interface Skip {
  readonly workload: WorkloadId;
  readonly caseName: string;
  readonly variant: string;
  readonly reason: string;
}

/** One target of issue 5, checked against the medians of this run. */
export interface TargetCheck {
  readonly workload: WorkloadId;
  /** What is compared, for example `dmio / fio io_uring, 4K randread QD32 loop`. */
  readonly name: string;
  /** The measured ratio or quantity; null when a side of the comparison did not run. */
  readonly value: number | null;
  readonly comparison: '>=' | '<=';
  readonly threshold: number;
  /** null when `value` is null. */
  readonly met: boolean | null;
  /** The two medians (or the missing side) in words. */
  readonly detail: string;
}

/** True when larger values of `unit` are better. */
export function higherIsBetter(unit: Unit): boolean {
  return unit !== 'MiB';
}
