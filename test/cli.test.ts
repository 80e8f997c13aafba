// The real `dmio` binary on real files in temporary directories: byte-exact copies to several
// new images checked by hash, offsets, one failing destination among three, bad arguments that
// touch no file, the --json shape, --verify catching a corrupted destination, zero, read,
// write, info and --help on every command.

import assert from 'node:assert/strict';
import {
  closeSync, existsSync, openSync, readFileSync, statSync, writeFileSync, writeSync,
} from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { tempDir } from './helpers/tmp.js';
import { fileHash, jsonOf, randomHash, runDmio } from './cli-helpers.js';
import { commandsNeeded } from '../src/cli/main.js';

const MIB = 1024 * 1024;

describe('dmio copy', () => {
  it('copies random: to three new image files byte for byte, with --verify', async (t) => {
    const dir = await tempDir(t);
    const images = ['a.img', 'b.img', 'c.img'].map((name) => join(dir, name));
    const run = await runDmio(['copy', 'random:8M,seed=11', ...images, '--verify', '--json']);
    assert.equal(run.status, 0, run.stderr);
    const expected = randomHash(11, 8 * MIB, 0, 8 * MIB);
    for (const image of images) {
      assert.equal(statSync(image).size, 8 * MIB);
      assert.equal(fileHash(image), expected);
    }
    const outcome = jsonOf(run);
    assert.equal(outcome.readError, false);
    assert.equal(outcome.writeErrorBits, '0x0');
    assert.equal(outcome.bytes, 8 * MIB);
    const human = await runDmio(['copy', 'random:8M,seed=11', ...images, '--verify']);
    assert.equal(human.status, 0, human.stderr);
    assert.match(human.stdout, /to 3 of 3 destination\(s\) .*; 3 verified by reading back\n$/);
    const unverified = await runDmio(['copy', 'random:8M,seed=11', images[0]!]);
    assert.doesNotMatch(unverified.stdout, /verified/, 'no claim without --verify');
  });

  it('honours --source-sector, --dest-sector and --length on existing files', async (t) => {
    const dir = await tempDir(t);
    const source = join(dir, 'src.img');
    const dest = join(dir, 'dst.img');
    assert.equal((await runDmio(['copy', 'random:4M,seed=3', source])).status, 0);
    writeFileSync(dest, Buffer.alloc(2 * MIB, 0x5a));
    const run = await runDmio(['copy', source, dest, '--source-sector', '100',
      '--dest-sector', '8', '--length', '1M', '--sub-job-size', '64K', '--no-progress']);
    assert.equal(run.status, 0, run.stderr);
    assert.match(run.stdout, /^copied 1MB \(1048576 bytes\) to 1 of 1 destination/);
    const bytes = readFileSync(dest);
    assert.ok(bytes.subarray(0, 8 * 512).every((b) => b === 0x5a), 'before the region untouched');
    assert.equal(fileHash(dest, 8 * 512, MIB), fileHash(source, 100 * 512, MIB));
    assert.ok(bytes.subarray(8 * 512 + MIB).every((b) => b === 0x5a), 'after the region untouched');
  });

  it('one failing destination among three: exit 1, the other two exact, JSON names it', async (t) => {
    const dir = await tempDir(t);
    const images = ['a.img', 'b.img', 'c.img'].map((name) => join(dir, name));
    const faults = { [images[1]!]: { ranges: [{ sector: 2048, countSectors: 8, ops: ['write' as const] }] } };
    const run = await runDmio(['copy', 'random:4M,seed=5', ...images, '--json'], {
      faults: faults,
    });
    assert.equal(run.status, 1);
    const outcome = jsonOf(run);
    assert.equal(outcome.writeErrorBits, '0x2');
    const destinations = outcome.destinations as Array<{ device: string; ok: boolean; error: string | null }>;
    assert.deepEqual(destinations.map((d) => d.ok), [true, false, true]);
    assert.equal(destinations[1]!.device, images[1]);
    assert.match(destinations[1]!.error ?? '', /EIO/);
    assert.match(run.stderr, /b\.img FAILED/);
    const expected = randomHash(5, 4 * MIB, 0, 4 * MIB);
    assert.equal(fileHash(images[0]!), expected);
    assert.equal(fileHash(images[2]!), expected);
    assert.notEqual(fileHash(images[1]!), expected);
  });

  it('a failing source read: exit 1, readError true, nothing written for that chunk', async (t) => {
    const dir = await tempDir(t);
    const dest = join(dir, 'd.img');
    const run = await runDmio(['copy', 'random:1M', dest, '--json', '--sub-job-size', '64K'], {
      faults: { 'random:1M': { ranges: [{ sector: 0, countSectors: 1 }] } },
    });
    assert.equal(run.status, 1);
    assert.equal(jsonOf(run).readError, true);
    assert.match(run.stderr, /reading random:1M failed/);
    assert.ok(readFileSync(dest).subarray(0, 65536).every((b) => b === 0));
  });

  it('copies file to files with copy_file_range by default; --no-offload and --verify do not', async (t) => {
    const dir = await tempDir(t);
    const source = join(dir, 'src.img');
    assert.equal((await runDmio(['copy', 'random:6M,seed=5', source])).status, 0);
    const dests = [join(dir, 'a.img'), join(dir, 'b.img')];
    const cases: Array<[string[], (calls: number) => boolean]> = [
      // 6 MiB in 4 MiB chunks (the default when offloading) to 2 files: at least 4 calls.
      [[], (calls) => calls >= 4],
      [['--no-offload'], (calls) => calls === 0],
      [['--verify'], (calls) => calls === 0],
    ];
    for (const [flags, expected] of cases) {
      for (const dest of dests) writeFileSync(dest, Buffer.alloc(0));
      const run = await runDmio(['copy', source, ...dests, '--json', ...flags]);
      assert.equal(run.status, 0, run.stderr);
      const outcome = jsonOf(run);
      assert.ok(expected(outcome.offloadCalls as number), `${flags.join(' ')}: ${run.stdout}`);
      for (const dest of dests) assert.equal(fileHash(dest), fileHash(source), flags.join(' '));
    }
  });

  it('prints exactly the documented JSON shape', async (t) => {
    const dir = await tempDir(t);
    const run = await runDmio(['copy', 'random:1M', join(dir, 'x.img'), 'mem:1M', '--json']);
    assert.equal(run.status, 0, run.stderr);
    const outcome = jsonOf(run);
    assert.deepEqual(Object.keys(outcome).sort(),
      ['bytes', 'destinations', 'flushed', 'offloadCalls', 'readError', 'seconds',
        'writeErrorBits']);
    assert.equal(outcome.flushed, true, 'durable by default');
    assert.equal(outcome.offloadCalls, 0, 'random: to a file is copied through memory');
    assert.equal(typeof outcome.readError, 'boolean');
    assert.match(outcome.writeErrorBits as string, /^0x[0-9a-f]+$/);
    assert.equal(typeof outcome.seconds, 'number');
    assert.equal(outcome.bytes, MIB);
    for (const destination of outcome.destinations as Array<Record<string, unknown>>) {
      assert.deepEqual(Object.keys(destination).sort(), ['bytesWritten', 'device', 'error', 'ok']);
      assert.equal(destination['bytesWritten'], MIB);
    }
  });

  it('--verify catches a destination corrupted between the copy and the read-back', async (t) => {
    const dir = await tempDir(t);
    const images = ['a.img', 'b.img', 'c.img'].map((name) => join(dir, name));
    const run = await runDmio(['copy', 'random:2M,seed=9', ...images, '--verify', '--json',
      '--sub-job-size', '512K'], {
      beforeVerify: () => {
        const fd = openSync(images[2]!, 'r+');
        writeSync(fd, Buffer.from('corrupt'), 0, 7, 1536 * 1024 + 10);
        closeSync(fd);
        return Promise.resolve();
      },
    });
    assert.equal(run.status, 1, run.stderr);
    const destinations = jsonOf(run).destinations as Array<{ ok: boolean; error: string | null }>;
    assert.deepEqual(destinations.map((d) => d.ok), [true, true, false]);
    assert.match(destinations[2]!.error ?? '', /verify: content differs .* bytes 1572864-2097151/);
  });

  it('--verify without corruption passes (the gate alone changes nothing)', async (t) => {
    const dir = await tempDir(t);
    const image = join(dir, 'a.img');
    let gated = 0;
    const run = await runDmio(['copy', 'random:1M', image, '--verify', '--json'], {
      beforeVerify: () => {
        gated += 1;
        return Promise.resolve();
      },
    });
    assert.equal(run.status, 0, run.stderr);
    assert.equal(gated, 1, 'the read-back waited for the gate once');
  });
});

