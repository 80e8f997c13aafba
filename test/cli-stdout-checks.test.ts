// The real `dmio` binary refuses outputs where data would be lost or destroyed silently: a block
// device as stdout (Node drops every write to it), stdout being the very file being read, a
// held block device as `read --output`, and `--progress=1` beside `--json` on stdout. Also: one
// SIGINT delivered twice in a row (as `timeout -s INT` does) still gives the full report.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { closeSync, constants, openSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { DMIO_BIN, fileHash, jsonOf, runDmio, runDmioProcess, type CliRun } from './cli-helpers.js';
import { requireLoopOrSkip, withLoopDevice } from './helpers/loop.js';
import { tempDir } from './helpers/tmp.js';

const MIB = 1024 * 1024;

/** Runs the binary with descriptor `stdoutFd` as its stdout. */
function runWithStdout(args: readonly string[], stdoutFd: number): Promise<CliRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [DMIO_BIN, ...args], {
      stdio: ['ignore', stdoutFd, 'pipe'],
    });
    let stderr = '';
    child.stderr?.setEncoding('utf8').on('data', (text: string) => { stderr += text; });
    child.on('error', reject);
    child.on('close', (status) => resolve({ status, stdout: '', stderr }));
  });
}

test('a block device as stdout is refused by copy and read; the device is unchanged',
  async (t) => {
    if (!requireLoopOrSkip(t)) return;
    const dir = await tempDir(t);
    const backing = join(dir, 'backing.img');
    writeFileSync(backing, Buffer.alloc(8 * MIB, 0x3c));
    const before = fileHash(backing);
    await withLoopDevice(backing, {}, async (loop) => {
      const fd = openSync(loop, constants.O_WRONLY);
      try {
        const copy = await runWithStdout(['copy', 'random:4M', '-'], fd);
        assert.equal(copy.status, 2, copy.stderr);
        assert.match(copy.stderr, /stdout is a block device/);
        const read = await runWithStdout(['read', 'random:4M', '--sector', '0', '--length', '1M'],
          fd);
        assert.equal(read.status, 2, read.stderr);
        assert.match(read.stderr, /stdout is a block device/);
      } finally {
        closeSync(fd);
      }
    });
    assert.equal(fileHash(backing), before, 'nothing reached the device');
  });

test('read whose stdout is the file being read is refused; the file is unchanged', async (t) => {
  const dir = await tempDir(t);
  const image = join(dir, 'p.img');
  writeFileSync(image, Buffer.alloc(2 * MIB, 0x42));
  const before = fileHash(image);
  const fd = openSync(image, constants.O_RDWR);
  try {
    const run = await runWithStdout(['read', image, '--sector', '0', '--length', '1M'], fd);
    assert.equal(run.status, 2, run.stderr);
    assert.match(run.stderr, /stdout is .*p\.img itself/);
  } finally {
    closeSync(fd);
  }
  assert.equal(fileHash(image), before);
});

test('read --output naming a block device held by another opener is refused', async (t) => {
  if (!requireLoopOrSkip(t)) return;
  const dir = await tempDir(t);
  const backing = join(dir, 'held.img');
  writeFileSync(backing, Buffer.alloc(4 * MIB, 0x11));
  const before = fileHash(backing);
  await withLoopDevice(backing, {}, async (loop) => {
    // An exclusive open is what a mount holds: the kernel refuses a second one with EBUSY.
    const holder = openSync(loop, constants.O_RDONLY | constants.O_EXCL);
    try {
      const run = await runDmio(['read', 'random:1M', '--sector', '0', '--length', '1M',
        '--output', loop]);
      assert.equal(run.status, 2, run.stderr);
      assert.match(run.stderr, /is in use/);
    } finally {
      closeSync(holder);
    }
    const free = await runDmio(['read', 'random:1M', '--sector', '0', '--length', '1M',
      '--output', loop]);
    assert.equal(free.status, 0, free.stderr);
  });
  assert.notEqual(fileHash(backing), before, 'once free, the device was written');
});

test('--progress=1 with --json is refused before anything is written', async (t) => {
  const dir = await tempDir(t);
  const run = await runDmio(['copy', 'random:1M', join(dir, 'a.img'), '--progress=1', '--json']);
  assert.equal(run.status, 2, run.stderr);
  assert.match(run.stderr, /--progress=1 with --json/);
});

test('one SIGINT delivered twice at once still flushes and reports', async (t) => {
  const dir = await tempDir(t);
  const dest = join(dir, 'a.img');
  const run = await runDmioProcess(['copy', 'random:128M', dest, '--throttle', '20', '--progress=2',
    '--json'], {
    onSpawn: (child) => {
      child.stdin?.end();
      let sent = false;
      child.stderr?.on('data', (text: string) => {
        if (sent || !/^([1-9]\d*)\/100$/m.test(text)) return;
        sent = true;
        // As `timeout -s INT` does: the process, then at once its group (here: twice).
        child.kill('SIGINT');
        child.kill('SIGINT');
      });
    },
  });
  assert.equal(run.status, 130, run.stderr);
  assert.doesNotMatch(run.stderr, /again/);
  const outcome = jsonOf(run);
  assert.equal(outcome.interrupted, 'SIGINT');
  assert.equal(outcome.flushed, true);
});
