// The dmio command on NBD exports served by a real nbdkit on a Unix socket: `info` reports
// what the server negotiated, and `copy` moves data between a local image file and an export
// in both directions, checked byte-exact with the real `nbdcopy` client; a file source copied
// to an export is read on the threadpool, every read, and one copied to a file is not.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { FileDevice, type BlockDevice } from '../src/index.js';
import { fileHash, jsonOf, runDmio } from './cli-helpers.js';
import { pattern } from './helpers/device-io.js';
import { requireTools, startNbdkit } from './helpers/nbdkit.js';
import { tempDir } from './helpers/tmp.js';

const MiB = 1024 * 1024;

test('dmio info nbd+unix:// reports the export as nbdkit serves it', async (t) => {
  if (!requireTools(t, 'nbdkit')) return;
  const server = await startNbdkit(['--filter=blocksize-policy', 'memory', '8M',
    'blocksize-minimum=4096', 'blocksize-preferred=65536', 'blocksize-maximum=65536']);
  t.after(() => server.stop());
  const run = await runDmio(['info', server.uri, '--json']);
  assert.equal(run.status, 0, run.stderr);
  const info = jsonOf(run) as {
    kind: string; sizeBytes: number; supports: Record<string, boolean>;
    limits: { maxSectorsPerRequest: number };
  };
  assert.equal(info.kind, 'nbd');
  assert.equal(info.sizeBytes, 8 * MiB);
  assert.equal(info.limits.maxSectorsPerRequest, 65536 / 512, 'the advertised maximum');
  assert.equal((info as unknown as { logicalBlockBytes: number }).logicalBlockBytes, 4096,
    'the advertised minimum');
  assert.equal(info.supports['flush'], true);
  const text = await runDmio(['info', server.uri]);
  assert.equal(text.status, 0, text.stderr);
  assert.match(text.stdout, /size: +8388608 bytes/);
});

test('dmio copy: image file → NBD export → image file, byte-exact by nbdcopy', async (t) => {
  if (!requireTools(t, 'nbdkit', 'nbdcopy')) return;
  const directory = await tempDir(t);
  const server = await startNbdkit(['memory', '16M']);
  t.after(() => server.stop());
  const source = join(directory, 'source.img');
  writeFileSync(source, pattern(0, 16 * MiB, 3));

  const up = await runDmio(['copy', source, server.uri, '--json', '--verify']);
  assert.equal(up.status, 0, up.stderr);
  assert.equal((jsonOf(up) as { writeErrorBits: string }).writeErrorBits, '0x0');
  const viaNbdcopy = join(directory, 'nbdcopy.img');
  const nbdcopy = spawnSync('nbdcopy', [server.uri, viaNbdcopy], { encoding: 'utf8' });
  assert.equal(nbdcopy.status, 0, nbdcopy.stderr);
  assert.equal(fileHash(viaNbdcopy), fileHash(source), 'the export holds the image');

  // Back down, from 1 MiB into the export, to a new image that dmio creates.
  const back = join(directory, 'back.img');
  const down = await runDmio(['copy', server.uri, back, '--source-sector', '2048',
    '--length', '4M', '--json']);
  assert.equal(down.status, 0, down.stderr);
  assert.equal(fileHash(back), fileHash(source, MiB, 4 * MiB));
});

test('dmio copy to a failing export and a good image: exit 1, the image still exact', async (t) => {
  if (!requireTools(t, 'nbdkit')) return;
  const directory = await tempDir(t);
  const server = await startNbdkit(['--filter=error', 'memory', '8M', 'error=EIO',
    'error-pwrite-rate=100%']);
  t.after(() => server.stop());
  const good = join(directory, 'good.img');
  const run = await runDmio(['copy', 'random:4M,seed=9', good, server.uri, '--json']);
  assert.equal(run.status, 1, run.stderr);
  const report = jsonOf(run) as {
    writeErrorBits: string; destinations: Array<{ ok: boolean; error: string | null }>;
  };
  assert.equal(report.writeErrorBits, '0x2');
  assert.equal(report.destinations[0]?.ok, true);
  assert.equal(report.destinations[1]?.ok, false);
  assert.match(report.destinations[1]?.error ?? '', /EIO/);
  const expected = await runDmio(['copy', 'random:4M,seed=9', join(directory, 'again.img')]);
  assert.equal(expected.status, 0, expected.stderr);
  assert.equal(fileHash(good), fileHash(join(directory, 'again.img')));
});

test('dmio copy reads a file source on the threadpool when a destination is NBD', async (t) => {
  if (!requireTools(t, 'nbdkit')) return;
  const directory = await tempDir(t);
  const server = await startNbdkit(['memory', '8M']);
  t.after(() => server.stop());
  const source = join(directory, 'source.img');
  writeFileSync(source, pattern(0, 8 * MiB, 11));
  const opened = new Map<string, BlockDevice>();
  const wrapDevice = (device: BlockDevice, spec: string): BlockDevice => {
    opened.set(spec, device);
    return device;
  };

  const up = await runDmio(['copy', source, server.uri, '--verify'], { wrapDevice });
  assert.equal(up.status, 0, up.stderr);
  const toNbd = opened.get(source);
  assert.ok(toNbd instanceof FileDevice);
  assert.equal(toNbd.engine.kind, 'threadpool', 'no polling ring beside the NBD client');
  assert.equal(toNbd.inlineCachedReads, false, 'page-cache copies off the event loop');

  opened.clear();
  const copy = join(directory, 'copy.img');
  const local = await runDmio(['copy', source, copy], { wrapDevice });
  assert.equal(local.status, 0, local.stderr);
  const toFile = opened.get(source);
  assert.ok(toFile instanceof FileDevice);
  assert.equal(toFile.engine, (opened.get(copy) as FileDevice).engine,
    'file to file: both on the default engine');
  assert.equal(fileHash(copy), fileHash(source));
});

test('dmio copy opens one connection to an NBD source and four to an NBD destination', async (t) => {
  if (!requireTools(t, 'nbdkit')) return;
  const directory = await tempDir(t);
  const logPath = join(directory, 'nbdkit.log');
  // nbdkit memory allows multi-conn, so the count is the CLI's own choice.
  const server = await startNbdkit(['--filter=log', 'memory', '8M', `logfile=${logPath}`]);
  t.after(() => server.stop());
  const connects = (): number => (readFileSync(logPath, 'utf8').match(/ Connect export=/g) ?? []).length;

  const up = await runDmio(['copy', 'random:8M,seed=5', server.uri, '--json']);
  assert.equal(up.status, 0, up.stderr);
  assert.equal(connects(), 4, 'a destination export gets four connections');
  const down = await runDmio(['copy', server.uri, join(directory, 'back.img'), '--json']);
  assert.equal(down.status, 0, down.stderr);
  assert.equal(connects(), 5, 'a source export gets one connection');
  const expected = join(directory, 'expected.img');
  assert.equal((await runDmio(['copy', 'random:8M,seed=5', expected])).status, 0);
  assert.equal(fileHash(join(directory, 'back.img')), fileHash(expected));
});
