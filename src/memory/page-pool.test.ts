// Unit tests of the bounded page pool: all-or-nothing takes, zeroing on return, the leak check.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { PAGE_SIZE } from '../constants.js';
import { isAlignedView } from './aligned.js';
import { PagePool } from './page-pool.js';

test('takes are all or nothing and never exceed the capacity', () => {
  const pool = new PagePool(4);
  const three = pool.tryTake(3);
  assert.ok(three !== null);
  assert.equal(pool.freePages, 1);
  assert.equal(pool.tryTake(2), null, 'not enough: nothing taken');
  assert.equal(pool.freePages, 1);
  assert.throws(() => pool.tryTake(5), { code: 'ERR_ASSERTION' });
  pool.give(three);
  assert.equal(pool.freePages, 4);
});

test('pages are aligned, PAGE_SIZE long, and zeroed when given back', () => {
  const pool = new PagePool(2);
  const pages = pool.tryTake(2);
  assert.ok(pages !== null);
  for (const page of pages) {
    assert.equal(page.length, PAGE_SIZE);
    assert.ok(isAlignedView(page, 4096));
    page.fill(0xab);
  }
  pool.give(pages);
  const again = pool.tryTake(2);
  assert.ok(again !== null && again.every((page) => page.every((byte) => byte === 0)));
});

test('the leak check fails while pages are out, and a double give is caught', () => {
  const pool = new PagePool(2);
  const page = pool.tryTake(1);
  assert.ok(page !== null);
  assert.throws(() => pool.assertAllReturned(), /1 pool pages were never returned/);
  pool.give(page);
  pool.assertAllReturned();
  assert.throws(() => pool.give(page), { code: 'ERR_ASSERTION' });
});
