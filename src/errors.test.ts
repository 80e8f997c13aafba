// Unit tests of the error family: stable codes, IoError details and message, withRegion
// copies that keep class, cause and message, and isDmIoError across copies.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  DmIoError, ERROR_CODES, IoError, isDmIoError, NotSupportedError, StateError,
} from './errors.js';

test('IoError carries errno, syscall, device, sector range and region', () => {
  const cause = Object.assign(new Error('boom'), { code: 'EIO' });
  const error = new IoError({ errno: 'EIO', syscall: 'preadv', device: 'disk.img', sector: 8,
    countSectors: 4, cause });
  assert.equal(error.code, 'DMIO_ERR_IO');
  assert.equal(error.name, 'IoError');
  assert.equal(error.regionIndex, -1);
  assert.equal(error.message, "DMIO_ERR_IO: EIO, preadv 'disk.img' sectors 8-11");
  assert.equal(error.cause, cause);
  const flush = new IoError({ errno: 'EIO', syscall: 'fdatasync', device: 'd', sector: 3,
    countSectors: 0 });
  assert.match(flush.message, /sector 3 \(empty\)/);
});

test('withRegion returns a copy of the same class; the original is untouched', () => {
  const cause = new Error('inner');
  const original = new NotSupportedError({ syscall: 'discard', device: 'd', sector: 0,
    countSectors: 8, cause });
  const copy = original.withRegion(5);
  assert.ok(copy instanceof NotSupportedError);
  assert.equal(copy.regionIndex, 5);
  assert.equal(original.regionIndex, -1);
  assert.equal(copy.code, 'DMIO_ERR_NOT_SUPPORTED');
  assert.equal(copy.errno, 'EOPNOTSUPP');
  assert.equal(copy.message, original.message);
  assert.equal(copy.cause, cause);
  assert.equal(copy.stack, original.stack);
});

test('codes are unique, prefixed, and matched by isDmIoError across copies', () => {
  assert.equal(new Set(ERROR_CODES).size, ERROR_CODES.length);
  assert.ok(ERROR_CODES.every((code) => code.startsWith('DMIO_ERR_')));
  const error = new StateError('DMIO_ERR_CLIENT_DESTROYED', 'client', 'gone');
  assert.ok(error instanceof DmIoError);
  assert.ok(isDmIoError(error, 'DMIO_ERR_CLIENT_DESTROYED'));
  assert.ok(!isDmIoError(error, 'DMIO_ERR_IO'));
  assert.ok(isDmIoError({ code: 'DMIO_ERR_IO' }), 'a foreign copy with the same code');
  assert.ok(!isDmIoError({ code: 'EIO' }));
  assert.ok(!isDmIoError(null));
});
