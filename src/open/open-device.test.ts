// Unit tests of device specs: the grammar, sizes with suffixes, seeds, and malformed specs.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { openDevice, parseDeviceSpec } from './open-device.js';

test('the grammar', () => {
  assert.deepEqual(parseDeviceSpec('mem:64M'), { kind: 'mem', sizeBytes: 64 * 1024 * 1024 });
  assert.deepEqual(parseDeviceSpec('zero:1.5K'), { kind: 'zero', sizeBytes: 1536 });
  assert.deepEqual(parseDeviceSpec('null:4096'), { kind: 'null', sizeBytes: 4096 });
  assert.deepEqual(parseDeviceSpec('random:1G,seed=42'), { kind: 'random',
    sizeBytes: 1024 ** 3, seed: 42 });
  assert.deepEqual(parseDeviceSpec('random:8K'), { kind: 'random', sizeBytes: 8192, seed: 0 });
  assert.deepEqual(parseDeviceSpec('disk.img'), { kind: 'file', path: 'disk.img' });
  assert.deepEqual(parseDeviceSpec('file:mem:1M'), { kind: 'file', path: 'mem:1M' });
  assert.deepEqual(parseDeviceSpec('nbd://localhost:10809/x'), { kind: 'nbd',
    uri: 'nbd://localhost:10809/x' });
  // Every NBD scheme reaches the NBD opener, the TLS ones too (nbd/uri.ts checks the rest).
  for (const uri of ['nbd+unix:///x?socket=/s', 'nbds://h/x?tls-certificates=/pki',
    'nbds+unix://alice@/?socket=/s&tls-psk-file=/k']) {
    assert.deepEqual(parseDeviceSpec(uri), { kind: 'nbd', uri }, uri);
  }
});

test('malformed specs → DMIO_ERR_INVALID_DEVICE_SPEC', () => {
  for (const spec of ['', 'mem:', 'mem:abc', 'mem:1000', 'mem:0', 'zero:4K,seed=1',
    'random:4K,seed=-1', 'random:4K,seed=4294967296', 'random:4K,foo=1', 'file:']) {
    assert.throws(() => parseDeviceSpec(spec), { code: 'DMIO_ERR_INVALID_DEVICE_SPEC' }, spec);
  }
  assert.throws(() => parseDeviceSpec(1 as unknown as string),
    { code: 'DMIO_ERR_INVALID_ARG_TYPE' });
});

test('openDevice builds the in-process devices with their names and sizes', async () => {
  const mem = await openDevice('mem:1M');
  assert.equal(mem.kind, 'ram');
  assert.equal(mem.name, 'mem:1M');
  assert.equal(mem.sizeSectors, 2048);
  assert.equal(mem.readOnly, false);
  assert.equal((await openDevice('mem:1M', { readOnly: true })).readOnly, true);
  assert.equal((await openDevice('zero:1M')).readOnly, true);
  assert.equal((await openDevice('null:1M')).readOnly, false);
  assert.equal((await openDevice('random:1M,seed=3')).kind, 'random');
});
