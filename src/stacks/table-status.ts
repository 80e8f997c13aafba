// Owns the text `dmsetup status` and `dmsetup table` print for a table device: one line per
// segment, `START LENGTH TYPE ` followed by the target's string. A target with an empty string
// leaves the trailing space, as dmsetup does.

import type { TableDevice, TableSegmentStatus } from './table-device.js';

/** Which string to print: runtime state (`status`) or canonical arguments (`table`). */
export type TableReport = 'status' | 'table';

/** The lines `dmsetup status` (or `table`) would print for `device`, without newlines. */
export function formatTableReport(device: TableDevice, report: TableReport): string[] {
  return device.segmentStatus().map((segment) => formatSegment(segment, report));
}

/** One segment's line. */
export function formatSegment(segment: TableSegmentStatus, report: TableReport): string {
  const text = report === 'status' ? segment.status : segment.table;
  return `${segment.startSector} ${segment.lengthSectors} ${segment.target} ${text}`;
}
