// The real `dmio` binary's machine-readable progress: `--progress=FD` lines `N/100` (as nbdcopy
// writes them) and `--progress=json` lines on stderr, parsed here as a GUI or script would;
// bad modes are refused before anything is written.

import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileHash, randomHash, runDmio } from './cli-helpers.js';
import { tempDir } from './helpers/tmp.js';

const MIB = 1024 * 1024;

test('copy --progress=2 writes rising N/100 lines ending at 100/100', async (t) => {
  const dir = await tempDir(t);
  const dest = join(dir, 'a.img');
  const run = await runDmio(['copy', 'random:16M,seed=2', dest, '--progress=2',
    '--sub-job-size', '256K']);
  assert.equal(run.status, 0, run.stderr);
  const percents = run.stderr.trim().split('\n').map((line) => {
    const match = /^(\d+)\/100$/.exec(line);
    assert.ok(match !== null, `not a progress line: ${JSON.stringify(line)}`);
    return Number(match[1]);
  });
  assert.equal(percents[0], 0);
  assert.equal(percents.at(-1), 100);
  assert.ok(percents.length > 3, `only ${percents.length} lines`);
  for (let index = 1; index < percents.length; index += 1) {
    assert.ok(percents[index]! > percents[index - 1]!, 'each line is a new, higher percentage');
  }
  assert.equal(fileHash(dest), randomHash(2, 16 * MIB, 0, 16 * MIB));
});

test('copy --progress=json writes JSON lines whose last one gives every destination', async (t) => {
  const dir = await tempDir(t);
  const dests = [join(dir, 'a.img'), join(dir, 'b.img')];
  const run = await runDmio(['copy', 'random:8M', ...dests, '--progress=json']);
  assert.equal(run.status, 0, run.stderr);
  const lines = run.stderr.trim().split('\n').map((line) => JSON.parse(line) as {
    bytes: number; totalBytes: number; bytesPerSecond: number;
    destinations: Array<{ device: string; state: string; bytesWritten?: number }>;
  });
  assert.ok(lines.length >= 1);
  for (const line of lines) {
    assert.equal(line.totalBytes, 8 * MIB);
    assert.ok(line.bytes >= 0 && line.bytes <= 8 * MIB);
    assert.equal(typeof line.bytesPerSecond, 'number');
  }
  const last = lines.at(-1)!;
  assert.equal(last.bytes, 8 * MIB);
  assert.deepEqual(last.destinations, dests.map((device) => ({
    device, state: 'done', bytesWritten: 8 * MIB,
  })));
});

test('zero --progress=json reports a failed destination as failed', async (t) => {
  const dir = await tempDir(t);
  const dest = join(dir, 'a.img');
  const run = await runDmio(['zero', dest, 'mem:4M', '--length', '4M', '--progress=json'], {
    faults: { 'mem:4M': { failRate: 1 } },
  });
  assert.equal(run.status, 1);
  const last = JSON.parse(run.stderr.split('\n').filter((line) => line.startsWith('{')).at(-1)!) as {
    destinations: Array<{ device: string; state: string }>;
  };
  assert.deepEqual(last.destinations.map((d) => d.state), ['done', 'failed']);
});

test('a bad --progress mode is refused before anything is written', async (t) => {
  const dir = await tempDir(t);
  for (const mode of ['--progress=77', '--progress=bar', '--progress=']) {
    const dest = join(dir, 'never.img');
    const run = await runDmio(['copy', 'random:1M', dest, mode]);
    assert.equal(run.status, 2, `${mode}: ${run.stderr}`);
    assert.match(run.stderr, /--progress/);
    assert.equal(existsSync(dest), false, `${mode} created the destination`);
  }
});
