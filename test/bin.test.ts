// The `dmio` binary as users run it after `npm run build`: package.json's `bin.dmio`, executed
// through its `#!` line and through `node`. It copies byte-exact; it runs the build on disk (a
// rebuilt bundle is what runs: nothing cached from an older build); a closed stdout stays
// closed while a `>/dev/null` one works. Needs the build (`npm test` builds first).

import assert from 'node:assert/strict';
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import {
  cpSync, existsSync, mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { SECTOR_SIZE } from '../src/index.js';
import { fileHash, randomHash } from './cli-helpers.js';
import { tempDir } from './helpers/tmp.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const PACKAGE = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as {
  version: string;
  bin: { dmio: string };
};
const BIN = join(ROOT, PACKAGE.bin.dmio);
/** 3 MiB, in sectors' bytes. */
const COPY_BYTES = 6144 * SECTOR_SIZE;

/** Fails (never skips) when the build is missing: what this file tests is the build. */
function requireBuild(): void {
  assert.ok(existsSync(BIN), `${PACKAGE.bin.dmio} is missing`);
  assert.ok(existsSync(join(ROOT, 'dist', 'bundle', 'dmio.js')),
    'dist/bundle/dmio.js is missing: run `npm run build` before this test');
}

/** Runs `program args` with a clean environment and utf8 output. */
function run(program: string, args: readonly string[]): SpawnSyncReturns<string> {
  return spawnSync(program, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

describe('the dmio bin', () => {
  it('is an ES module of a few lines that runs the build', () => {
    requireBuild();
    const text = readFileSync(BIN, 'utf8');
    assert.match(text, /^#!\/usr\/bin\/env node\n/);
    assert.match(text, /^import \{ runCli \} from '\.\.\/dist\/bundle\/dmio\.js';$/m);
    assert.ok(text.split('\n').length <= 10, 'the bin stays a few lines');
    assert.doesNotMatch(text, /process\.env/, 'the bin reads no environment variable');
  });

  it('its bundle is ASCII: Node reads each module as a one-byte string, faster to decode', () => {
    requireBuild();
    const dir = join(ROOT, 'dist', 'bundle');
    for (const name of readdirSync(dir)) {
      const text = readFileSync(join(dir, name), 'utf8');
      const at = text.search(/[^\x00-\x7f]/);
      assert.equal(at, -1, `${name}: non-ASCII at ${at} (esbuild kept a comment holding it)`);
    }
  });

  it('copy loads neither the NBD server nor TLS nor crypto (they have chunks of their own)', () => {
    requireBuild();
    const dir = join(ROOT, 'dist', 'bundle');
    const copyModule = readdirSync(dir).find((name) => name.startsWith('copy-'));
    assert.ok(copyModule !== undefined, 'the copy command has its own module');
    const seen = new Set<string>();
    const pending = [copyModule];
    for (let name = pending.pop(); name !== undefined; name = pending.pop()) {
      if (seen.has(name)) continue;
      seen.add(name);
      const text = readFileSync(join(dir, name), 'utf8');
      assert.doesNotMatch(text, /from "node:(tls|crypto)"/, `${name} imports TLS or crypto`);
      assert.doesNotMatch(text, /\bNbdServer = class\b/, `${name} holds the NBD server`);
      // Static imports only: dynamic import() (TLS at STARTTLS, --verify) load on use.
      const imports = /^import (?:[^;]*? from )?"\.\/([^"]+)";$/gm;
      for (const match of text.matchAll(imports)) pending.push(match[1]!);
    }
    assert.ok(seen.size > 1, 'the copy module imports the library chunk');
  });

  it('executed through its #! line, copies byte-exact to two images and verifies', async (t) => {
    requireBuild();
    const dir = await tempDir(t);
    const images = ['a.img', 'b.img'].map((name) => join(dir, name));
    const copy = run(BIN, ['copy', 'random:3M,seed=4', ...images, '--verify', '--json']);
    assert.equal(copy.status, 0, copy.stderr);
    assert.equal((JSON.parse(copy.stdout) as { writeErrorBits: string }).writeErrorBits, '0x0');
    const expected = randomHash(4, COPY_BYTES, 0, COPY_BYTES);
    for (const image of images) assert.equal(fileHash(image), expected, image);
  });

  it('through node, --version prints package.json version', () => {
    requireBuild();
    const version = run(process.execPath, [BIN, '--version']);
    assert.equal(version.status, 0, version.stderr);
    assert.equal(version.stdout, `${PACKAGE.version}\n`);
  });

  it('runs the bundle on disk: one rebuilt with a changed word prints that word', async (t) => {
    requireBuild();
    // A copy of the package whose bundle differs in one word of the help text. Any cache of
    // compiled code keyed on the old build would print the old word.
    const dir = await tempDir(t);
    mkdirSync(join(dir, 'bin'));
    cpSync(BIN, join(dir, PACKAGE.bin.dmio));
    cpSync(join(ROOT, 'package.json'), join(dir, 'package.json'));
    cpSync(join(ROOT, 'dist'), join(dir, 'dist'), { recursive: true });
    symlinkSync(join(ROOT, 'node_modules'), join(dir, 'node_modules'));
    const bundle = join(dir, 'dist', 'bundle', 'dmio.js');
    const original = readFileSync(bundle, 'utf8');
    assert.ok(original.includes('kcopyd for files'), 'the help text this test changes');
    const help = () => run(process.execPath, [join(dir, PACKAGE.bin.dmio), '--help']);
    const before = help();
    assert.equal(before.status, 0, before.stderr);
    assert.match(before.stdout, /kcopyd for files/);
    writeFileSync(bundle, original.replace('kcopyd for files', 'kcopyd for FILES'));
    const after = help();
    assert.equal(after.status, 0, after.stderr);
    assert.match(after.stdout, /kcopyd for FILES/, 'the bundle on disk ran');
  });

  it('with stdout closed (>&-) fails with EBADF (exit 1); with >/dev/null succeeds', () => {
    requireBuild();
    const read = `"${BIN}" read random:1M --sector 0 --length 64K`;
    const closed = spawnSync('sh', ['-c', `${read} >&-`], { encoding: 'utf8' });
    assert.equal(closed.status, 1, closed.stderr);
    assert.match(closed.stderr, /^dmio: writing stdout failed: EBADF/);
    const devNull = spawnSync('sh', ['-c', `${read} >/dev/null`], { encoding: 'utf8' });
    assert.equal(devNull.status, 0, devNull.stderr);
    assert.equal(devNull.stderr, '');
  });
});