describe('dmio: bad usage exits 2 and touches no file', () => {
  const cases: Array<[string, (dir: string) => string[]]> = [
    ['nine destinations', (dir) => ['copy', 'random:1M', ...Array.from({ length: 9 }, (_, i) => join(dir, `n${i}.img`))]],
    ['--count with --length', (dir) => ['copy', 'random:1M', join(dir, 'n.img'), '--count', '8', '--length', '4K']],
    ['a throttle over 100', (dir) => ['copy', 'random:1M', join(dir, 'n.img'), '--throttle', '150']],
    ['a sub-job size that is not whole pages', (dir) => ['copy', 'random:1M', join(dir, 'n.img'), '--sub-job-size', '1000']],
    ['a source that does not exist', (dir) => ['copy', join(dir, 'missing.img'), join(dir, 'n.img')]],
    ['a source range past the end', (dir) => ['copy', 'random:1M', join(dir, 'n.img'), '--source-sector', '2000', '--count', '100']],
    ['a destination in a missing directory', (dir) => ['copy', 'random:1M', join(dir, 'n.img'), join(dir, 'no', 'x.img')]],
    ['a malformed device spec', (dir) => ['copy', 'mem:12Q', join(dir, 'n.img')]],
    ['an unknown option', (dir) => ['copy', 'random:1M', join(dir, 'n.img'), '--frobnicate']],
    ['a read-only destination', (dir) => ['copy', 'random:1M', join(dir, 'n.img'), 'zero:1M']],
    ['a destination too small for the copy', (dir) => ['copy', 'random:1M', join(dir, 'n.img'), 'mem:512K']],
    ['write input that is not whole sectors', (dir) => ['write', join(dir, 'n.img'), '--sector', '0']],
    ['read without a length', () => ['read', 'random:1M', '--sector', '0']],
  ];
  for (const [name, argsOf] of cases) {
    it(name, async (t) => {
      const dir = await tempDir(t);
      const existing = join(dir, 'existing.img');
      writeFileSync(existing, Buffer.alloc(4096, 7));
      const before = statSync(existing).mtimeMs;
      const run = await runDmio(argsOf(dir), { input: 'abc' });
      assert.equal(run.status, 2, `stderr: ${run.stderr}`);
      assert.match(run.stderr, /\S/, 'a message names the problem');
      assert.equal(run.stdout.includes('copied'), false);
      const { readdirSync } = await import('node:fs');
      assert.deepEqual(readdirSync(dir), ['existing.img'], 'no file created');
      assert.equal(statSync(existing).mtimeMs, before);
    });
  }

  it('an existing destination is not touched when a later argument is bad', async (t) => {
    const dir = await tempDir(t);
    const existing = join(dir, 'keep.img');
    writeFileSync(existing, Buffer.alloc(MIB, 3));
    const run = await runDmio(['copy', 'random:1M', existing, 'mem:4K']);
    assert.equal(run.status, 2);
    assert.ok(readFileSync(existing).every((b) => b === 3));
  });
});

