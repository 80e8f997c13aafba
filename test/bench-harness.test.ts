// Keeps the benchmark harness from rotting: runs `bench/run.ts` in a tiny mode (8 MiB, one
// repetition, 50 ms runs, the buffered file only, whatever peers exist) and checks the shape
// of what it prints and writes. It asserts nothing about speed: no test depends on timing.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { repetitionOrder, rotated } from '../bench/order.js';

const execFileAsync = promisify(execFile);

interface ResultsShape {
  startedAt: string;
  machine: { cpuCount: number; kernel: string; node: string };
  options: { reps: number; sizeBytes: number; workloads: number[] };
  peers: { found: Record<string, string>; missing: Record<string, string> };
  series: { workload: number; caseName: string; variant: string; role: string; unit: string;
    timer: string; cache: string; samples: number[]; cpuUsPerUnit: number[]; median: number }[];
  skips: { workload: number; caseName: string; variant: string; reason: string }[];
  targets: { workload: number; name: string; value: number | null; met: boolean | null }[];
}

test('the bench harness runs in tiny mode and reports a table, targets and JSON', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dmio-bench-test-'));
  const resultsPath = path.join(dir, 'results.json');
  try {
    const { stdout } = await execFileAsync(process.execPath, [
      '--import', 'tsx', 'bench/run.ts', '--quick', '--size', '8M', '--reps', '1',
      '--duration-ms', '50', '--warmup-ms', '10', '--targets', 'file', '--qd', '32',
      '--ops', 'read', '--rss-sizes', '8M,16M', '--no-install', '--dir', dir,
      '--results', resultsPath,
    ], { maxBuffer: 16 * 1024 * 1024, timeout: 120_000 });
    assert.match(stdout, /## Results \(medians of 1\)/);
    assert.match(stdout,
      /\| W \| case \| variant \| median \| min–max \| n \| best dmio ÷ this \|/);
    assert.match(stdout, /## Skipped/);
    assert.match(stdout, /## Targets/);
    const results = JSON.parse(fs.readFileSync(resultsPath, 'utf8')) as ResultsShape;
    assert.ok(results.machine.cpuCount >= 1);
    assert.equal(results.options.reps, 1);
    assert.equal(results.options.sizeBytes, 8 * 1024 * 1024);
    assert.deepEqual(results.options.workloads, [1, 2, 3, 4, 5, 6, 7]);
    for (const series of results.series) {
      assert.ok(['dmio', 'peer', 'diagnostic'].includes(series.role), series.variant);
      assert.ok(['IOPS', 'MiB/s', 'MiB'].includes(series.unit), series.variant);
      assert.equal(series.samples.length, 1, series.variant);
      assert.ok(series.median > 0 && Number.isFinite(series.median), series.variant);
      assert.ok(series.cache.length > 0);
      assert.ok(Array.isArray(series.cpuUsPerUnit));
    }
    for (const skip of results.skips) assert.ok(skip.reason.length > 0, skip.variant);
    // Plain Node needs no peer: workloads 1-3 always have a Node row, workload 5 its floor.
    for (const workload of [1, 2, 3, 5]) {
      assert.ok(results.series.some((s) => s.workload === workload),
        `workload ${workload} has rows`);
    }
    assert.ok(results.series.some((s) => s.workload === 4) ||
      results.skips.some((s) => s.workload === 4), 'workload 4 ran or said why not');
    assert.ok(results.series.some((s) => s.workload === 6) ||
      results.skips.some((s) => s.workload === 6), 'workload 6 ran or said why not');
    for (const caseName of ['write', 'read', 'randwrite'].map((word) => new RegExp(word))) {
      assert.ok(results.series.some((s) => s.workload === 7 && caseName.test(s.caseName)) ||
        results.skips.some((s) => s.workload === 7), `workload 7 ${String(caseName)} ran or said why not`);
    }
    assert.ok(Array.isArray(results.targets));
    assert.equal(fs.readdirSync(dir).filter((name) => name.startsWith('dmio-bench-')).length, 0,
      'the scratch directory is removed');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('each repetition runs every variant once, in another order', () => {
  const variants = ['fio', 'node fs', 'dmio notify', 'dmio promise'];
  assert.deepEqual(rotated(variants, 0), variants);
  assert.deepEqual(rotated(variants, 1), ['node fs', 'dmio notify', 'dmio promise', 'fio']);
  assert.deepEqual(rotated(variants, 5), rotated(variants, 1), 'wraps past the length');
  const firsts = [0, 1, 2, 3].map((rep) => rotated(variants, rep)[0]);
  assert.deepEqual([...firsts].sort(), [...variants].sort(), 'each variant leads once in 4 reps');
  assert.deepEqual(rotated([], 3), []);
  assert.deepEqual(variants, ['fio', 'node fs', 'dmio notify', 'dmio promise'], 'input untouched');
  // Odd repetitions run backwards; each pair of repetitions starts one variant further on.
  assert.deepEqual(repetitionOrder(variants, 0), variants);
  assert.deepEqual(repetitionOrder(variants, 1), ['dmio promise', 'dmio notify', 'node fs', 'fio']);
  assert.deepEqual(repetitionOrder(variants, 2), ['node fs', 'dmio notify', 'dmio promise', 'fio']);
  const [zero, one] = [0, 1].map((rep) => repetitionOrder(variants, rep));
  for (let index = 0; index + 1 < variants.length; index += 1) {
    const [a = '', b = ''] = variants.slice(index, index + 2);
    const first = (order: string[] = []): string => (order.indexOf(a) < order.indexOf(b) ? a : b);
    assert.notEqual(first(zero), first(one), `${a} and ${b} run both ways in repetitions 0, 1`);
  }
});
