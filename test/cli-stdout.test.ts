// `dmio copy SOURCE -`: the region to stdout through kcopyd and the stream sink device, the
// report on stderr. The real binary in real pipes: `| sha256sum`, a file source with
// --source-sector/--length, `| head -c 10` (EPIPE: exit 1, quiet, no hang), `> /dev/full`
// (exit 1, ENOSPC named), a regular file behind stdout (flushed), --progress=json and --json
// sharing stderr, and every refusal (exit 2, nothing created).

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { DMIO_BIN, randomHash, runDmio, runDmioProcess } from './cli-helpers.js';
import { requireTools } from './helpers/nbdkit.js';
import { tempDir } from './helpers/tmp.js';

const MIB = 1024 * 1024;
/** No run here should take long; a hang fails the test instead of stalling the suite. */
const RUN_TIMEOUT_MS = 60_000;

/** Runs `bash -c "dmio ARGS <shellTail>"`, printing dmio's exit status last on stderr. */
function shell(args: readonly string[], shellTail: string, cwd?: string) {
  const quoted = args.map((arg) => `'${arg}'`).join(' ');
  const run = spawnSync('bash', ['-c',
    `'${process.execPath}' '${DMIO_BIN}' ${quoted} ${shellTail}; echo "status=\${PIPESTATUS[0]}" >&2`],
  { cwd, encoding: 'buffer', timeout: RUN_TIMEOUT_MS, maxBuffer: 256 * MIB,
    env: process.env });
  assert.equal(run.error, undefined, 'the run finished in time');
  const stderr = run.stderr.toString('utf8');
  const match = /status=(\d+)\n$/.exec(stderr);
  assert.ok(match !== null, stderr);
  return { status: Number(match[1]), stdout: run.stdout, stderr: stderr.slice(0, match.index) };
}

test('copy random:64M,seed=3 - | sha256sum: the hash of the region', () => {
  const run = shell(['copy', 'random:64M,seed=3', '-'], '| sha256sum');
  assert.equal(run.status, 0, run.stderr);
  const expected = randomHash(3, 64 * MIB, 0, 64 * MIB);
  assert.equal(run.stdout.toString('utf8').split(' ')[0], expected);
  assert.match(run.stderr, /^copied 64MB \(67108864 bytes\) to 1 of 1 destination\(s\) .*; not flushed \(stdout is a pipe: nothing to flush\)\n$/);
});

test('a file source with --source-sector and --length; --json goes to stderr', async (t) => {
  const dir = await tempDir(t);
  const data = randomBytes(8 * MIB);
  writeFileSync(join(dir, 'disk.img'), data);
  const piped = shell(['copy', join(dir, 'disk.img'), '-', '--source-sector', '2048',
    '--length', '3M', '--json'], '| cat');
  assert.equal(piped.status, 0, piped.stderr);
  assert.ok(piped.stdout.equals(data.subarray(MIB, 4 * MIB)));
  const outcome = JSON.parse(piped.stderr) as { bytes: number; flushed: boolean;
    destinations: Array<{ device: string; ok: boolean; bytesWritten: number }> };
  assert.equal(outcome.bytes, 3 * MIB);
  assert.equal(outcome.flushed, false);
  assert.deepEqual(outcome.destinations.map((d) => [d.device, d.ok, d.bytesWritten]),
    [['stdout', true, 3 * MIB]]);
});

test('| head -c 10: exit 1, nothing said (EPIPE), no hang; --json still reports', () => {
  const run = shell(['copy', 'random:1G', '-'], '| head -c 10 | wc -c');
  assert.equal(run.status, 1);
  assert.equal(run.stderr, '');
  assert.equal(run.stdout.toString('utf8').trim(), '10');
  const json = shell(['copy', 'random:1G', '-', '--json'], '| head -c 10 > /dev/null');
  assert.equal(json.status, 1);
  const outcome = JSON.parse(json.stderr) as { destinations: Array<{ ok: boolean; error: string }> };
  assert.equal(outcome.destinations[0]?.ok, false);
  assert.match(outcome.destinations[0]?.error ?? '', /EPIPE/);
});

