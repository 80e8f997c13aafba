// NBD pieces that need no server: URI parsing, option validation, the READ coverage
// bookkeeping and the geometry derived from an advertisement.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { isDmIoError } from '../src/errors.js';
import { nbdGeometry } from '../src/nbd/nbd-limits.js';
import { openNbdDevice, resolveNbdOptions } from '../src/nbd/open-nbd.js';
import { ReadTarget } from '../src/nbd/read-target.js';
import { parseNbdUri } from '../src/nbd/uri.js';

describe('parseNbdUri', () => {
  test('accepts the standard forms', () => {
    assert.deepEqual(parseNbdUri('nbd://example.com').address,
      { transport: 'tcp', host: 'example.com', port: 10809 });
    const named = parseNbdUri('nbd://127.0.0.1:10899/disk%201');
    assert.deepEqual(named.address, { transport: 'tcp', host: '127.0.0.1', port: 10899 });
    assert.equal(named.exportName, 'disk 1');
    assert.deepEqual(parseNbdUri('nbd://[::1]:99/x').address, { transport: 'tcp', host: '::1', port: 99 });
    const unix = parseNbdUri('nbd+unix:///exp?socket=/tmp/a+b%20c.sock');
    assert.deepEqual(unix.address, { transport: 'unix', socketPath: '/tmp/a+b c.sock' });
    assert.equal(unix.exportName, 'exp');
    assert.equal(parseNbdUri('nbd+unix:///?socket=/s').exportName, '');
  });

  test('rejects malformed URIs with DMIO_ERR_INVALID_DEVICE_SPEC', () => {
    for (const bad of ['', 'nbd:', 'http://h/x', 'nbds://h/x?tls-bogus=1', 'nbd+unix:///x', 'nbd+unix://host/?socket=/s',
      'nbd+unix:///?socket=/a&socket=/b', 'nbd+unix:///?socket=/a&tls=1', 'nbd://h:0/', 'nbd://h:70000',
      'nbd://user@h/', 'nbd://h/%E0%A4%A', 'nbd://h/x#frag', 'nbd://h/?x=1', `nbd://h/${'a'.repeat(5000)}`]) {
      assert.throws(() => parseNbdUri(bad), (error: unknown) =>
        isDmIoError(error, 'DMIO_ERR_INVALID_DEVICE_SPEC'), bad);
    }
  });
});

describe('options', () => {
  test('defaults and bounds', async () => {
    const settings = resolveNbdOptions('nbd+unix:///?socket=/s', {});
    assert.equal(settings.inflightRequestsMax, 64);
    assert.equal(settings.connections, 1);
    assert.equal(settings.reconnect, null);
    assert.throws(() => resolveNbdOptions('nbd+unix:///?socket=/s', { connections: 17 }),
      (error: unknown) => isDmIoError(error, 'DMIO_ERR_OUT_OF_RANGE'));
    assert.throws(() => resolveNbdOptions('nbd+unix:///?socket=/s', { inflightBytesMax: 1.5 }),
      (error: unknown) => isDmIoError(error, 'DMIO_ERR_OUT_OF_RANGE'));
    assert.throws(() => resolveNbdOptions('nbd+unix:///?socket=/s',
      { reconnect: { attemptsMax: 0, delayMs: 1 } }), (error: unknown) => isDmIoError(error, 'DMIO_ERR_OUT_OF_RANGE'));
    assert.throws(() => resolveNbdOptions('nbd+unix:///?socket=/s',
      { readOnly: 'yes' as unknown as boolean }), (error: unknown) => isDmIoError(error, 'DMIO_ERR_INVALID_ARG_TYPE'));
    await assert.rejects(openNbdDevice('nbd://h', { requestTimeoutMs: -1 }),
      (error: unknown) => isDmIoError(error, 'DMIO_ERR_OUT_OF_RANGE'));
  });
});

describe('ReadTarget', () => {
  test('copies across segments and tracks coverage in any order', () => {
    const a = new Uint8Array(3);
    const b = new Uint8Array(0);
    const c = new Uint8Array(5);
    const target = new ReadTarget([a, b, c], 8);
    assert.equal(target.cover(4, 4), 'ok');
    target.copyIn(4, Uint8Array.of(4, 5, 6, 7));
    assert.equal(target.cover(0, 2), 'ok');
    target.copyIn(0, Uint8Array.of(0, 1));
    assert.equal(target.complete, false);
    assert.equal(target.cover(1, 2), 'overlap');
    assert.equal(target.cover(7, 2), 'outside');
    assert.equal(target.cover(2, 2), 'ok');
    target.zeroFill(2, 2);
    assert.equal(target.complete, true);
    assert.deepEqual([...a, ...c], [0, 1, 0, 0, 4, 5, 6, 7]);
  });
});

describe('nbdGeometry', () => {
  test('qemu-style advertisement and a server without block sizes', () => {
    const qemu = nbdGeometry('u', { sizeBytes: 64 * 2 ** 20 + 100, transmissionFlags: 0x0ded,
      structuredReplies: true, negotiation: 'go', baseAllocationContextId: null,
      blockSizes: { minimumBytes: 1, preferredBytes: 4096, maximumBytes: 32 * 2 ** 20 } }, 64 * 2 ** 20);
    assert.equal(qemu.sizeSectors, 131072, 'a partial last sector is not addressable');
    assert.equal(qemu.limits.maxSectorsPerRequest, 65536);
    assert.equal(qemu.limits.physicalBlockBytes, 4096);
    const bare = nbdGeometry('u', { sizeBytes: 2 ** 20, transmissionFlags: 0x1,
      structuredReplies: false, negotiation: 'export-name', blockSizes: null,
      baseAllocationContextId: null }, 2 ** 20);
    assert.equal(bare.limits.maxDiscardSectors, 0);
    assert.equal(bare.limits.maxWriteZeroesSectors, 0);
    assert.equal(bare.limits.flush, false);
    assert.equal(bare.limits.fua, false);
    assert.equal(bare.limits.maxSectorsPerRequest, 2048, 'capped by inflightBytesMax');
    assert.throws(() => nbdGeometry('u', { sizeBytes: 2 ** 20, transmissionFlags: 1,
      structuredReplies: true, negotiation: 'go', baseAllocationContextId: null,
      blockSizes: { minimumBytes: 1, preferredBytes: 256, maximumBytes: 256 } }, 2 ** 20),
    (error: unknown) => isDmIoError(error, 'DMIO_ERR_NBD_PROTOCOL'));
  });
});