describe('dmio zero, read, write, info, --help', () => {
  it('zero clears exactly the region on every destination', async (t) => {
    const dir = await tempDir(t);
    const images = ['a.img', 'b.img'].map((name) => join(dir, name));
    for (const image of images) writeFileSync(image, Buffer.alloc(MIB, 0xee));
    const run = await runDmio(['zero', ...images, '--sector', '16', '--length', '64K', '--json']);
    assert.equal(run.status, 0, run.stderr);
    for (const image of images) {
      const bytes = readFileSync(image);
      assert.ok(bytes.subarray(0, 8192).every((b) => b === 0xee));
      assert.ok(bytes.subarray(8192, 8192 + 65536).every((b) => b === 0));
      assert.ok(bytes.subarray(8192 + 65536).every((b) => b === 0xee));
    }
  });

  it('write puts stdin at the sector of every device; read gets it back', async (t) => {
    const dir = await tempDir(t);
    const images = ['a.img', 'b.img'].map((name) => join(dir, name));
    const data = Buffer.alloc(8192);
    for (let i = 0; i < data.length; i += 1) data[i] = (i * 13) % 256;
    const run = await runDmio(['write', ...images, '--sector', '4', '--json'], { input: data });
    assert.equal(run.status, 0, run.stderr);
    assert.deepEqual((jsonOf(run).destinations as Array<{ ok: boolean }>).map((d) => d.ok), [true, true]);
    const output = join(dir, 'out.bin');
    const read = await runDmio(['read', images[1]!, '--sector', '4', '--count', '16', '--output', output]);
    assert.equal(read.status, 0, read.stderr);
    assert.ok(readFileSync(output).equals(data));
    assert.ok(readFileSync(images[0]!).subarray(2048, 2048 + 8192).equals(data));
  });

  it('read writes to stdout by default', async () => {
    const run = await runDmio(['read', 'random:1M,seed=4', '--sector', '8', '--length', '4K']);
    assert.equal(run.status, 0, run.stderr);
    assert.equal(Buffer.from(run.stdout, 'latin1').length > 0, true);
  });

  it('info --json reports size, block sizes, limits and capabilities', async (t) => {
    const dir = await tempDir(t);
    const image = join(dir, 'a.img');
    writeFileSync(image, Buffer.alloc(MIB));
    const run = await runDmio(['info', image, '--json']);
    assert.equal(run.status, 0, run.stderr);
    const info = jsonOf(run);
    assert.equal(info.sizeBytes, MIB);
    assert.equal(info.sizeSectors, 2048);
    assert.equal(typeof info.logicalBlockBytes, 'number');
    assert.deepEqual(Object.keys(info.supports as object).sort(), ['discard', 'flush', 'fua', 'writeZeroes']);
  });

  for (const command of ['copy', 'zero', 'read', 'write', 'info']) {
    it(`${command} --help exits 0 with usage`, async () => {
      const run = await runDmio([command, '--help']);
      assert.equal(run.status, 0);
      assert.match(run.stdout, new RegExp(`Usage: dmio ${command}`));
    });
  }

  it('--version prints the package version and exits 0', async () => {
    const packageJson = JSON.parse(readFileSync(new URL('../package.json', import.meta.url),
      'utf8')) as { version: string };
    for (const flag of ['--version', '-V']) {
      const run = await runDmio([flag]);
      assert.equal(run.status, 0);
      assert.equal(run.stdout, `${packageJson.version}\n`);
    }
  });

  it('no command prints help and exits 2', async () => {
    const run = await runDmio([]);
    assert.equal(run.status, 2);
    assert.equal(existsSync('n.img'), false);
  });

  it('--help and `help` list every command; `help NAME` shows that command', async () => {
    for (const argv of [['--help'], ['help']]) {
      const run = await runDmio(argv);
      assert.equal(run.status, 0, run.stderr);
      for (const name of ['copy', 'zero', 'read', 'write', 'info', 'bench', 'serve']) {
        assert.match(run.stdout, new RegExp(`^  ${name}\\b`, 'm'), `${argv[0]} lists ${name}`);
      }
    }
    const help = await runDmio(['help', 'serve']);
    assert.equal(help.status, 0, help.stderr);
    assert.match(help.stdout, /Usage: dmio serve/);
  });

  it('an unknown command exits 2 and suggests the nearest one', async () => {
    const run = await runDmio(['cpy', 'a', 'b']);
    assert.equal(run.status, 2);
    assert.match(run.stderr, /unknown command 'cpy'/);
    assert.match(run.stderr, /Did you mean copy\?/);
  });

  it('commandsNeeded: the named command, none for --version alone, else all', () => {
    const all = ['copy', 'zero', 'read', 'write', 'info', 'bench', 'serve'];
    assert.deepEqual(commandsNeeded(['copy', 'a', 'b', '--json']), ['copy']);
    assert.deepEqual(commandsNeeded(['--json', 'info', 'x']), ['info']);
    assert.deepEqual(commandsNeeded(['help', 'zero']), ['zero']);
    assert.deepEqual(commandsNeeded(['--version']), []);
    assert.deepEqual(commandsNeeded(['-V']), []);
    assert.deepEqual(commandsNeeded(['-V', '--help']), all);
    assert.deepEqual(commandsNeeded([]), all);
    assert.deepEqual(commandsNeeded(['help']), all);
    assert.deepEqual(commandsNeeded(['cpy']), all);
    assert.deepEqual(commandsNeeded(['help', 'cpy']), all);
  });
});

