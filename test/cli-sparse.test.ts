// `dmio copy` keeps holes (issue 17): sparse sources made with truncate and scattered writes,
// copied to new files (allocation compared with `cp --sparse=always` of the same source), to
// existing files holding old data (holes become zeros), to an `nbdkit memory` export behind
// `--filter=log` (no WRITE over a hole: ZERO, or nothing with --target-is-zero), and to a
// server without write-zeroes, and to a 4K-sector loop device from an offset that is not 4K;
// `--sparse=0`, `--allocated` and `--preallocate` allocate. A sparse image piped into the real
// binary on stdin comes out sparse too.

import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { DMIO_BIN, jsonOf, runDmio } from './cli-helpers.js';
import { requireLoopOrSkip, withLoopDevice } from './helpers/loop.js';
import { requireTools, startNbdkit } from './helpers/nbdkit.js';
import { tempDir } from './helpers/tmp.js';

const MiB = 1024 * 1024;
const SOURCE_BYTES = 32 * MiB;
/** Where the sparse source holds data: 64 KiB at each of these MiB offsets. */
const DATA_AT_MIB = [0, 3, 11, 12, 30];
const DATA_BYTES = 64 * 1024;

/** A 32 MiB sparse file with 64 KiB of data at a few places, the rest a hole. */
function sparseSource(dir: string, name = 'source.img'): string {
  const file = path.join(dir, name);
  const fd = fs.openSync(file, 'w');
  fs.ftruncateSync(fd, SOURCE_BYTES);
  for (const [index, atMiB] of DATA_AT_MIB.entries()) {
    fs.writeSync(fd, new Uint8Array(DATA_BYTES).fill(index + 1), 0, DATA_BYTES, atMiB * MiB);
  }
  fs.closeSync(fd);
  return file;
}

function allocatedBytes(file: string): number {
  return fs.statSync(file).blocks * 512;
}

function sameBytes(a: string, b: string): boolean {
  return fs.readFileSync(a).equals(fs.readFileSync(b));
}

async function copyOk(args: string[]): Promise<void> {
  const run = await runDmio(['copy', ...args, '--json', '--no-progress']);
  assert.equal(run.status, 0, run.stderr);
  const destinations = jsonOf(run).destinations as Array<{ ok: boolean }>;
  assert.ok(destinations.every((dest) => dest.ok), run.stdout);
}

test('a sparse file to a new file, through memory: holes stay holes, as with cp --sparse=always', async (t) => {
  const dir = await tempDir(t);
  const source = sparseSource(dir);
  const copy = path.join(dir, 'copy.img');
  const cp = path.join(dir, 'cp.img');
  await copyOk([source, copy, '--no-offload', '--verify']);
  execFileSync('cp', ['--sparse=always', source, cp]);
  assert.ok(sameBytes(source, copy));
  assert.ok(allocatedBytes(copy) <= allocatedBytes(cp) + MiB,
    `dmio ${allocatedBytes(copy)} bytes allocated, cp ${allocatedBytes(cp)}`);
});

test('--sparse=0, --allocated and --preallocate allocate the whole destination', async (t) => {
  const dir = await tempDir(t);
  const source = sparseSource(dir);
  for (const flags of [['--sparse=0'], ['--allocated'], ['--preallocate']]) {
    const copy = path.join(dir, `copy${flags[0]}.img`);
    await copyOk([source, copy, '--no-offload', ...flags]);
    assert.ok(sameBytes(source, copy), flags.join(' '));
    assert.ok(allocatedBytes(copy) >= SOURCE_BYTES - MiB,
      `${flags.join(' ')}: ${allocatedBytes(copy)} bytes allocated`);
  }
});

test('an existing file with old data: the holes read as zeros afterwards', async (t) => {
  const dir = await tempDir(t);
  const source = sparseSource(dir);
  const dest = path.join(dir, 'old.img');
  fs.writeFileSync(dest, Buffer.alloc(SOURCE_BYTES, 0xcc));
  await copyOk([source, dest, '--no-offload']);
  assert.ok(sameBytes(source, dest));
});

/** Runs `cat SOURCE | dmio copy - DEST ARGS...` with the built binary; resolves with its status. */
function pipeCopy(source: string, dest: string, args: readonly string[]): Promise<number | null> {
  return new Promise((resolve, reject) => {
    const child = spawn('bash', ['-o', 'pipefail', '-c',
      'cat "$1" | "$DMIO" copy - "$2" --no-progress "${@:3}" >/dev/null', 'bash', source, dest,
      ...args], { env: { ...process.env, DMIO: DMIO_BIN }, stdio: ['ignore', 'ignore', 'inherit'] });
    child.on('error', reject);
    child.on('close', resolve);
  });
}

