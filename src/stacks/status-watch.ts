// Owns watching tables' status for an operator: `watchTableStatus` reports every segment's
// `dmsetup status` line once at the start, then checks every `intervalMs` and reports the lines
// of a table whose status changed (a leg turning D, resync progress, cache counters), and on
// demand (`report()`, which `dmio serve` calls on SIGUSR1). Its timer does not keep the process
// alive.

import type { TableDevice } from './table-device.js';
import { formatTableReport } from './table-status.js';

/** A table to watch and the label its lines carry (an export name). */
export interface WatchedTable {
  readonly label: string;
  readonly device: TableDevice;
}

/** A running watch. */
export interface TableStatusWatch {
  /** Reports every table's status now. */
  report(): void;
  /** Stops checking. Idempotent. */
  stop(): void;
}

/**
 * Reports table status lines through `write` (one call per line, no newline): all at once at
 * the start and on `report()`, and a table's lines whenever they changed since the last check.
 *
 * @example
 * const watch = watchTableStatus([{ label: 'disk', device }], (line) => console.error(line));
 * process.on('SIGUSR1', () => watch.report());
 */
export function watchTableStatus(
  tables: readonly WatchedTable[], write: (line: string) => void, intervalMs = 1000,
): TableStatusWatch {
  const last = new Map<WatchedTable, string>();
  const linesOf = (table: WatchedTable): string[] => (table.device.closed ? [] :
    formatTableReport(table.device, 'status').map((line) => `${table.label}: ${line}`));
  const emit = (table: WatchedTable, lines: readonly string[]): void => {
    last.set(table, lines.join('\n'));
    for (const line of lines) write(line);
  };
  const report = (): void => {
    for (const table of tables) emit(table, linesOf(table));
  };
  const timer = setInterval(() => {
    for (const table of tables) {
      const lines = linesOf(table);
      if (lines.join('\n') !== last.get(table)) emit(table, lines);
    }
  }, intervalMs);
  timer.unref();
  report();
  return { report, stop: () => clearInterval(timer) };
}
