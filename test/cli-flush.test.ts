// The real `dmio` binary makes its writes durable before it reports success: an NBD
// destination behind nbdkit's log filter sees FLUSH as the last command of every copy and zero
// (none with --no-flush), and strace shows fdatasync on a file destination after its last
// write. The outcome says whether it flushed.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { DMIO_BIN, jsonOf, runDmio } from './cli-helpers.js';
import { requireTools, startNbdkit } from './helpers/nbdkit.js';
import { tempDir } from './helpers/tmp.js';

/** The commands (Write, Flush, Zero, ...) in an nbdkit log file, in order. */
function loggedCommands(logPath: string): string[] {
  const commands: string[] = [];
  for (const line of readFileSync(logPath, 'utf8').split('\n')) {
    const match = / connection=\d+ (Read|Write|Flush|Trim|Zero|Cache|BlockStatus) id=/.exec(line);
    if (match !== null) commands.push(match[1]!);
  }
  return commands;
}

test('copy, zero and write end with an NBD FLUSH; --no-flush sends none', async (t) => {
  if (!requireTools(t, 'nbdkit')) return;
  const dir = await tempDir(t);
  const input = join(dir, 'input.bin');
  writeFileSync(input, randomBytes(3 * 1024 * 1024));
  const cases: Array<{ args: (uri: string) => string[]; flushed: boolean; writes: RegExp }> = [
    { args: (uri) => ['copy', 'random:4M', uri, '--json'], flushed: true, writes: /Write/ },
    { args: (uri) => ['zero', uri, '--length', '4M', '--json'], flushed: true, writes: /Zero/ },
    { args: (uri) => ['copy', 'random:4M', uri, '--no-flush', '--json'], flushed: false,
      writes: /Write/ },
    { args: (uri) => ['write', uri, '--sector', '8', '--input', input, '--json'], flushed: true,
      writes: /Write/ },
    { args: (uri) => ['write', uri, '--sector', '8', '--input', input, '--no-flush', '--json'],
      flushed: false, writes: /Write/ },
  ];
  for (const [index, testCase] of cases.entries()) {
    const logPath = join(dir, `log-${index}.txt`);
    const server = await startNbdkit(['--filter=log', 'memory', '8M', `logfile=${logPath}`]);
    try {
      const run = await runDmio(testCase.args(server.uri));
      assert.equal(run.status, 0, run.stderr);
      assert.equal(jsonOf(run).flushed, testCase.flushed);
    } finally {
      await server.stop();
    }
    const commands = loggedCommands(logPath);
    assert.ok(commands.some((command) => testCase.writes.test(command)), commands.join(' '));
    if (testCase.flushed) {
      assert.equal(commands.at(-1), 'Flush', `last command of case ${index}: ${commands.at(-1)}`);
    } else {
      assert.ok(!commands.includes('Flush'), `case ${index} flushed: ${commands.join(' ')}`);
    }
  }
});

test('copy to a file: fdatasync on the destination after its last write (strace)', async (t) => {
  if (!requireTools(t, 'strace')) return;
  const dir = await tempDir(t);
  const dest = join(dir, 'dest.img');
  const tracePath = join(dir, 'trace.txt');
  // -y prints each descriptor with the path it names, however the file was opened.
  const traced = spawnSync('strace', ['-f', '-qq', '-y', '-o', tracePath, '-e',
    'trace=pwrite64,pwritev,pwritev2,write,writev,copy_file_range,fdatasync,fsync',
    process.execPath, DMIO_BIN, 'copy', 'random:2M', dest, '--no-progress'],
  { encoding: 'utf8' });
  assert.equal(traced.status, 0, traced.stderr);
  const onDest = readFileSync(tracePath, 'utf8').split('\n').filter((line) =>
    new RegExp(`(pwrite64|pwritev2?|writev?|fdatasync|fsync|copy_file_range)\\(.*\\d+<${dest}>`)
      .test(line));
  assert.ok(onDest.some((line) => /pwrite|write|copy_file_range/.test(line)),
    'writes to the destination were traced');
  assert.match(onDest.at(-1)!, /(fdatasync|fsync)\(/, `last: ${onDest.at(-1)}`);
});

test('a failed flush fails that destination alone (copy, zero, write): exit 1, its bit, 0 bytes',
  async (t) => {
    const dir = await tempDir(t);
    const [good, bad] = [join(dir, 'good.img'), join(dir, 'bad.img')];
    const input = join(dir, 'input.bin');
    writeFileSync(input, randomBytes(1024 * 1024));
    const faults = { [bad]: { ranges: [{ sector: 0, countSectors: 1, ops: ['flush' as const] }] } };
    for (const args of [['copy', 'random:2M', good, bad], ['zero', good, bad, '--length', '1M'],
      ['write', good, bad, '--sector', '0', '--input', input]]) {
      const run = await runDmio([...args, '--json'], { faults });
      assert.equal(run.status, 1, `${args[0]}: ${run.stderr}`);
      const outcome = jsonOf(run);
      assert.equal(outcome.flushed, true);
      assert.equal(outcome.writeErrorBits, '0x2', args[0]);
      const [first, second] = outcome.destinations as Array<{ ok: boolean; bytesWritten: number;
        error: string | null }>;
      assert.equal(first?.ok, true, `${args[0]}: ${first?.error}`);
      assert.equal(second?.ok, false);
      assert.equal(second?.bytesWritten, 0);
      assert.match(second?.error ?? '', /^flush failed: .*EIO/);
      assert.match(run.stderr, /bad\.img FAILED with 0B? of .*flush failed/);
    }
  });
