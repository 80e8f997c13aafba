// The real `dmio` binary refusing what it cannot do truthfully (issue 15, arguments and opening):
// a copy onto its own source range, a destination named twice (any spelling, link or device
// node), a later destination that cannot be opened or grown (immutable; EFBIG on a loop-mounted
// ext4) after earlier ones would have been created or extended, a FIFO anywhere a device goes,
// a source ending in a partial sector (files and an nbdkit `data` export), a size-0 file with
// content, zeroing past a destination's end, connection failures (exit 1, not 2), and messages
// that name the user's flags. Every refusal is checked against the bytes of every file
// involved. Image files grow sparse. Tests needing root, loop devices or nbdkit fail instead of
// skipping where CI=true.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  closeSync, existsSync, linkSync, openSync, readSync, mkdirSync, readdirSync, readFileSync, statSync, symlinkSync,
  writeFileSync,
} from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { NbdError, OpenError } from '../src/errors.js';
import { isOpenIoFailure } from '../src/cli/devices.js';
import { fileHash, randomHash, runDmio, runDmioProcess, type CliRun, type RunOptions } from './cli-helpers.js';
import { startFakeServer } from './helpers/fake-nbd-server.js';
import { requireLoopOrSkip, requireRootOrSkip, withLoopDevice } from './helpers/loop.js';
import { requireTools, startNbdkit } from './helpers/nbdkit.js';
import { tempDir } from './helpers/tmp.js';

const MIB = 1024 * 1024;
/** A run that has not ended by then is a hang: it is killed and the test fails. */
const HANG_LIMIT_MS = 15000;

/** Runs dmio, killing it after HANG_LIMIT_MS (its status is then null). */
function runBounded(args: readonly string[], options: RunOptions = {}): Promise<CliRun> {
  return runDmioProcess(args, {
    ...options,
    onSpawn: (child) => {
      child.stdin?.end('');
      const timer = setTimeout(() => child.kill('SIGKILL'), HANG_LIMIT_MS);
      child.once('exit', () => clearTimeout(timer));
    },
  });
}

/** Asserts bad usage: exit 2 and a message matching `message` on stderr. */
function assertUsage(run: CliRun, message: RegExp): void {
  assert.equal(run.status, 2, `exit status; stderr: ${run.stderr}`);
  assert.match(run.stderr, message);
  assert.doesNotMatch(run.stdout, /copied|zeroed|wrote/);
}

/** Every file of `dir` (not following subdirectories) with its size and sha256. */
function snapshot(dir: string): Record<string, string> {
  const files: Record<string, string> = {};
  for (const name of readdirSync(dir).sort()) {
    const path = join(dir, name);
    const stats = statSync(path);
    if (stats.isFile()) files[name] = `${stats.size}:${fileHash(path)}`;
  }
  return files;
}

function randomFile(path: string, sizeBytes: number, seed: number): Buffer {
  const bytes = Buffer.alloc(sizeBytes);
  let state = seed >>> 0 || 1;
  for (let index = 0; index < sizeBytes; index += 1) {
    state = (state * 1103515245 + 12345) >>> 0;
    bytes[index] = state >>> 24;
  }
  writeFileSync(path, bytes);
  return bytes;
}

/**
 * A fresh ext4 file system (4 KiB blocks: files at most 16 TiB) on a loop device, mounted on a
 * directory; unmounted and removed, image and all, when the test ends. Null when skipped.
 */
async function mountExt4(t: TestContext): Promise<string | null> {
  if (!requireLoopOrSkip(t)) return null;
  const dir = await mkdtemp(join(tmpdir(), 'dmio-ext4-'));
  const image = join(dir, 'ext4.img');
  const mountPoint = join(dir, 'mnt');
  let mounted = false;
  // One hook, so the unmount surely comes before the removal.
  t.after(async () => {
    if (mounted) execFileSync('umount', [mountPoint]);
    await rm(dir, { recursive: true, force: true });
  });
  execFileSync('truncate', ['-s', '64M', image]);
  execFileSync('mkfs.ext4', ['-q', '-F', '-b', '4096', image]);
  mkdirSync(mountPoint);
  execFileSync('mount', ['-o', 'loop', image, mountPoint]);
  mounted = true;
  return mountPoint;
}

