// The real `dmio` binary interrupted halfway through a copy or zero by SIGINT or SIGTERM: it
// stops issuing, lets I/O in flight settle, flushes, reports how far each destination got
// (never "ok"), and exits 130 or 143 — no hang, and what it wrote is the source's bytes.

import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileHash, jsonOf, randomHash, runDmioProcess } from './cli-helpers.js';
import { requireTools, startNbdkit } from './helpers/nbdkit.js';
import { tempDir } from './helpers/tmp.js';

const MIB = 1024 * 1024;
const TOTAL = 128 * MIB;

/** Sends `signal` to the child once its `--progress=2` lines pass `percent`. */
function signalAt(percent: number, signal: NodeJS.Signals): (child: ChildProcess) => void {
  return (child) => {
    child.stdin?.end();
    let sent = false;
    child.stderr?.on('data', (text: string) => {
      if (sent) return;
      const percents = [...text.matchAll(/^(\d+)\/100$/gm)].map((match) => Number(match[1]));
      if (percents.some((value) => value >= percent)) {
        sent = true;
        child.kill(signal);
      }
    });
  };
}

for (const [signal, status] of [['SIGINT', 130], ['SIGTERM', 143]] as const) {
  test(`copy: ${signal} at 40% exits ${status} with an honest partial report`, async (t) => {
    const dir = await tempDir(t);
    const dest = join(dir, 'a.img');
    // Throttled so that the copy lasts long enough to be interrupted midway.
    const run = await runDmioProcess(['copy', 'random:128M,seed=6', dest, '--throttle', '20',
      '--progress=2', '--json'], { onSpawn: signalAt(40, signal) });
    assert.equal(run.status, status, run.stderr);
    const outcome = jsonOf(run);
    assert.equal(outcome.interrupted, signal);
    assert.equal(outcome.flushed, true);
    const [destination] = outcome.destinations as Array<{ ok: boolean; bytesWritten: number;
      error: string }>;
    assert.equal(destination?.ok, false, 'an interrupted copy is never reported complete');
    assert.ok(destination !== undefined && destination.bytesWritten >= 0.3 * TOTAL &&
      destination.bytesWritten < TOTAL, `bytesWritten ${destination?.bytesWritten}`);
    assert.match(destination.error, /abort|interrupt/i);
    assert.match(run.stderr, new RegExp(`${signal}: stopping`));
    // Chunks finish nearly in order (8 in flight): all but the last few MiB written are exact.
    const exactBytes = Math.floor(destination.bytesWritten / MIB - 8) * MIB;
    assert.equal(fileHash(dest, 0, exactBytes), randomHash(6, TOTAL, 0, exactBytes));
  });
}

test('zero: SIGTERM midway exits 143 and reports nothing complete', async (t) => {
  if (!requireTools(t, 'nbdkit')) return;
  // Every zero request takes 50 ms, so 64 MiB in 512 KiB chunks lasts about a second.
  const server = await startNbdkit(['--filter=delay', 'memory', '64M', 'delay-zero=50ms',
    'delay-write=50ms']);
  t.after(() => server.stop());
  const run = await runDmioProcess(['zero', server.uri, '--progress=2', '--json'],
    { onSpawn: signalAt(10, 'SIGTERM') });
  assert.equal(run.status, 143, run.stderr);
  const outcome = jsonOf(run);
  assert.equal(outcome.interrupted, 'SIGTERM');
  const [destination] = outcome.destinations as Array<{ ok: boolean; bytesWritten: number }>;
  assert.equal(destination?.ok, false);
  assert.ok(destination !== undefined && destination.bytesWritten < 64 * MIB);
});
