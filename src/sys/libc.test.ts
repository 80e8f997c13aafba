// Tests the libc bindings against the real kernel: fallocate on real files (ext4 and tmpfs),
// the range ioctls refused on a regular file, errno names, and the async forms completing on
// a later turn with the same outcome as the blocking forms; lseek SEEK_DATA/SEEK_HOLE on a
// sparse file, off the event loop.

import assert from 'node:assert/strict';
import {
  closeSync, ftruncateSync, openSync, readFileSync, statSync, writeSync,
} from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { errnoOf } from '../errors.js';
import { tempDir } from '../../test/helpers/tmp.js';
import { errnoName, errnoNumber } from './errno-name.js';
import {
  blockDeviceSizeBytesSync, blockRangeIoctlAsync, blockRangeIoctlSync, FALLOC_FL,
  fallocateAsync, fallocateSync, seekAsync, SysError, transferOneSync,
} from './libc.js';

test('errno names: both directions, with the preferred alias', () => {
  assert.equal(errnoName(5), 'EIO');
  assert.equal(errnoName(errnoNumber('EOPNOTSUPP') ?? -1), 'EOPNOTSUPP');
  assert.equal(errnoName(errnoNumber('EAGAIN') ?? -1), 'EAGAIN');
  assert.equal(errnoName(100000), 'EIO', 'unknown numbers still get a name');
  assert.equal(errnoNumber('ENOTTY'), 25);
  assert.equal(errnoNumber('ENOTANERRNO'), undefined);
});

test('pread64/pwrite64: bytes moved, a short read at the end, errors named like fs', async (t) => {
  const path = join(await tempDir(t), 'rw.img');
  const fd = openSync(path, 'w+');
  const written = new Uint8Array(8192).map((_, index) => index % 251);
  assert.equal(transferOneSync(fd, 'write', written, 4096), 8192);
  assert.deepEqual(readFileSync(path).subarray(4096), Buffer.from(written));
  const read = new Uint8Array(8192);
  assert.equal(transferOneSync(fd, 'read', read, 8192), 4096, 'short: the file ends');
  assert.deepEqual(read.subarray(0, 4096), written.subarray(4096));
  closeSync(fd);
  const refused = transferOneSync(fd, 'read', read, 0);
  assert.ok(refused instanceof SysError);
  assert.equal(refused.code, 'EBADF');
  assert.equal(refused.syscall, 'pread64');
  assert.equal(errnoOf(refused), 'EBADF');
  const readOnly = openSync(path, 'r');
  t.after(() => closeSync(readOnly));
  const notWritable = transferOneSync(readOnly, 'write', written, 0);
  assert.ok(notWritable instanceof SysError);
  assert.equal(notWritable.code, 'EBADF');
  assert.equal(notWritable.syscall, 'pwrite64');
});

test('fallocate punches a real hole; the error form names the errno', async (t) => {
  const path = join(await tempDir(t), 'f.img');
  const fd = openSync(path, 'w+');
  t.after(() => closeSync(fd));
  writeSync(fd, new Uint8Array(1024 * 1024).fill(9), 0, 1024 * 1024, 0);
  const blocksBefore = statSync(path).blocks;
  const mode = FALLOC_FL.PUNCH_HOLE | FALLOC_FL.KEEP_SIZE;
  assert.equal(fallocateSync(fd, mode, 0, 512 * 1024), null);
  assert.ok(statSync(path).blocks <= blocksBefore - 1024);
  assert.equal(statSync(path).size, 1024 * 1024);
  // The kernel does not support PUNCH_HOLE without KEEP_SIZE.
  const refused = fallocateSync(fd, FALLOC_FL.PUNCH_HOLE, 0, 4096);
  assert.ok(refused instanceof SysError);
  assert.equal(refused.code, 'EOPNOTSUPP');
  assert.equal(refused.errno, -95);
  assert.equal(errnoOf(refused), 'EOPNOTSUPP');
  assert.equal(fallocateSync(9999, mode, 0, 4096)?.code, 'EBADF');
});

