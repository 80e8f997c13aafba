// Owns the results of a run while it happens: samples appended to their series, skips
// recorded once per (workload, case, variant), and a log line per measurement so a long run
// shows progress. The report reads it at the end.

import type { Series, SeriesKey, Skip, Unit, WorkloadId } from './model.js';

/** Collects series and skips in the order they first appear. */
export class Recorder {
  readonly series: Series[] = [];
  readonly skips: Skip[] = [];
  readonly #byKey = new Map<string, Series>();
  readonly #skipped = new Set<string>();
  readonly #log: (line: string) => void;

  constructor(log: (line: string) => void) {
    this.#log = log;
  }

  /** Appends one sample (in the key's unit) to its series. */
  add(key: SeriesKey, value: number, cpuUsPerUnit: number | null = null): void {
    const id = `${key.workload}\u0000${key.caseName}\u0000${key.variant}`;
    let series = this.#byKey.get(id);
    if (series === undefined) {
      series = { ...key, samples: [], cpuUsPerUnit: [] };
      this.#byKey.set(id, series);
      this.series.push(series);
    }
    series.samples.push(value);
    if (cpuUsPerUnit !== null) series.cpuUsPerUnit.push(cpuUsPerUnit);
    const where = `w${key.workload} ${key.caseName} | ${key.variant}`;
    this.#log(`  ${where}: ${formatValue(value, key.unit)}`);
  }

  /** Records that a variant did not run; repeated skips of the same variant are kept once. */
  skip(workload: WorkloadId, caseName: string, variant: string, reason: string): void {
    const id = `${workload}\u0000${caseName}\u0000${variant}`;
    if (this.#skipped.has(id)) return;
    this.#skipped.add(id);
    this.skips.push({ workload, caseName, variant, reason });
    this.#log(`  w${workload} ${caseName} | ${variant}: SKIPPED (${reason})`);
  }

  /** Logs a free-form progress line. */
  note(line: string): void {
    this.#log(line);
  }
}

/** A value with its unit, compact: 152.3k IOPS, 1834 MiB/s, 61.2 MiB. */
export function formatValue(value: number, unit: Unit): string {
  if (unit === 'IOPS') {
    return value >= 1000 ? `${(value / 1000).toFixed(1)}k IOPS` : `${value.toFixed(0)} IOPS`;
  }
  if (unit === 'MiB/s') return `${value.toFixed(0)} MiB/s`;
  return `${value.toFixed(1)} MiB`;
}
