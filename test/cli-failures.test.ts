// The real `dmio` binary when part of a copy fails: a destination that runs out of space (a
// small tmpfs mounted by the test), an NBD destination whose nbdkit is killed mid-copy, a
// source that cannot be read. Every healthy destination must still be finished byte for byte,
// and no destination may be reported complete ("ok") unless every byte reached it; the report
// says how many bytes each destination got.

import assert from 'node:assert/strict';
import {
  closeSync, existsSync, openSync, readFileSync, readSync, writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileHash, jsonOf, randomHash, runDmio, type CliRun } from './cli-helpers.js';
import { requireTools, startNbdkit } from './helpers/nbdkit.js';
import { tempDir } from './helpers/tmp.js';
import { mountSmallTmpfs } from './helpers/tmpfs.js';

const MIB = 1024 * 1024;
const TOTAL = 64 * MIB;

interface Destination {
  device: string;
  ok: boolean;
  bytesWritten: number;
  error: string | null;
}

function destinationsOf(run: CliRun): Destination[] {
  return jsonOf(run).destinations as Destination[];
}

test('copy: a destination out of space fails alone; the other is finished and exact',
  async (t) => {
    const dir = await tempDir(t);
    const small = mountSmallTmpfs(t, 16);
    if (small === null) return;
    const healthy = join(dir, 'a.img');
    const full = join(small, 'b.img');
    const run = await runDmio(['copy', 'random:64M,seed=3', healthy, full, '--no-offload',
      '--json']);
    assert.equal(run.status, 1, run.stderr);
    const [a, b] = destinationsOf(run);
    assert.deepEqual(a, { device: healthy, ok: true, bytesWritten: TOTAL, error: null });
    assert.equal(fileHash(healthy), randomHash(3, TOTAL, 0, TOTAL), 'the healthy copy is exact');
    assert.equal(b?.ok, false);
    assert.match(b?.error ?? '', /ENOSPC/);
    assert.ok(b !== undefined && b.bytesWritten < TOTAL && b.bytesWritten <= 16 * MIB,
      `b got ${b?.bytesWritten} bytes`);
    assert.equal(jsonOf(run).writeErrorBits, '0x2');

    const text = await runDmio(['copy', 'random:64M,seed=4', healthy, full, '--no-offload']);
    assert.equal(text.status, 1);
    assert.match(text.stdout, /to 1 of 2 destination\(s\)/);
    assert.match(text.stderr, /b\.img FAILED with \d+(\.\d+)?MB of 64MB written: .*ENOSPC/);
    assert.equal(fileHash(healthy), randomHash(4, TOTAL, 0, TOTAL));
  });

test('copy: an NBD destination whose server is killed mid-copy fails alone', async (t) => {
  if (!requireTools(t, 'nbdkit')) return;
  const server = await startNbdkit(['--filter=delay', 'memory', '64M', 'delay-write=100ms']);
  t.after(() => server.stop('SIGKILL'));
  const dir = await tempDir(t);
  const healthy = join(dir, 'a.img');
  const killed = new Promise<void>((resolve) => {
    // Kill the server once the local destination holds its first data (the copy is running).
    const poll = setInterval(() => {
      if (!existsSync(healthy) || !firstBytesNonZero(healthy)) return;
      clearInterval(poll);
      void server.stop('SIGKILL').then(resolve);
    }, 5);
  });
  const run = await runDmio(['copy', 'random:64M,seed=9', healthy, server.uri, '--no-offload',
    '--json']);
  await killed;
  assert.equal(run.status, 1, run.stderr);
  const [a, remote] = destinationsOf(run);
  assert.equal(a?.ok, true, a?.error ?? '');
  assert.equal(a?.bytesWritten, TOTAL);
  assert.equal(fileHash(healthy), randomHash(9, TOTAL, 0, TOTAL));
  assert.equal(remote?.ok, false);
  assert.ok(remote !== undefined && remote.bytesWritten < TOTAL, `got ${remote?.bytesWritten}`);
});

function firstBytesNonZero(path: string): boolean {
  const fd = openSync(path, 'r');
  try {
    const bytes = Buffer.alloc(4096);
    const got = readSync(fd, bytes, 0, bytes.length, 0);
    return got > 0 && bytes.some((byte) => byte !== 0);
  } finally {
    closeSync(fd);
  }
}

test('copy: a source read error leaves no destination reported complete', async (t) => {
  const dir = await tempDir(t);
  const dests = [join(dir, 'a.img'), join(dir, 'b.img')];
  const faults = { 'random:64M': { ranges: [{ sector: 20000, countSectors: 8, ops: ['read' as const] }] } };
  const run = await runDmio(['copy', 'random:64M', ...dests, '--json'], {
    faults: faults,
  });
  assert.equal(run.status, 1);
  assert.equal(jsonOf(run).readError, true);
  assert.equal(jsonOf(run).writeErrorBits, '0x0', 'no destination failed a write');
  for (const destination of destinationsOf(run)) {
    assert.equal(destination.ok, false);
    assert.ok(destination.bytesWritten < TOTAL, `${destination.bytesWritten} bytes`);
    assert.match(destination.error ?? '', /incomplete: .*reading the source failed/);
  }
  const text = await runDmio(['copy', 'random:64M', ...dests], {
    faults: faults,
  });
  assert.equal(text.status, 1);
  assert.match(text.stdout, /to 0 of 2 destination\(s\)/);
  assert.match(text.stderr, /reading random:64M failed/);
  assert.match(text.stderr, /a\.img FAILED with .* of 64MB written: incomplete/);
});

test('copy --ignore-errors: every byte written, yet not reported as a faithful copy',
  async (t) => {
    const dir = await tempDir(t);
    const dest = join(dir, 'a.img');
    const faults = { 'random:8M': { ranges: [{ sector: 4096, countSectors: 8, ops: ['read' as const] }] } };
    const run = await runDmio(['copy', 'random:8M', dest, '--ignore-errors', '--json'], {
      faults: faults,
    });
    assert.equal(run.status, 1);
    const [a] = destinationsOf(run);
    assert.equal(a?.bytesWritten, 8 * MIB);
    assert.equal(a?.ok, false);
    assert.match(a?.error ?? '', /could not be read are zeros/);
  });

test('zero: a failing destination is dropped; the other is zeroed whole', async (t) => {
  const dir = await tempDir(t);
  const dests = [join(dir, 'a.img'), join(dir, 'b.img')];
  for (const dest of dests) writeFileSync(dest, Buffer.alloc(32 * MIB, 0x77));
  const faults = { [dests[1]!]: { ranges: [{ sector: 8192, countSectors: 8 }] } };
  const run = await runDmio(['zero', ...dests, '--json'], {
    faults: faults,
  });
  assert.equal(run.status, 1, run.stderr);
  const [a, b] = destinationsOf(run);
  assert.deepEqual(a, { device: dests[0], ok: true, bytesWritten: 32 * MIB, error: null });
  assert.ok(readFileSync(dests[0]!).every((byte) => byte === 0), 'a is zeroed whole');
  assert.equal(b?.ok, false);
  assert.match(b?.error ?? '', /EIO/);
  assert.ok(b !== undefined && b.bytesWritten < 32 * MIB, `b got ${b?.bytesWritten}`);
});
