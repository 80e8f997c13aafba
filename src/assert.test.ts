// The library's lean assertions throw Node's AssertionError exactly where node:assert/strict
// would, and narrow like it.

import nodeAssert, { AssertionError } from 'node:assert/strict';
import { test } from 'node:test';
import assert from './assert.js';

test('ok, equal, notEqual and fail throw AssertionError when they should, and only then', () => {
  assert.ok(1);
  assert.equal(Number.NaN, Number.NaN);
  assert.notEqual(0, -0);
  nodeAssert.throws(() => assert.ok(0, 'zero'), (error: unknown) =>
    error instanceof AssertionError && error.message === 'zero');
  nodeAssert.throws(() => assert.equal(1, 2), AssertionError);
  nodeAssert.throws(() => assert.equal(0, -0), AssertionError, 'Object.is, as strict equal');
  nodeAssert.throws(() => assert.notEqual('a', 'a'), AssertionError);
  nodeAssert.throws(() => assert.fail('boom'), /boom/);
});