/** Runs `fn` with `path` immutable (chattr +i), clearing the flag afterwards whatever happens. */
async function withImmutable<T>(path: string, fn: () => Promise<T>): Promise<T> {
  execFileSync('chattr', ['+i', path]);
  try {
    return await fn();
  } finally {
    execFileSync('chattr', ['-i', path]);
  }
}

describe('copy onto its own source', () => {
  it('refuses overlapping ranges of one file, whatever spells it, and leaves it untouched',
    async (t) => {
      const dir = await tempDir(t);
      const image = join(dir, 'ov.img');
      randomFile(image, 40 * MIB, 3);
      linkSync(image, join(dir, 'hard.img'));
      symlinkSync(image, join(dir, 'soft.img'));
      const before = fileHash(image);
      const mtimeMs = statSync(image).mtimeMs;
      const spellings = [image, join(dir, 'hard.img'), join(dir, 'soft.img'), `file:${image}`,
        join(dir, '.', 'ov.img')];
      for (const dest of spellings) {
        const run = await runDmio(['copy', image, dest, '--source-sector', '0',
          '--dest-sector', '2048', '--count', '65536', '--verify']);
        assertUsage(run, /same storage as the source .* overlap/);
      }
      // The whole file onto itself, and a destination range ending inside the source range.
      assertUsage(await runDmio(['copy', image, image]), /overlap/);
      assertUsage(await runDmio(['copy', image, join(dir, 'soft.img'), '--source-sector', '4096',
        '--dest-sector', '2048', '--count', '4096']), /overlap/);
      assert.equal(fileHash(image), before, 'not one byte changed');
      assert.equal(statSync(image).mtimeMs, mtimeMs);
    });

  it('copies a range of a file to a range of the same file that does not overlap', async (t) => {
    const dir = await tempDir(t);
    const image = join(dir, 'ov.img');
    const original = randomFile(image, 4 * MIB, 5);
    // Adjacent ranges: sectors 0-2047 to 2048-4095.
    const run = await runDmio(['copy', image, `file:${image}`, '--source-sector', '0',
      '--dest-sector', '2048', '--count', '2048', '--verify']);
    assert.equal(run.status, 0, run.stderr);
    const after = readFileSync(image);
    const expected = Buffer.concat([original.subarray(0, MIB), original.subarray(0, MIB),
      original.subarray(2 * MIB)]);
    assert.ok(after.equals(expected), 'the range copied, everything else as it was');
  });
});

describe('one destination named twice', () => {
  it('refuses two spellings of a new file and creates nothing', async (t) => {
    const dir = await tempDir(t);
    symlinkSync(join(dir, 'n.img'), join(dir, 'dangling.img'));
    const pairs = [[join(dir, 'n.img'), join(dir, '.', 'n.img')],
      [join(dir, 'n.img'), `file:${join(dir, 'n.img')}`],
      [join(dir, 'dangling.img'), join(dir, 'n.img')]];
    for (const [first, second] of pairs) {
      const run = await runDmio(['copy', 'random:1M', first!, join(dir, 'other.img'), second!]);
      assertUsage(run, /are the same destination/);
      assertUsage(await runDmio(['zero', first!, second!, '--length', '4K']),
        /are the same destination/);
    }
    assert.deepEqual(readdirSync(dir), ['dangling.img'], 'no file created');
  });

  it('refuses an existing file through a hard link or symlink and leaves it untouched',
    async (t) => {
      const dir = await tempDir(t);
      const image = join(dir, 'a.img');
      randomFile(image, MIB, 7);
      linkSync(image, join(dir, 'hard.img'));
      symlinkSync(image, join(dir, 'soft.img'));
      const before = snapshot(dir);
      for (const twin of [join(dir, 'hard.img'), join(dir, 'soft.img'), `file:${image}`]) {
        assertUsage(await runDmio(['copy', 'random:2M', image, twin]), /same destination/);
        assertUsage(await runDmio(['zero', image, twin]), /same destination/);
      }
      assert.deepEqual(snapshot(dir), before);
    });

  it('refuses two device nodes of one block device', async (t) => {
    if (!requireLoopOrSkip(t)) return;
    const dir = await tempDir(t);
    const backing = join(dir, 'backing.img');
    randomFile(backing, 4 * MIB, 9);
    const before = fileHash(backing);
    await withLoopDevice(backing, {}, async (loop) => {
      const [major, minor] = execFileSync('stat', ['-c', '%t %T', loop], { encoding: 'utf8' })
        .trim().split(' ').map((hex) => parseInt(hex, 16));
      const twin = join(dir, 'twin-node');
      execFileSync('mknod', [twin, 'b', String(major), String(minor)]);
      const run = await runDmio(['copy', 'random:1M', loop, twin]);
      assertUsage(run, /same destination/);
      assertUsage(await runDmio(['copy', loop, twin, '--count', '8']), /same storage as the source/);
    });
    assert.equal(fileHash(backing), before);
  });
});