test('tmpfs refuses ZERO_RANGE with EOPNOTSUPP, async and sync alike', async (t) => {
  const path = join(await tempDir(t, { parent: '/dev/shm' }), 'z.img');
  const fd = openSync(path, 'w+');
  t.after(() => closeSync(fd));
  ftruncateSync(fd, 65536);
  const mode = FALLOC_FL.ZERO_RANGE | FALLOC_FL.KEEP_SIZE;
  assert.equal(fallocateSync(fd, mode, 0, 4096)?.code, 'EOPNOTSUPP');
  let returned = false;
  const asyncError = await new Promise<SysError | null>((resolve) => {
    fallocateAsync(fd, mode, 0, 4096, (error) => {
      assert.ok(returned, 'callback on a later turn');
      resolve(error);
    });
    returned = true;
  });
  assert.equal(asyncError?.code, 'EOPNOTSUPP');
  assert.equal(asyncError?.syscall, 'fallocate');
});

test('block ioctls on a regular file fail with ENOTTY', async (t) => {
  const path = join(await tempDir(t), 'r.img');
  const fd = openSync(path, 'w+');
  t.after(() => closeSync(fd));
  ftruncateSync(fd, 65536);
  assert.equal(blockRangeIoctlSync(fd, 'BLKZEROOUT', 0, 4096)?.code, 'ENOTTY');
  assert.throws(() => blockDeviceSizeBytesSync(fd), (error: unknown) =>
    error instanceof SysError && error.code === 'ENOTTY' && error.syscall ===
      'ioctl BLKGETSIZE64');
  const asyncError = await new Promise<SysError | null>((resolve) => {
    blockRangeIoctlAsync(fd, 'BLKDISCARD', 0, 4096, resolve);
  });
  assert.equal(asyncError?.code, 'ENOTTY');
});

test('many async calls in flight each get their own errno', async (t) => {
  const directory = await tempDir(t);
  const fd = openSync(join(directory, 'm.img'), 'w+');
  t.after(() => closeSync(fd));
  ftruncateSync(fd, 1024 * 1024);
  const mode = FALLOC_FL.PUNCH_HOLE | FALLOC_FL.KEEP_SIZE;
  const outcomes = await Promise.all(Array.from({ length: 32 }, (_unused, index) =>
    new Promise<string | null>((resolve) => {
      // Odd calls use a closed descriptor number, even calls the real one.
      const target = index % 2 === 0 ? fd : 99999;
      fallocateAsync(target, mode, index * 4096, 4096, (error) => resolve(error?.code ?? null));
    })));
  outcomes.forEach((code, index) => assert.equal(code, index % 2 === 0 ? null : 'EBADF'));
});

test('lseek SEEK_DATA/SEEK_HOLE: data and holes, on a later turn; ENXIO past data', async (t) => {
  const fd = openSync(join(await tempDir(t), 's.img'), 'w+');
  t.after(() => closeSync(fd));
  ftruncateSync(fd, 1024 * 1024);
  writeSync(fd, Buffer.alloc(65536, 1), 0, 65536, 262144);
  const seek = (offsetBytes: number, whence: 'SEEK_DATA' | 'SEEK_HOLE') =>
    new Promise<[string | null, number]>((resolve) => {
      let returned = false;
      seekAsync(fd, offsetBytes, whence, (error, foundBytes) => {
        assert.ok(returned, 'the callback runs after seekAsync returned');
        resolve([error?.code ?? null, foundBytes]);
      });
      returned = true;
    });
  assert.deepEqual(await seek(0, 'SEEK_DATA'), [null, 262144]);
  assert.deepEqual(await seek(262144, 'SEEK_HOLE'), [null, 327680]);
  assert.deepEqual(await seek(0, 'SEEK_HOLE'), [null, 0]);
  assert.deepEqual(await seek(327680, 'SEEK_DATA'), ['ENXIO', 0]);
  assert.deepEqual(await seek(2 * 1024 * 1024, 'SEEK_HOLE'), ['ENXIO', 0], 'past the end');
  const closed = await new Promise<SysError | null>((resolve) => {
    seekAsync(99999, 0, 'SEEK_DATA', (error) => resolve(error));
  });
  assert.equal(closed?.code, 'EBADF');
  assert.equal(closed?.syscall, 'lseek SEEK_DATA');
});
