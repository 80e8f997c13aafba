// The blocking step runner on its own (the one blocking path of local devices): a transfer
// moves bytes at a byte offset through views of a larger buffer, a read at the end of the file
// comes back short without touching memory past it, and a refused call comes back as a result
// carrying Node's system error with the errno name, never as a throw.

import assert from 'node:assert/strict';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { errnoOf } from '../errors.js';
import { tempDir } from '../../test/helpers/tmp.js';
import { runStepSync } from './file-syscalls.js';

test('blocking steps move bytes at an offset, through views, and name the errno', async (t) => {
  const path = join(await tempDir(t), 'f.img');
  const fd = openSync(path, 'w+');
  t.after(() => closeSync(fd));
  const backing = new Uint8Array(8192).fill(1);
  const view = backing.subarray(4096, 6144).fill(7);
  const written = runStepSync(fd, { kind: 'write', buffers: [view], positionBytes: 1024 });
  assert.deepEqual(written, { bytes: 2048, error: null });
  const onDisk = readFileSync(path);
  assert.equal(onDisk.length, 3072);
  assert.ok(onDisk.subarray(1024).every((byte) => byte === 7));
  assert.ok(onDisk.subarray(0, 1024).every((byte) => byte === 0));
  const into = new Uint8Array(8192);
  const read = runStepSync(fd, { kind: 'read', buffers: [into.subarray(512, 4608)],
    positionBytes: 512 });
  assert.deepEqual(read, { bytes: 2560, error: null }, 'short at EOF');
  assert.ok(into.subarray(512, 1024).every((byte) => byte === 0));
  assert.ok(into.subarray(1024, 3072).every((byte) => byte === 7));
  assert.ok(into.subarray(3072).every((byte) => byte === 0), 'nothing past the read');
  const readOnly = openSync(path, 'r');
  t.after(() => closeSync(readOnly));
  const refused = runStepSync(readOnly, { kind: 'write', buffers: [view], positionBytes: 0 });
  assert.equal(refused.bytes, 0);
  assert.equal(errnoOf(refused.error), 'EBADF');
  const vectored = runStepSync(readOnly, { kind: 'write', buffers: [view, view],
    positionBytes: 0 });
  assert.deepEqual([vectored.bytes, errnoOf(vectored.error)], [0, 'EBADF']);
});