describe('dmio bench', () => {
  it('measures a device and prints the documented JSON; read-only unless --write', async (t) => {
    const dir = await tempDir(t);
    const image = join(dir, 'bench.img');
    writeFileSync(image, Buffer.alloc(8 * 1024 * 1024, 0x5a));
    const readOnly = await runDmio(['bench', image, '--seconds', '0.1', '--json']);
    assert.equal(readOnly.status, 0, readOnly.stderr);
    const report = jsonOf(readOnly) as { engine: string; results: Record<string, number> };
    assert.deepEqual(Object.keys(report.results),
      ['4k-randread-qd1-iops', '4k-randread-qd32-iops', '1m-seqread-mibps']);
    assert.ok(Object.values(report.results).every((value) => value > 0));
    assert.ok(readFileSync(image).every((byte) => byte === 0x5a), 'reads changed nothing');
    const writing = await runDmio(['bench', image, '--seconds', '0.1', '--write', '--json']);
    assert.equal(writing.status, 0, writing.stderr);
    assert.ok('4k-randwrite-qd32-iops' in (jsonOf(writing).results as object));
  });

  it('bad --seconds exits 2; a failing device exits 1 with its error', async () => {
    const bad = await runDmio(['bench', 'mem:1M', '--seconds', '0']);
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /--seconds/);
    const failing = await runDmio(['bench', 'mem:1M', '--seconds', '0.1'], {
      faults: { 'mem:1M': { failRate: 1, errno: 'EIO' } },
    });
    assert.equal(failing.status, 1, failing.stderr);
    assert.match(failing.stderr, /DMIO_ERR_IO: EIO/);
  });
});
