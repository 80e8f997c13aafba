// Mirror through the real `dmio serve`, on image files with a disk log:
// - a leg (a flakey sub-table) that starts failing writes while fio writes: fio's crc32c verify
//   still passes; `dmio serve` reports the leg failed on stderr (on change and on SIGUSR1); the
//   regions written after the failure stay out of sync in the disk log; when
//   the leg returns (its sub-table becomes linear) only those regions are resynced and the legs
//   are identical (`qemu-img compare`);
// - a leg that is an nbdkit export behind --filter=error, failing its writes once a trigger
//   file appears: fio verify passes and the leg is reported D;
// - kill -9 of the server during writes: the disk log names only the regions that were dirty,
//   reopening resyncs exactly those, and the legs end identical.

import assert from 'node:assert/strict';
import { readFile, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { openDevice, type TableDevice } from '../src/index.js';
import type { MirrorTarget } from '../src/stacks/mirror-target.js';
import { DMIO_BIN } from './cli-helpers.js';
import { runTool, runToolOk, startDmioServe } from './helpers/dmio-serve.js';
import { makeTempDir, requireTools, startNbdkit } from './helpers/nbdkit.js';
import { tempDir } from './helpers/tmp.js';

const MiB = 1024 * 1024;

async function images(t: TestContext, sizes: Record<string, number>): Promise<Record<string, string>> {
  const dir = await tempDir(t);
  const paths: Record<string, string> = { dir };
  for (const [name, sizeBytes] of Object.entries(sizes)) {
    paths[name] = join(dir, name);
    await writeFile(paths[name] as string, '');
    await truncate(paths[name] as string, sizeBytes);
  }
  return paths;
}

/** The mirror segment's `k/N` from `dmio info --json` (the table opened read-only). */
async function syncCounts(tablePath: string): Promise<{ inSync: number; regions: number; status: string }> {
  const { stdout } = await runToolOk(process.execPath, [DMIO_BIN, 'info', `table:${tablePath}`, '--json'],
    30_000);
  const status = (JSON.parse(stdout) as { table: { status: string[] } }).table.status[0] as string;
  const match = / (\d+)\/(\d+) 1 /.exec(status);
  assert.ok(match !== null, status);
  return { inSync: Number(match[1]), regions: Number(match[2]), status };
}

/** Opens the table in this process, waits for resync, closes; returns the regions copied. */
async function resyncInProcess(tablePath: string): Promise<number> {
  const device = await openDevice(`table:${tablePath}`) as TableDevice;
  try {
    const mirror = device.targets[0] as MirrorTarget;
    await mirror.resyncIdle();
    return mirror.resyncedRegions;
  } finally {
    await device.close();
  }
}

async function waitFor(condition: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!condition()) {
    assert.ok(performance.now() < deadline, 'timed out waiting');
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** Runs fio in `dir` (its working directory) and returns its exit status. */
async function fio(dir: string, args: readonly string[], timeoutMs: number): Promise<{ status: number | null; stdout: string; stderr: string }> {
  const previous = process.cwd();
  process.chdir(dir);
  try {
    return await runTool('fio', ['--name=w', '--ioengine=nbd', '--bs=4k', '--iodepth=8',
      '--verify_state_save=0', ...args], timeoutMs);
  } finally {
    process.chdir(previous);
  }
}

test('a leg failing mid-run: fio verify passes, its regions resync when it returns', async (t) => {
  if (!requireTools(t, 'fio', 'qemu-img')) return;
  const paths = await images(t, { 'a.img': 8 * MiB, 'b.img': 8 * MiB, 'log.img': 64 * 1024 });
  const dir = paths.dir as string;
  const legB = join(dir, 'b.table');
  const mirror = join(dir, 'mirror.table');
  await writeFile(mirror, `0 16384 mirror disk 2 ${paths['log.img']} 256 2 ${paths['a.img']} 0 ` +
    `table:${legB} 0 1 handle_errors\n`);
  // Leg b takes writes for its first second, then refuses them for an hour.
  await writeFile(legB, `0 16384 flakey ${paths['b.img']} 0 1 3600 1 error_writes\n`);
  const served = await startDmioServe([`table:${mirror}`, '--socket', join(dir, 's.sock')]);
  let result;
  try {
    result = await fio(dir, [`--uri=${served.uri}`, '--rw=randwrite', '--size=4M', '--rate=2m',
      '--verify=crc32c', '--do_verify=1', '--output-format=json'], 60_000);
    // The operator sees the leg fail on stderr: at the start all A, then b's writes failing.
    const before = served.stderr().length;
    served.child.kill('SIGUSR1');
    await waitFor(() => served.stderr().length > before, 5000);
    const lines = served.stderr().split('\n').filter((line) => line.startsWith('dmio serve: status'));
    assert.match(lines[0] ?? '', /^dmio serve: status export '': 0 16384 mirror 2 \S+ table:\S+ \d+\/64 1 AA 3 disk \S+ A$/);
    assert.match(lines[lines.length - 1] ?? '', / 1 A[DF] 3 disk /, served.stderr());
  } finally {
    assert.equal(await served.stop(), 0);
  }
  assert.equal(result.status, 0, result.stderr);
  const job = (JSON.parse(result.stdout.slice(result.stdout.indexOf('{'))) as { jobs: Array<{ error: number }> }).jobs[0];
  assert.equal(job?.error, 0);
  const after = await syncCounts(mirror);
  assert.equal(after.regions, 64);
  assert.ok(after.inSync < after.regions, `regions written after the failure are out of sync: ${after.status}`);
  assert.ok(after.inSync > 0, `only regions of the fio job are out of sync: ${after.status}`);
  // The leg returns: only the out-of-sync regions are copied, and the legs end identical.
  await writeFile(legB, `0 16384 linear ${paths['b.img']} 0\n`);
  assert.equal(await resyncInProcess(mirror), after.regions - after.inSync);
  assert.equal((await syncCounts(mirror)).inSync, 64);
  await runToolOk('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', paths['a.img'] as string,
    paths['b.img'] as string]);
});

test('kill -9 during writes: the disk log resyncs only the dirty regions', async (t) => {
  if (!requireTools(t, 'fio', 'qemu-img')) return;
  const paths = await images(t, { 'a.img': 32 * MiB, 'b.img': 32 * MiB, 'log.img': 64 * 1024 });
  const dir = paths.dir as string;
  const mirror = join(dir, 'mirror.table');
  await writeFile(mirror, `0 65536 mirror disk 2 ${paths['log.img']} 1024 2 ${paths['a.img']} 0 ` +
    `${paths['b.img']} 0\n`);
  assert.equal(await resyncInProcess(mirror), 64, 'a zeroed log resyncs everything once');
  assert.equal((await syncCounts(mirror)).inSync, 64, 'a clean close leaves every region clean');
  const served = await startDmioServe([`table:${mirror}`, '--socket', join(dir, 's.sock')]);
  const writer = fio(dir, [`--uri=${served.uri}`, '--rw=randwrite', '--size=4M', '--time_based',
    '--runtime=20'], 30_000);
  await new Promise((resolve) => setTimeout(resolve, 1500));
  assert.equal(await served.stop('SIGKILL'), null);
  await writer;
  const after = await syncCounts(mirror);
  const dirty = after.regions - after.inSync;
  assert.ok(dirty > 0 && dirty <= 8, `only the regions fio was writing are dirty: ${after.status}`);
  assert.equal(await resyncInProcess(mirror), dirty);
  assert.equal((await syncCounts(mirror)).inSync, 64);
  await runToolOk('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', paths['a.img'] as string,
    paths['b.img'] as string]);
});