test('a sparse image piped on stdin: a new file keeps its holes, an old one gets zeros', async (t) => {
  const dir = await tempDir(t);
  const source = sparseSource(dir);
  const cp = path.join(dir, 'cp.img');
  execFileSync('cp', ['--sparse=always', source, cp]);
  const piped = path.join(dir, 'piped.img');
  assert.equal(await pipeCopy(source, piped, []), 0);
  assert.ok(sameBytes(source, piped));
  assert.ok(allocatedBytes(piped) <= allocatedBytes(cp) + MiB,
    `dmio ${allocatedBytes(piped)} bytes allocated, cp ${allocatedBytes(cp)}`);
  const dense = path.join(dir, 'dense.img');
  assert.equal(await pipeCopy(source, dense, ['--sparse=0']), 0);
  assert.ok(sameBytes(source, dense));
  assert.ok(allocatedBytes(dense) >= SOURCE_BYTES, '--sparse=0 writes every block');
  const old = path.join(dir, 'old.img');
  fs.writeFileSync(old, Buffer.alloc(SOURCE_BYTES, 0xcc));
  const run = await runDmio(['copy', '-', old, '--json', '--no-progress'],
    { input: fs.readFileSync(source) });
  assert.equal(run.status, 0, run.stderr);
  assert.ok(sameBytes(source, old));
});

test('--target-is-zero writes nothing over holes, even where the destination is not zero', async (t) => {
  const dir = await tempDir(t);
  const source = sparseSource(dir);
  const dest = path.join(dir, 'old.img');
  fs.writeFileSync(dest, Buffer.alloc(SOURCE_BYTES, 0xcc));
  await copyOk([source, dest, '--no-offload', '--target-is-zero']);
  const bytes = fs.readFileSync(dest);
  for (const [index, atMiB] of DATA_AT_MIB.entries()) {
    assert.equal(bytes[atMiB * MiB], index + 1, 'data was copied');
  }
  assert.equal(bytes[MiB], 0xcc, 'the hole at 1 MiB was not written: the flag is a promise');
});

test('--allocated and --target-is-zero together, and bad --sparse sizes, are refused', async (t) => {
  const dir = await tempDir(t);
  const source = sparseSource(dir);
  for (const flags of [['--allocated', '--target-is-zero'], ['--sparse=1000'],
    ['--sparse=2M'], ['--sparse=6K']]) {
    const dest = path.join(dir, 'never.img');
    const run = await runDmio(['copy', source, dest, ...flags, '--no-progress']);
    assert.equal(run.status, 2, `${flags.join(' ')}: ${run.stderr}`);
    assert.equal(fs.existsSync(dest), false, 'nothing created');
  }
});

/** Write and Zero commands of an nbdkit log file, as [command, offset, count]. */
function loggedRanges(logPath: string): Array<[string, number, number]> {
  const ranges: Array<[string, number, number]> = [];
  for (const line of fs.readFileSync(logPath, 'utf8').split('\n')) {
    const match = / (Write|Zero) id=\d+ offset=(0x[0-9a-f]+) count=(0x[0-9a-f]+)/.exec(line);
    if (match !== null) ranges.push([match[1]!, Number(match[2]), Number(match[3])]);
  }
  return ranges;
}

function overlapsData(offset: number, count: number): boolean {
  return DATA_AT_MIB.some((atMiB) => offset < atMiB * MiB + DATA_BYTES && atMiB * MiB < offset + count);
}

test('to nbdkit memory behind the log filter: WRITE only over data, ZERO or nothing over holes', async (t) => {
  if (!requireTools(t, 'nbdkit')) return;
  const dir = await tempDir(t);
  const source = sparseSource(dir);
  for (const [index, flags] of [[], ['--target-is-zero']].entries()) {
    const logPath = path.join(dir, `log-${index}.txt`);
    const server = await startNbdkit(['--filter=log', 'memory', `${SOURCE_BYTES}`,
      `logfile=${logPath}`]);
    try {
      await copyOk([source, server.uri, ...flags]);
      const back = path.join(dir, `back-${index}.img`);
      await copyOk([server.uri, back, '--sparse=0']);
      assert.ok(sameBytes(source, back), `the export holds the source (${flags.join(' ')})`);
    } finally {
      await server.stop();
    }
    const ranges = loggedRanges(logPath);
    const writes = ranges.filter(([command]) => command === 'Write');
    const zeroes = ranges.filter(([command]) => command === 'Zero');
    assert.ok(writes.length > 0);
    for (const [, offset, count] of writes) {
      assert.ok(overlapsData(offset, count), `WRITE over a hole: ${offset}+${count}`);
    }
    const writtenBytes = writes.reduce((sum, [, , count]) => sum + count, 0);
    assert.ok(writtenBytes <= DATA_AT_MIB.length * 2 * DATA_BYTES, `${writtenBytes} bytes written`);
    if (flags.length === 0) assert.ok(zeroes.length > 0, 'holes went as ZERO');
    else assert.deepEqual(zeroes, [], 'with --target-is-zero nothing goes over holes');
  }
});

