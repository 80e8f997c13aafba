// The real `dmio` binary with output and input streams that fail or never end: `read` to a
// directory, a missing directory, /dev/full, a full tmpfs (mounted by the test), a pipe closed
// early and a closed stdout; every command that prints (copy --json, zero, write, info) with
// stdout closed, full or broken; `read --output` naming the device itself by any spelling
// (files, hard links, symlinks, a second block device node); `write` from /dev/zero and from
// `yes` (stopped at once, nothing written), a regular input streamed byte-exact to several
// devices with bounded memory, a failing device among them, and too-small destinations.

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import {
  existsSync, linkSync, readFileSync, statSync, symlinkSync, truncateSync, writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { requireLoopOrSkip, withLoopDevice } from './helpers/loop.js';
import { tempDir } from './helpers/tmp.js';
import { mountSmallTmpfs } from './helpers/tmpfs.js';
import { DMIO_BIN, fileHash, jsonOf, randomHash, runDmio, type CliRun } from './cli-helpers.js';

const MIB = 1024 * 1024;

/**
 * Runs a bash script with `$DMIO` naming the built bin (`DMIO_BIN`, after `npm run build`) under
 * `set -o pipefail`, so a pipeline's status is dmio's when dmio failed. `$@` holds `args`.
 */
function runShell(script: string, args: readonly string[] = [],
  env: Record<string, string> = {}): Promise<CliRun & { seconds: number }> {
  const startMs = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn('bash', ['-o', 'pipefail', '-c', script, 'bash', ...args], {
      env: { ...process.env, DMIO: DMIO_BIN, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (text: string) => { stdout += text; });
    child.stderr.setEncoding('utf8').on('data', (text: string) => { stderr += text; });
    child.on('error', reject);
    child.on('close', (status) => resolve({ status, stdout, stderr,
      seconds: (performance.now() - startMs) / 1000 }));
  });
}

/** No crash: no unhandled 'error' event, no stack trace, at most one line of message. */
function assertCleanFailure(run: CliRun, what: string): void {
  assert.doesNotMatch(run.stderr, /Unhandled|^\s+at /m, `${what}: ${run.stderr}`);
  assert.ok(run.stderr.trim().split('\n').length <= 1, `${what}: one line: ${run.stderr}`);
}

describe('dmio read: output failures are exit statuses, never crashes', () => {
  it('--output naming a directory or a path in a missing directory is exit 2 before reading',
    async (t) => {
      const dir = await tempDir(t);
      const run = await runDmio(['read', 'random:1M', '--sector', '0', '--length', '64K',
        '--output', dir]);
      assert.equal(run.status, 2, run.stderr);
      assert.match(run.stderr, /^dmio: --output .* is a directory\n$/);
      const missing = join(dir, 'no', 'such', 'out.bin');
      const run2 = await runDmio(['read', 'random:1M', '--sector', '0', '--length', '64K',
        '--output', missing]);
      assert.equal(run2.status, 2, run2.stderr);
      assert.match(run2.stderr, /^dmio: --output .*: directory .* does not exist\n$/);
      assert.equal(existsSync(join(dir, 'no')), false);
    });

  it('an existing --output is not truncated when a later check fails', async (t) => {
    const dir = await tempDir(t);
    const output = join(dir, 'out.bin');
    writeFileSync(output, Buffer.alloc(8192, 0x33));
    const run = await runDmio(['read', 'random:1M', '--sector', '4096', '--count', '8',
      '--output', output]);
    assert.equal(run.status, 2, run.stderr);
    assert.ok(readFileSync(output).equals(Buffer.alloc(8192, 0x33)), 'output untouched');
    const fresh = join(dir, 'fresh.bin');
    const run2 = await runDmio(['read', join(dir, 'missing.img'), '--sector', '0', '--count',
      '8', '--output', fresh]);
    assert.equal(run2.status, 2, run2.stderr);
    assert.equal(existsSync(fresh), false, 'no output created');
  });

  it('stdout on /dev/full: exit 1, one line naming stdout and ENOSPC', async () => {
    const run = await runShell('node "$DMIO" read random:1M --sector 0 --length 256K >/dev/full');
    assert.equal(run.status, 1, run.stderr);
    assert.match(run.stderr, /^dmio: writing stdout failed: ENOSPC/);
    assertCleanFailure(run, 'read >/dev/full');
  });

  it('--output /dev/full: exit 1, one line naming the output and ENOSPC', async () => {
    const run = await runDmio(['read', 'random:1M', '--sector', '0', '--length', '256K',
      '--output', '/dev/full']);
    assert.equal(run.status, 1, run.stderr);
    assert.match(run.stderr, /^dmio: writing \/dev\/full failed: ENOSPC/);
    assertCleanFailure(run, 'read --output /dev/full');
  });

  it('--output on a full tmpfs: exit 1 naming the file and ENOSPC; what fit was written',
    async (t) => {
      const small = mountSmallTmpfs(t, 1);
      if (small === null) return;
      const output = join(small, 'out.bin');
      const run = await runDmio(['read', 'random:8M,seed=6', '--sector', '0', '--length', '4M',
        '--output', output]);
      assert.equal(run.status, 1, run.stderr);
      assert.match(run.stderr, new RegExp(`^dmio: writing ${output} failed: ENOSPC`));
      assertCleanFailure(run, 'read to a full tmpfs');
      const written = statSync(output).size;
      assert.ok(written > 0 && written <= MIB, `${written} bytes written`);
      assert.equal(fileHash(output), randomHash(6, 8 * MIB, 0, written));
    });

  it('a pipe closed early (| head -c 10) ends quietly with exit 1', async () => {
    const run = await runShell(
      'node "$DMIO" read random:64M --sector 0 --length 64M | head -c 10 >/dev/null');
    assert.equal(run.status, 1, run.stderr);
    assert.equal(run.stderr, '', 'EPIPE is not reported');
  });

  it('a closed stdout (>&-) is exit 1 naming EBADF, not exit 0', async () => {
    const run = await runShell('"$DMIO" read random:1M --sector 0 --length 64K >&-');
    assert.equal(run.status, 1, run.stderr);
    assert.match(run.stderr, /^dmio: writing stdout failed: EBADF/);
    assertCleanFailure(run, 'read >&-');
    const open = await runShell('"$DMIO" read random:1M --sector 0 --length 64K >/dev/null');
    assert.equal(open.status, 0, open.stderr);
  });
});

describe('every command that prints survives a closed, full or broken stdout', () => {
  /** Each command, and a check that its work was done whatever happened to stdout. */
  const commands = (dir: string): Array<{ name: string; args: string[]; done?: () => void }> => [
    { name: 'copy --json', args: ['copy', 'random:1M,seed=8', join(dir, 'c.img'), '--json'],
      done: () => assert.equal(fileHash(join(dir, 'c.img')), randomHash(8, MIB, 0, MIB)) },
    { name: 'zero', args: ['zero', join(dir, 'z.img'), '--sector', '0', '--length', '64K'],
      done: () => assert.ok(readFileSync(join(dir, 'z.img')).subarray(0, 65536)
        .every((b) => b === 0)) },
    { name: 'write', args: ['write', join(dir, 'w.img'), '--sector', '0', '--input',
      join(dir, 'in.bin')],
    done: () => assert.ok(readFileSync(join(dir, 'w.img')).equals(readFileSync(join(dir,
      'in.bin')))) },
    { name: 'info', args: ['info', 'mem:1M'] },
    { name: 'info --json', args: ['info', 'mem:1M', '--json'] },
  ];

  for (const [how, redirect, message] of [
    ['closed', '>&-', /^dmio: writing stdout failed: EBADF/],
    ['/dev/full', '>/dev/full', /^dmio: writing stdout failed: ENOSPC/],
    ['broken pipe', '| (exec 0<&-; sleep 0)', /^$/],
  ] as const) {
    it(`stdout ${how}: exit 1, a clean message (none for EPIPE), the work done`, async (t) => {
      const dir = await tempDir(t);
      writeFileSync(join(dir, 'z.img'), Buffer.alloc(MIB, 0x77));
      writeFileSync(join(dir, 'in.bin'), Buffer.alloc(8192, 0x42));
      for (const command of commands(dir)) {
        const run = await runShell(`"$DMIO" "$@" ${redirect}`, command.args);
        assert.equal(run.status, 1, `${command.name}: ${run.stderr}`);
        assert.match(run.stderr, message, command.name);
        assertCleanFailure(run, command.name);
        command.done?.();
      }
    });
  }
});

describe('dmio read --output never overwrites the device it reads', () => {
  it('refuses the same file by path, ./ spelling, file: spec, hard link and symlink', async (t) => {
    const dir = await tempDir(t);
    const device = join(dir, 'dev.img');
    assert.equal((await runDmio(['copy', 'random:4M,seed=9', device])).status, 0);
    const before = fileHash(device);
    linkSync(device, join(dir, 'hard.img'));
    symlinkSync(device, join(dir, 'sym.img'));
    for (const [spec, output] of [
      [device, device],
      [`file:${device}`, join(dir, '.', 'dev.img')],
      [device, join(dir, 'hard.img')],
      [join(dir, 'sym.img'), device],
      [device, join(dir, 'sym.img')],
    ] as const) {
      const run = await runDmio(['read', spec, '--sector', '0', '--length', '1M',
        '--output', output]);
      assert.equal(run.status, 2, `${spec} -> ${output}: ${run.stderr}`);
      assert.match(run.stderr, /is the same file as .*the device being read/);
      assert.equal(fileHash(device), before, `${spec} -> ${output}: device unchanged`);
      assert.equal(statSync(device).size, 4 * MIB);
    }
  });

  it('refuses the same block device by its own path and by a second device node', async (t) => {
    if (!requireLoopOrSkip(t)) return;
    const dir = await tempDir(t);
    const backing = join(dir, 'backing.img');
    assert.equal((await runDmio(['copy', 'random:4M,seed=10', backing])).status, 0);
    const before = fileHash(backing);
    await withLoopDevice(backing, {}, async (loop) => {
      const node = join(dir, 'same-node');
      const numbers = spawnSync('stat', ['-c', '%t %T', loop], { encoding: 'utf8' });
      const [major, minor] = numbers.stdout.trim().split(' ').map((hex) => String(parseInt(hex, 16)));
      assert.equal(spawnSync('mknod', [node, 'b', major!, minor!]).status, 0);
      for (const output of [loop, node]) {
        const run = await runDmio(['read', loop, '--sector', '0', '--length', '1M',
          '--output', output]);
        assert.equal(run.status, 2, `${output}: ${run.stderr}`);
        assert.match(run.stderr, /is the same block device as/);
      }
    });
    assert.equal(fileHash(backing), before, 'the loop device is unchanged');
  });
});

describe('dmio write: the input is bounded, streamed and reported per device', () => {
  it('--input /dev/zero onto an existing image stops at its end at once: exit 2, untouched',
    async (t) => {
      const dir = await tempDir(t);
      const image = join(dir, 'e.img');
      writeFileSync(image, Buffer.alloc(4 * MIB, 0x5c));
      const created = join(dir, 'new.img');
      const run = await runShell('node "$DMIO" write "$@" --sector 8 --input /dev/zero',
        [image, created]);
      assert.equal(run.status, 2, run.stderr);
      assert.match(run.stderr, /runs past the end of .*e\.img .*nothing was written/);
      assert.ok(run.seconds < 30, `${run.seconds} s`);
      assert.ok(readFileSync(image).equals(Buffer.alloc(4 * MIB, 0x5c)), 'untouched');
      assert.equal(existsSync(created), false, 'nothing created');
    });

  it('`yes |` onto an existing image likewise', async (t) => {
    const dir = await tempDir(t);
    const image = join(dir, 'e.img');
    writeFileSync(image, Buffer.alloc(2 * MIB, 0x5c));
    const run = await runShell('yes | node "$DMIO" write "$@" --sector 0', [image]);
    assert.equal(run.status, 2, run.stderr);
    assert.match(run.stderr, /the input \(stdin\) runs past the end of .*nothing was written/);
    assert.ok(run.seconds < 30, `${run.seconds} s`);
    assert.ok(readFileSync(image).equals(Buffer.alloc(2 * MIB, 0x5c)), 'untouched');
  });

  it('/dev/zero and `yes |` onto new images stop at the 1 GiB cap: exit 2, nothing created',
    async (t) => {
      const dir = await tempDir(t);
      const created = join(dir, 'new.img');
      for (const script of ['node "$DMIO" write "$@" --sector 0 --input /dev/zero',
        'yes | node "$DMIO" write "$@" --sector 0']) {
        const run = await runShell(script, [created]);
        assert.equal(run.status, 2, run.stderr);
        assert.match(run.stderr, /is over 1 GiB, the most write takes; nothing was written/);
        assert.ok(run.seconds < 120, `${script}: ${run.seconds} s`);
        assert.equal(existsSync(created), false, 'nothing created');
      }
    });

  it('a regular input over 1 MiB arrives byte-exact on several devices, in bounded memory',
    async (t) => {
      const dir = await tempDir(t);
      const input = join(dir, 'in.bin');
      const sizeBytes = 5 * MIB + 512;
      assert.equal((await runDmio(['copy', 'random:6M,seed=12', input, '--length',
        String(sizeBytes)])).status, 0);
      const existing = join(dir, 'existing.img');
      writeFileSync(existing, Buffer.alloc(8 * MIB, 0xa5));
      const images = [join(dir, 'a.img'), existing, join(dir, 'b.img')];
      const run = await runDmio(['write', ...images, '--sector', '16', '--input', input,
        '--json']);
      assert.equal(run.status, 0, run.stderr);
      const outcome = jsonOf(run);
      assert.equal(outcome.bytes, sizeBytes);
      assert.deepEqual(outcome.destinations, images.map((device) =>
        ({ device, ok: true, bytesWritten: sizeBytes, error: null })));
      for (const image of images) {
        assert.equal(fileHash(image, 8192, sizeBytes), fileHash(input), image);
      }
      const bytes = readFileSync(existing);
      assert.equal(bytes.length, 8 * MIB);
      assert.ok(bytes.subarray(0, 8192).every((b) => b === 0xa5), 'before the region kept');
      assert.ok(bytes.subarray(8192 + sizeBytes).every((b) => b === 0xa5), 'after it kept');

      // 512 MiB of input (a sparse file) to null:: the memory it takes is a chunk, not the input.
      const sparse = join(dir, 'sparse.bin');
      writeFileSync(sparse, '');
      truncateSync(sparse, 512 * MIB);
      const measured = spawnSync('/usr/bin/time', ['-f', '%M', process.execPath, DMIO_BIN,
        'write', 'null:1G', '--sector', '0', '--input', sparse],
      { encoding: 'utf8' });
      if (measured.error !== undefined) {
        t.diagnostic('/usr/bin/time is missing: memory not measured');
        return;
      }
      assert.equal(measured.status, 0, measured.stderr);
      const maxRssKiB = Number(measured.stderr.trim().split('\n').at(-1));
      assert.ok(maxRssKiB < 300 * 1024, `max RSS ${maxRssKiB} KiB for 512 MiB of input`);
    });

  it('a device failing midway is dropped: the others complete, bytesWritten says what it got',
    async (t) => {
      const dir = await tempDir(t);
      const input = join(dir, 'in.bin');
      assert.equal((await runDmio(['copy', 'random:4M,seed=13', input])).status, 0);
      const images = [join(dir, 'a.img'), join(dir, 'b.img'), join(dir, 'c.img')];
      // b fails in the third 1 MiB chunk.
      const faults = { [images[1]!]: { ranges: [{ sector: 2048 * 2 + 100, countSectors: 8,
        ops: ['write' as const] }] } };
      const run = await runDmio(['write', ...images, '--sector', '0', '--input', input,
        '--json'], { faults: faults });
      assert.equal(run.status, 1, run.stderr);
      const outcome = jsonOf(run);
      assert.equal(outcome.writeErrorBits, '0x2');
      const destinations = outcome.destinations as Array<{ ok: boolean; bytesWritten: number }>;
      assert.deepEqual(destinations.map((d) => [d.ok, d.bytesWritten]),
        [[true, 4 * MIB], [false, 2 * MIB], [true, 4 * MIB]]);
      assert.equal(fileHash(images[0]!), fileHash(input));
      assert.equal(fileHash(images[2]!), fileHash(input));
      assert.equal(fileHash(images[1]!, 0, 2 * MIB), fileHash(input, 0, 2 * MIB));
    });

  it('an input that cannot be read (/proc/self/mem: EIO) is exit 1 naming it, nothing created',
    async (t) => {
      const created = join(await tempDir(t), 'new.img');
      const run = await runDmio(['write', created, '--sector', '0', '--input', '/proc/self/mem']);
      assert.equal(run.status, 1, run.stderr);
      assert.match(run.stderr, /^dmio: reading \/proc\/self\/mem failed: EIO.*nothing was written\n$/);
      assert.equal(existsSync(created), false);
    });

  it('a too-small existing destination refuses before anything is written or created',
    async (t) => {
      const dir = await tempDir(t);
      const input = join(dir, 'in.bin');
      writeFileSync(input, Buffer.alloc(2 * MIB, 0x11));
      const small = join(dir, 'small.img');
      writeFileSync(small, Buffer.alloc(MIB, 0x22));
      const created = join(dir, 'new.img');
      for (const destinations of [[created, small], [created, 'mem:1M']]) {
        const run = await runDmio(['write', ...destinations, '--sector', '0', '--input', input]);
        assert.equal(run.status, 2, run.stderr);
        assert.match(run.stderr, /run past its end/);
        assert.equal(existsSync(created), false, 'nothing created');
        assert.ok(readFileSync(small).equals(Buffer.alloc(MIB, 0x22)), 'small.img untouched');
      }
      const piped = await runShell('head -c 2M /dev/zero | node "$DMIO" write "$@" --sector 0',
        [created, small]);
      assert.equal(piped.status, 2, piped.stderr);
      assert.match(piped.stderr, /runs past the end of .*small\.img/);
      assert.equal(existsSync(created), false, 'nothing created');
      assert.ok(readFileSync(small).equals(Buffer.alloc(MIB, 0x22)), 'small.img untouched');
    });
});