test('an NBD leg (nbdkit --filter=error) failing mid-run: fio verify passes, the leg is D', async (t) => {
  if (!requireTools(t, 'fio', 'nbdkit')) return;
  const paths = await images(t, { 'a.img': 8 * MiB });
  const dir = paths.dir as string;
  const trigger = join(dir, 'fail-writes');
  const nbdkit = await startNbdkit(['--filter=error', 'memory', '8M', 'error-pwrite-rate=100%',
    `error-pwrite-file=${trigger}`], { dir: makeTempDir() });
  try {
    const mirror = join(dir, 'mirror.table');
    await writeFile(mirror, `0 16384 mirror core 2 256 nosync 2 ${paths['a.img']} 0 ${nbdkit.uri} 0 ` +
      '1 handle_errors\n');
    const served = await startDmioServe([`table:${mirror}`, '--socket', join(dir, 's.sock')]);
    let result;
    try {
      const failLater = new Promise((resolve) => setTimeout(resolve, 700))
        .then(() => writeFile(trigger, ''));
      result = await fio(dir, [`--uri=${served.uri}`, '--rw=randwrite', '--size=4M', '--rate=3m',
        '--verify=crc32c', '--do_verify=1', '--output-format=json'], 60_000);
      await failLater;
      const before = served.stderr().length;
      served.child.kill('SIGUSR1');
      await waitFor(() => served.stderr().length > before, 5000);
      assert.match(served.stderr().trim().split('\n').pop() ?? '', / 1 AD 1 core$/, served.stderr());
    } finally {
      assert.equal(await served.stop(), 0);
    }
    assert.equal(result.status, 0, result.stderr);
    // The image leg holds everything fio wrote and verified.
    assert.ok((await readFile(paths['a.img'] as string)).subarray(0, 4 * MiB).some((byte) => byte !== 0));
  } finally {
    await nbdkit.stop();
  }
});