describe('nothing created or extended when a later destination cannot be opened', () => {
  it('an immutable later destination: the new file is not created, the short one not grown',
    async (t) => {
      // ext4 supports the immutable flag wherever /tmp is.
      const mountPoint = await mountExt4(t);
      if (mountPoint === null) return;
      const dir = join(mountPoint, 'work');
      mkdirSync(dir);
      const short = join(dir, 'short.img');
      randomFile(short, 4096, 11);
      const frozen = join(dir, 'frozen.img');
      randomFile(frozen, 4096, 12);
      const before = snapshot(dir);
      await withImmutable(frozen, async () => {
        const run = await runDmio(['copy', 'random:1M', join(dir, 'new.img'), short, frozen]);
        assertUsage(run, /cannot open .*frozen\.img.*EPERM/);
        const zero = await runDmio(['zero', join(dir, 'new.img'), frozen, '--length', '4K']);
        assertUsage(zero, /EPERM/);
      });
      assert.deepEqual(snapshot(dir), before, 'new.img absent, short.img still 4096 bytes');
    });

  it('EFBIG on a later destination removes the file created and cuts the extended one back',
    async (t) => {
      if (!requireRootOrSkip(t)) return;
      const mountPoint = await mountExt4(t);
      if (mountPoint === null) return;
      // tmpfs takes sparse files far larger than ext4's 16 TiB; ext4 refuses with EFBIG.
      const shm = await tempDir(t, { parent: '/dev/shm' });
      const short = join(shm, 'short.img');
      randomFile(short, 4096, 13);
      const before = snapshot(shm);
      const destSector = String((17 * 2 ** 40) / 512);
      const run = await runDmio(['copy', 'random:4K', join(shm, 'new.img'), short,
        join(mountPoint, 'big.img'), '--dest-sector', destSector]);
      assertUsage(run, /--dest-sector \d+ with 8 sectors ends at byte .* EFBIG/);
      assert.deepEqual(snapshot(shm), before, 'new.img removed, short.img back to 4096 bytes');
      assert.equal(existsSync(join(mountPoint, 'big.img')), false);
    });

  it('a new image far into the file is sparse, not preallocated', async (t) => {
    const dir = await tempDir(t);
    const image = join(dir, 'new.img');
    const run = await runDmio(['copy', 'random:8M', image, '--dest-sector', '2147483648',
      '--count', '8']);
    assert.equal(run.status, 0, run.stderr);
    const stats = statSync(image);
    assert.equal(stats.size, 2147483656 * 512);
    assert.ok(stats.blocks * 512 <= MIB, `${stats.blocks} blocks allocated for 4 KiB of data`);
    const fd = openSync(image, 'r');
    const tail = Buffer.alloc(4096);
    readSync(fd, tail, 0, 4096, 2147483648 * 512);
    closeSync(fd);
    assert.equal(createHash('sha256').update(tail).digest('hex'),
      randomHash(0, 8 * MIB, 0, 4096));
  });
});

