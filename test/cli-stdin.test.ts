// `dmio copy - DEST...`: stdin of unknown length copied with kcopyd's stream copy. gzip and xz
// output piped into two new images with --verify; an input longer than a fixed-size
// destination fails that one alone (its bit, ENOSPC) while an existing, larger image gets the
// input and keeps its size; --length caps an endless input; an input ending inside a sector
// makes image files of its exact length.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { DMIO_BIN, jsonOf, runDmio, runDmioProcess } from './cli-helpers.js';
import { requireTools } from './helpers/nbdkit.js';
import { tempDir } from './helpers/tmp.js';

const MIB = 1024 * 1024;

/** Runs `sh -c "<producer> | dmio copy - ARGS"` and returns the status and output. */
function piped(producer: string, args: readonly string[], cwd: string): ReturnType<typeof spawnSync> {
  const quoted = args.map((arg) => `'${arg}'`).join(' ');
  return spawnSync('sh', ['-c', `${producer} | '${process.execPath}' '${DMIO_BIN}' copy - ${quoted}`],
    { cwd, encoding: 'utf8', env: process.env });
}

test('gzip -dc and xz -dc piped into copy - a.img b.img --verify', async (t) => {
  if (!requireTools(t, 'xz')) return;
  const dir = await tempDir(t);
  const data = randomBytes(19 * MIB + 4096);
  writeFileSync(join(dir, 'disk.img'), data);
  spawnSync('sh', ['-c', 'gzip -k disk.img && xz -k -0 -T1 disk.img'], { cwd: dir });
  for (const producer of ['gzip -dc disk.img.gz', 'xz -dc disk.img.xz']) {
    const run = piped(producer, ['a.img', 'b.img', '--verify', '--json'], dir);
    assert.equal(run.status, 0, String(run.stderr));
    const outcome = JSON.parse(String(run.stdout)) as { bytes: number; flushed: boolean };
    assert.equal(outcome.bytes, data.length);
    assert.equal(outcome.flushed, true);
    for (const name of ['a.img', 'b.img']) {
      assert.ok(readFileSync(join(dir, name)).equals(data), `${producer} -> ${name}`);
    }
  }
});

test('stdin longer than one destination: that one fails alone, the others complete',
  async (t) => {
    const dir = await tempDir(t);
    const input = randomBytes(3 * MIB);
    const existing = join(dir, 'big.img');
    writeFileSync(existing, Buffer.alloc(8 * MIB, 0x11));
    const run = await runDmio(['copy', '-', existing, 'mem:1M', join(dir, 'new.img'), '--json'],
      { input });
    assert.equal(run.status, 1, run.stderr);
    const outcome = jsonOf(run);
    assert.equal(outcome.writeErrorBits, '0x2');
    const [big, small, fresh] = outcome.destinations as Array<{ ok: boolean; error: string }>;
    assert.equal(big?.ok, true);
    assert.equal(fresh?.ok, true);
    assert.equal(small?.ok, false);
    assert.match(small?.error ?? '', /ENOSPC/);
    // Shorter than big.img: its first 3 MiB are the input, the rest and its size are kept.
    const back = readFileSync(existing);
    assert.equal(back.length, 8 * MIB);
    assert.ok(back.subarray(0, 3 * MIB).equals(input));
    assert.ok(back.subarray(3 * MIB).equals(Buffer.alloc(5 * MIB, 0x11)));
    assert.ok(readFileSync(join(dir, 'new.img')).equals(input));
  });

test('--length caps an endless stdin; a partial last sector gives an exact-length file',
  async (t) => {
    const dir = await tempDir(t);
    const run = piped('yes', ['capped.img', '--length', '1M', '--json'], dir);
    assert.equal(run.status, 0, String(run.stderr));
    assert.equal(statSync(join(dir, 'capped.img')).size, MIB);
    assert.ok(readFileSync(join(dir, 'capped.img')).equals(Buffer.from('y\n'.repeat(MIB / 2))));
    const odd = randomBytes(MIB + 300);
    const oddRun = await runDmio(['copy', '-', join(dir, 'odd.img')], { input: odd });
    assert.equal(oddRun.status, 0, oddRun.stderr);
    assert.match(oddRun.stderr, /300 bytes into a sector/);
    assert.ok(readFileSync(join(dir, 'odd.img')).equals(odd));
  });

test('stdin that is a destination is refused (exit 2) before anything is written', async (t) => {
  const dir = await tempDir(t);
  const data = randomBytes(64 * 1024);
  const image = join(dir, 'x.img');
  writeFileSync(image, data);
  for (const extra of [[], ['--dest-sector', '8'], ['other.img']]) {
    const quoted = ['x.img', ...extra].map((arg) => `'${arg}'`).join(' ');
    const run = spawnSync('sh', ['-c', `timeout 20 '${process.execPath}' '${DMIO_BIN}' copy - ` +
      `${quoted} < x.img`], { cwd: dir, encoding: 'utf8',
      env: process.env });
    assert.equal(run.status, 2, `${extra.join(' ')}: ${run.stderr}`);
    assert.match(run.stderr, /stdin is x\.img itself/);
    assert.ok(readFileSync(image).equals(data), extra.join(' '));
    assert.equal(existsSync(join(dir, 'other.img')), false);
  }
});

test('SIGINT while stdin is stalled ends the copy at once; the image holds what was written',
  async (t) => {
    const dir = await tempDir(t);
    const input = randomBytes(9 * MIB);
    let interruptedAt = 0;
    const run = await runDmioProcess(['copy', '-', join(dir, 'a.img'), '--json'], {
      onSpawn: (child) => {
        // Nine MiB, then the producer stalls with the pipe open: the second segment never fills.
        child.stdin?.on('error', () => undefined);
        child.stdin?.write(input, () => {
          setTimeout(() => { interruptedAt = performance.now(); child.kill('SIGINT'); }, 3000);
        });
        const guard = setTimeout(() => child.kill('SIGKILL'), 20_000);
        child.on('close', () => clearTimeout(guard));
      },
    });
    assert.equal(run.status, 130, run.stderr);
    assert.ok(performance.now() - interruptedAt < 5000, 'exited promptly after SIGINT');
    assert.equal(jsonOf(run).interrupted, 'SIGINT');
    // The first 8 MiB segment was written; the file is cut to it, not left longer.
    assert.ok(readFileSync(join(dir, 'a.img')).equals(input.subarray(0, 8 * MIB)));
  });

test('stdin ending inside a sector onto an existing image: its bytes past the input are kept',
  async (t) => {
    const dir = await tempDir(t);
    const existing = join(dir, 'a.img');
    writeFileSync(existing, Buffer.alloc(64 * 1024, 0x11));
    const run = await runDmio(['copy', '-', existing], { input: randomBytes(1000) });
    assert.equal(run.status, 1, run.stderr);
    assert.match(run.stderr, /not written over an existing destination/);
    assert.doesNotMatch(run.stderr, /cut/);
    const back = readFileSync(existing);
    assert.equal(back.length, 64 * 1024);
    assert.ok(back.subarray(1000).equals(Buffer.alloc(64 * 1024 - 1000, 0x11)));
  });