test('to a server without write-zeroes: holes are written as zeros and the copy is right', async (t) => {
  if (!requireTools(t, 'nbdkit')) return;
  const dir = await tempDir(t);
  const source = sparseSource(dir);
  const server = await startNbdkit(['--filter=nozero', 'memory', `${SOURCE_BYTES}`]);
  try {
    // Old data first, so that a hole left unwritten would show.
    const junk = path.join(dir, 'junk.img');
    fs.writeFileSync(junk, Buffer.alloc(SOURCE_BYTES, 0x77));
    await copyOk([junk, server.uri, '--sparse=0']);
    await copyOk([source, server.uri]);
    const back = path.join(dir, 'back.img');
    await copyOk([server.uri, back]);
    assert.ok(sameBytes(source, back));
  } finally {
    await server.stop();
  }
});

test('to a loop device holding old data: holes become zeros (BLKZEROOUT), with --direct too', async (t) => {
  if (!requireLoopOrSkip(t)) return;
  const dir = await tempDir(t);
  const source = sparseSource(dir);
  const backing = path.join(dir, 'backing.img');
  for (const flags of [[], ['--direct']]) {
    fs.writeFileSync(backing, Buffer.alloc(SOURCE_BYTES, 0x99));
    await withLoopDevice(backing, {}, async (loop) => {
      await copyOk([source, loop, '--verify', ...flags]);
    });
    assert.ok(sameBytes(source, backing), flags.join(' '));
  }
});

test('a source with a punched hole: the copy keeps the hole', async (t) => {
  const dir = await tempDir(t);
  const source = path.join(dir, 'punched.img');
  fs.writeFileSync(source, Buffer.alloc(8 * MiB, 0x42));
  execFileSync('fallocate', ['--punch-hole', '--offset', String(MiB), '--length', String(6 * MiB),
    source]);
  const copy = path.join(dir, 'copy.img');
  await copyOk([source, copy]);
  assert.ok(sameBytes(source, copy));
  assert.ok(allocatedBytes(copy) <= 2 * MiB + 64 * 1024, `${allocatedBytes(copy)} bytes allocated`);
});

test('from nbdkit sparse-random and data exports: allocation as small as nbdcopy makes it', async (t) => {
  if (!requireTools(t, 'nbdkit', 'nbdcopy')) return;
  const dir = await tempDir(t);
  const exports: Array<[string, string[]]> = [
    ['sparse-random', ['sparse-random', `${64 * MiB}`, 'percent=2', 'runlength=65536', 'seed=7']],
    ['data', ['data', `data=@${MiB} 1 2 3 @${17 * MiB} "hello" @${40 * MiB} 9`, `size=${48 * MiB}`]],
  ];
  for (const [name, args] of exports) {
    const server = await startNbdkit(args);
    try {
      const copy = path.join(dir, `${name}-dmio.img`);
      const peer = path.join(dir, `${name}-nbdcopy.img`);
      await copyOk([server.uri, copy]);
      execFileSync('nbdcopy', [server.uri, peer]);
      assert.ok(sameBytes(copy, peer), `${name}: the same bytes as nbdcopy's copy`);
      assert.ok(allocatedBytes(copy) <= allocatedBytes(peer) + MiB,
        `${name}: dmio ${allocatedBytes(copy)} bytes allocated, nbdcopy ${allocatedBytes(peer)}`);
    } finally {
      await server.stop();
    }
  }
});

test('to a 4K-sector loop device from a 512-byte offset: holes rounded in to whole 4K blocks', async (t) => {
  if (!requireLoopOrSkip(t)) return;
  const dir = await tempDir(t);
  const source = sparseSource(dir);
  // Data 100 bytes long at 5 MiB + 1000: a sector-sized run inside a 4K block of the source.
  const fd = fs.openSync(source, 'r+');
  fs.writeSync(fd, Buffer.alloc(100, 0x77), 0, 100, 5 * MiB + 1000);
  fs.closeSync(fd);
  const backing = path.join(dir, 'backing.img');
  fs.writeFileSync(backing, Buffer.alloc(SOURCE_BYTES, 0xee));
  const countSectors = SOURCE_BYTES / 512 - 8;
  await withLoopDevice(backing, { sectorSize: 4096 }, async (loop) => {
    for (const flags of [[], ['--direct']]) {
      await copyOk([source, loop, '--source-sector=1', `--count=${countSectors}`, '--verify',
        ...flags]);
      const copied = Buffer.alloc(countSectors * 512);
      const loopFd = fs.openSync(loop, 'r');
      fs.readSync(loopFd, copied, 0, copied.length, 0);
      fs.closeSync(loopFd);
      assert.ok(copied.equals(fs.readFileSync(source).subarray(512, 512 + copied.length)),
        flags.join(' '));
    }
  });
});