describe('a FIFO is refused, never waited on', () => {
  it('as the source of copy, the device of read and info, and a destination', async (t) => {
    const dir = await tempDir(t);
    const fifo = join(dir, 'f');
    execFileSync('mkfifo', [fifo]);
    const runs: Array<[string[], RegExp]> = [
      [['copy', fifo, join(dir, 'a.img')], /FIFO/],
      [['read', fifo, '--sector', '0', '--count', '1'], /FIFO/],
      [['info', fifo], /FIFO/],
      [['copy', 'random:1M', join(dir, 'a.img'), fifo], /FIFO/],
      [['zero', fifo, '--length', '4K'], /FIFO/],
    ];
    for (const [args, message] of runs) {
      const run = await runBounded(args);
      assert.notEqual(run.status, null, `dmio ${args[0]} hung on the FIFO`);
      assertUsage(run, message);
    }
    assert.deepEqual(readdirSync(dir), ['f'], 'no file created');
  });
});

describe('a source that does not end on a sector', () => {
  it('a 1000-byte file: copy to its end is refused naming --count; info tells 1000 bytes',
    async (t) => {
      const dir = await tempDir(t);
      const source = join(dir, 'k.bin');
      const bytes = randomFile(source, 1000, 17);
      const run = await runDmio(['copy', source, join(dir, 'o.img'), '--verify']);
      assertUsage(run, /is 1000 bytes, not a whole number of 512-byte sectors: .* last 488 bytes.*--count 1 \(or --length 512\)/);
      assert.deepEqual(readdirSync(dir), ['k.bin']);
      const whole = await runDmio(['copy', source, join(dir, 'o.img'), '--count', '1']);
      assert.equal(whole.status, 0, whole.stderr);
      assert.ok(readFileSync(join(dir, 'o.img')).equals(bytes.subarray(0, 512)));
      const info = await runDmio(['info', source, '--json']);
      assert.equal(info.status, 0, info.stderr);
      const summary = JSON.parse(info.stdout) as { sizeBytes: number; sizeSectors: number };
      assert.deepEqual([summary.sizeBytes, summary.sizeSectors], [1000, 1]);
      const text = await runDmio(['info', source]);
      assert.match(text.stdout, /size: +1000 bytes .*1 sectors \(the last 488 bytes/);
    });

  it('an nbdkit data export of 1000 bytes: the same refusal and the true size', async (t) => {
    if (!requireTools(t, 'nbdkit')) return;
    const dir = await tempDir(t);
    const server = await startNbdkit(['data', '( 0x55 0xAA )*500']);
    t.after(() => server.stop());
    const info = await runDmio(['info', server.uri, '--json']);
    assert.equal(info.status, 0, info.stderr);
    const summary = JSON.parse(info.stdout) as { sizeBytes: number; sizeSectors: number };
    assert.deepEqual([summary.sizeBytes, summary.sizeSectors], [1000, 1]);
    const out = join(dir, 'o.img');
    assertUsage(await runDmio(['copy', server.uri, out]), /is 1000 bytes.*--count 1/);
    assert.equal(existsSync(out), false);
    const whole = await runDmio(['copy', server.uri, out, '--length', '512']);
    assert.equal(whole.status, 0, whole.stderr);
    assert.ok(readFileSync(out).equals(Buffer.alloc(512).fill(Buffer.from([0x55, 0xaa]))));
  });

  it('a file reporting size 0 with content (/proc/cpuinfo) is refused', async (t) => {
    const dir = await tempDir(t);
    const run = await runDmio(['copy', '/proc/cpuinfo', join(dir, 'a.img')]);
    assertUsage(run, /\/proc\/cpuinfo reports size 0 but has content; it is not a disk image/);
    assert.deepEqual(readdirSync(dir), []);
  });
});

describe('zero past the end of an existing destination', () => {
  it('is refused and the image neither grows nor changes', async (t) => {
    const dir = await tempDir(t);
    const image = join(dir, 'img');
    randomFile(image, 4 * MIB, 19);
    const before = snapshot(dir);
    const run = await runDmio(['zero', image, '--sector', '8000', '--count', '1000']);
    assertUsage(run, /run past its end \(8192 sectors\)/);
    assert.deepEqual(snapshot(dir), before);
    // A missing image is still created with the length given.
    const fresh = join(dir, 'fresh.img');
    const created = await runDmio(['zero', fresh, '--length', '64K']);
    assert.equal(created.status, 0, created.stderr);
    assert.equal(statSync(fresh).size, 64 * 1024);
  });
});

describe('connection failures are I/O errors (exit 1), argument problems stay exit 2', () => {
  it('an nbdkit that has stopped: ECONNREFUSED, exit 1, nothing created', async (t) => {
    if (!requireTools(t, 'nbdkit')) return;
    const dir = await tempDir(t);
    const server = await startNbdkit(['memory', '1M']);
    t.after(() => server.stop());
    assert.equal((await runDmio(['info', server.uri])).status, 0, 'the URI itself is good');
    server.child.kill('SIGTERM');
    await server.exited;
    assert.ok(existsSync(server.socketPath), 'nbdkit leaves its socket behind');
    const dest = join(dir, 'a.img');
    for (const args of [['copy', server.uri, dest], ['copy', 'random:1M', dest, server.uri],
      ['info', server.uri]]) {
      const run = await runDmio(args);
      assert.equal(run.status, 1, `dmio ${args.join(' ')}: ${run.stderr}`);
      assert.match(run.stderr, /cannot open nbd\+unix:.*ECONNREFUSED/);
    }
    assert.deepEqual(readdirSync(dir), []);
  });

  it('a server that accepts and closes during the handshake: exit 1', async (t) => {
    const server = await startFakeServer({ handshake: async (socket) => {
      socket.destroy();
    } });
    t.after(() => server.close());
    const dir = await tempDir(t);
    const run = await runDmio(['copy', server.uri, join(dir, 'a.img')]);
    assert.equal(run.status, 1, run.stderr);
    assert.match(run.stderr, /cannot open .*(DISCONNECTED|ECONNRESET)/);
    assert.deepEqual(readdirSync(dir), []);
  });

  it('a malformed URI and a missing socket stay bad usage', async (t) => {
    const dir = await tempDir(t);
    const malformed = await runDmio(['info', 'nbd://host:99999999/x']);
    assert.equal(malformed.status, 2, malformed.stderr);
    const missing = await runDmio(['info', `nbd+unix:///?socket=${join(dir, 'none.sock')}`]);
    assert.equal(missing.status, 2, missing.stderr);
    assert.match(missing.stderr, /ENOENT/);
  });

  it('classifies timeouts and drops as I/O, refusals and missing files as usage', () => {
    const uri = 'nbd+unix:///?socket=/x';
    assert.equal(isOpenIoFailure(new NbdError('DMIO_ERR_NBD_TIMEOUT', uri, 't')), true);
    assert.equal(isOpenIoFailure(new NbdError('DMIO_ERR_NBD_DISCONNECTED', uri, 'd')), true);
    assert.equal(isOpenIoFailure(new OpenError(uri, 'ECONNRESET', 'r')), true);
    assert.equal(isOpenIoFailure(new NbdError('DMIO_ERR_NBD_SERVER', uri, 'no such export')),
      false);
    for (const errno of ['ENOENT', 'EACCES', 'EISDIR', 'EPERM', 'ENOTBLK']) {
      assert.equal(isOpenIoFailure(new OpenError('a.img', errno, 'x')), false, errno);
    }
  });
});

describe('messages name the flags the user gave', () => {
  it('--length 1Q names --length once; a huge --dest-sector names --dest-sector', async (t) => {
    const dir = await tempDir(t);
    const bad = await runDmio(['copy', 'random:1M', join(dir, 'a.img'), '--length', '1Q']);
    assertUsage(bad, /^dmio: --length: "1Q" is not a size/m);
    assert.equal(bad.stderr.split('--length').length - 1, 1, bad.stderr);
    const huge = await runDmio(['copy', 'random:1M', join(dir, 'a.img'), '--dest-sector',
      '17592186044415', '--count', '8']);
    assertUsage(huge, /--dest-sector 17592186044415: the region would end at sector/);
    assert.doesNotMatch(huge.stderr, /options\./);
    const zero = await runDmio(['zero', join(dir, 'a.img'), '--sector', '17592186044415',
      '--count', '8']);
    assertUsage(zero, /--sector 17592186044415: the region would end/);
    assert.deepEqual(readdirSync(dir), []);
  });
});
