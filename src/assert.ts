// Owns the library's internal assertions: the subset of node:assert the code uses (ok, equal,
// notEqual, fail), throwing the same AssertionError. Node's own `assert.ok(...args)` and
// `assert.equal` gather their arguments into an array on every call, which showed up on the
// per-request path; these take fixed parameters and allocate nothing when they pass.
// Assertions guard programmer errors only: the library never catches them.

import { AssertionError } from 'node:assert';

/** The assertion functions, typed so that TypeScript narrows after each call. */
export interface Assert {
  /** Throws unless `value` is truthy. */
  ok(value: unknown, message?: string): asserts value;
  /** Throws unless `actual` and `expected` are the same value (`Object.is`). */
  equal<T>(actual: unknown, expected: T, message?: string): asserts actual is T;
  /** Throws when `actual` and `expected` are the same value. */
  notEqual(actual: unknown, expected: unknown, message?: string): void;
  /** Always throws. */
  fail(message?: string): never;
}

function ok(value: unknown, message?: string): asserts value {
  if (!value) {
    throw new AssertionError({
      message: message ?? 'The expression evaluated to a falsy value', actual: value,
      expected: true, operator: '==',
    });
  }
}

function equal<T>(actual: unknown, expected: T, message?: string): asserts actual is T {
  if (!Object.is(actual, expected)) {
    throw new AssertionError({
      message: message ?? `Expected ${String(actual)} to be ${String(expected)}`, actual,
      expected, operator: 'strictEqual',
    });
  }
}

function notEqual(actual: unknown, expected: unknown, message?: string): void {
  if (Object.is(actual, expected)) {
    throw new AssertionError({
      message: message ?? `Expected a value other than ${String(expected)}`, actual, expected,
      operator: 'notStrictEqual',
    });
  }
}

function fail(message?: string): never {
  throw new AssertionError({ message: message ?? 'Failed', operator: 'fail' });
}

/** The library's assertions. */
const assert: Assert = { ok, equal, notEqual, fail };
export default assert;
