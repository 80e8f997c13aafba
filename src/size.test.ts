// Unit tests of size parsing: binary suffixes, fractions that come to whole bytes, refusals.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseSize } from './size.js';

test('binary suffixes in every spelling', () => {
  const cases: Array<[string, number]> = [['4096', 4096], ['64K', 65536], ['64k', 65536],
    ['64KiB', 65536], ['64KB', 65536], ['1.5M', 1572864], ['2G', 2 ** 31], ['1T', 2 ** 40],
    [' 8 M ', 8 * 2 ** 20], ['0', 0]];
  for (const [text, bytes] of cases) assert.equal(parseSize(text, 'size'), bytes, text);
});

test('not a size, or not whole bytes → DMIO_ERR_INVALID_ARG_VALUE naming the argument', () => {
  for (const text of ['', 'abc', '-1', '1X', '0.3', '1.1K', '1e3', '99999999999P']) {
    assert.throws(() => parseSize(text, '--length'),
      (error: Error & { code?: string }) => error.code === 'DMIO_ERR_INVALID_ARG_VALUE' &&
        error.message.includes('--length'), text);
  }
});