test('> /dev/full: exit 1, ENOSPC named once', () => {
  const run = shell(['copy', 'random:8M', '-'], '> /dev/full');
  assert.equal(run.status, 1);
  const told = run.stderr.split('\n').filter((line) => line.includes('ENOSPC'));
  assert.deepEqual(told, ['dmio: writing stdout failed: ENOSPC: no space left on device, write']);
  assert.match(run.stderr, /to 0 of 1 destination/);
});

test('a regular file behind stdout is flushed; the source itself is refused', async (t) => {
  const dir = await tempDir(t);
  const run = shell(['copy', 'random:4M,seed=5', '-', '--json'], '> out.img', dir);
  assert.equal(run.status, 0, run.stderr);
  assert.equal((JSON.parse(run.stderr) as { flushed: boolean }).flushed, true);
  const bytes = readFileSync(join(dir, 'out.img'));
  assert.equal(bytes.length, 4 * MIB);
  const noFlush = shell(['copy', 'random:4M,seed=5', '-', '--no-flush'], '> out2.img', dir);
  assert.match(noFlush.stderr, /not flushed \(--no-flush\)/);
  // `>>` keeps the file: stdout is the source's own file, refused before a byte is written.
  const self = shell(['copy', 'out.img', '-'], '>> out.img', dir);
  assert.equal(self.status, 2);
  assert.match(self.stderr, /stdout is out\.img itself, the device being read/);
  assert.ok(readFileSync(join(dir, 'out.img')).equals(bytes));
});

test('--progress=json and --json share stderr: JSON lines, the outcome last', () => {
  const run = shell(['copy', 'random:16M', '-', '--progress=json', '--json'], '> /dev/null');
  assert.equal(run.status, 0, run.stderr);
  const lines = run.stderr.trim().split('\n').map((line) => JSON.parse(line) as
    Record<string, unknown>);
  assert.ok(lines.length >= 2);
  assert.equal(lines.at(-2)?.totalBytes, 16 * MIB);
  assert.equal(lines.at(-1)?.bytes, 16 * MIB);
  assert.ok('writeErrorBits' in lines.at(-1)!);
});

test('- with another destination, --verify, - -, --dest-sector, --progress=1: exit 2',
  async (t) => {
    const dir = await tempDir(t);
    const cases: Array<[string[], RegExp]> = [
      [['copy', 'random:1M', '-', 'out.img'], /only destination/],
      [['copy', 'random:1M', 'out.img', '-'], /only destination/],
      [['copy', 'random:1M', '-', '--verify'], /--verify: stdout cannot be read back/],
      [['copy', '-', '-'], /stdin to stdout/],
      [['copy', 'random:1M', '-', '--dest-sector', '8'], /--dest-sector: stdout cannot seek/],
      [['copy', 'random:1M', '-', '--ignore-errors'], /--ignore-errors/],
      [['copy', 'random:1M', '-', '--progress=1'], /--progress=1/],
    ];
    for (const [args, message] of cases) {
      const run = await runDmioProcess(args, { cwd: dir });
      assert.equal(run.status, 2, `${args.join(' ')}: ${run.stderr}`);
      assert.match(run.stderr, message);
      assert.equal(run.stdout, '');
      assert.equal(existsSync(join(dir, 'out.img')), false);
    }
  });

test('a terminal as stdout is refused (exit 2): the region would be printed raw', (t) => {
  if (!requireTools(t, 'script')) return;
  const run = spawnSync('script', ['-qec',
    `'${process.execPath}' '${DMIO_BIN}' copy random:1M -; echo "status=$?"`, '/dev/null'],
  { encoding: 'utf8', timeout: RUN_TIMEOUT_MS,
    env: process.env });
  assert.match(run.stdout, /stdout is a terminal/);
  assert.match(run.stdout, /status=2/);
});
