// Owns reading how far the system is from throttling buffered writers. The kernel lets a
// process dirty page-cache pages freely while the dirty and under-writeback pages stay below
// the middle of the background and foreground thresholds (the "freerun" point); past it,
// every buffered write may be paused in balance_dirty_pages for up to 200 ms. /proc/vmstat
// gives the counts and both thresholds, in pages. A cgroup's own dirty limits are not
// visible here: callers still time their writes (file-inline-write.ts).

import fs from 'node:fs';
import { PAGE_SIZE } from '../constants.js';

const VMSTAT_PATH = '/proc/vmstat';

/** The counters of /proc/vmstat the headroom is made of (pages). */
const FIELDS = ['nr_dirty', 'nr_writeback', 'nr_dirty_threshold',
  'nr_dirty_background_threshold'] as const;

/**
 * Bytes that may still be dirtied before writers are throttled, from the text of
 * /proc/vmstat; 0 at or past the freerun point, null when a counter is missing.
 */
export function parseDirtyHeadroomBytes(vmstat: string): number | null {
  const values = new Map<string, number>();
  for (const line of vmstat.split('\n')) {
    const space = line.indexOf(' ');
    if (space > 0) values.set(line.slice(0, space), Number(line.slice(space + 1)));
  }
  const [dirty, writeback, threshold, background] = FIELDS.map((name) => values.get(name));
  if (dirty === undefined || writeback === undefined || threshold === undefined ||
    background === undefined || [dirty, writeback, threshold, background].some(Number.isNaN)) {
    return null;
  }
  const freerunPages = Math.floor((threshold + background) / 2);
  return Math.max(0, freerunPages - dirty - writeback) * PAGE_SIZE;
}

/** `parseDirtyHeadroomBytes` of this system now; null where /proc/vmstat cannot be read. */
export function dirtyHeadroomBytes(): number | null {
  let text: string;
  try {
    text = fs.readFileSync(VMSTAT_PATH, 'latin1');
  } catch {
    return null;
  }
  return parseDirtyHeadroomBytes(text);
}
