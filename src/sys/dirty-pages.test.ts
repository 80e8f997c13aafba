// The dirty-page headroom: read from /proc/vmstat's text (freerun point minus dirty and
// writeback pages, never below 0; null when a counter is missing), and from this system.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { PAGE_SIZE } from '../constants.js';
import { dirtyHeadroomBytes, parseDirtyHeadroomBytes } from './dirty-pages.js';

function vmstat(
  dirty: number, writeback: number, threshold: number, background: number, writebackTemp = 0,
): string {
  return ['nr_free_pages 1000', `nr_dirty ${dirty}`, `nr_writeback_temp ${writebackTemp}`,
    `nr_writeback ${writeback}`, 'nr_dirty_threshold_x 7', `nr_dirty_threshold ${threshold}`,
    `nr_dirty_background_threshold ${background}`, 'pgpgin 5', ''].join('\n');
}

test('headroom: the middle of the two thresholds less dirty and writeback pages', () => {
  // Freerun point (1000 + 600) / 2 = 800 pages; 800 - 100 - 50 = 650 pages left.
  assert.equal(parseDirtyHeadroomBytes(vmstat(100, 50, 1000, 600)), 650 * PAGE_SIZE);
  assert.equal(parseDirtyHeadroomBytes(vmstat(700, 100, 1000, 600)), 0, 'at the point');
  assert.equal(parseDirtyHeadroomBytes(vmstat(900, 300, 1000, 600)), 0, 'past it: 0');
  // Counters whose names start with another's are not taken for it (either order).
  assert.equal(parseDirtyHeadroomBytes(vmstat(0, 0, 10, 0, 4)), 5 * PAGE_SIZE);
});

test('headroom: a counter missing or unreadable gives null', () => {
  assert.equal(parseDirtyHeadroomBytes(vmstat(1, 1, 1000, 600).replace(/^nr_dirty .*$/m, '')),
    null);
  assert.equal(parseDirtyHeadroomBytes('nr_dirty x\nnr_writeback 0\n' +
    'nr_dirty_threshold 10\nnr_dirty_background_threshold 5\n'), null);
  assert.equal(parseDirtyHeadroomBytes(''), null);
});

test('headroom of this system: a whole number of pages, at least 0', () => {
  const headroom = dirtyHeadroomBytes();
  assert.notEqual(headroom, null, 'Linux has /proc/vmstat with the four counters');
  assert.ok(Number.isSafeInteger(headroom) && (headroom as number) >= 0);
  assert.equal((headroom as number) % PAGE_SIZE, 0);
});
