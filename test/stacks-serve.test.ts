// Tables served by the real `dmio serve`: fio random writes verified with crc32c through
// `table:` files of linear, striped, mirror and writecache segments (one server, one export each), on image
// files and on a loop device, and the bytes checked on the parts themselves. fio runs with its
// working directory in a temporary directory and --verify_state_save=0, so it leaves no state
// files; every server, loop device and temporary file is removed.

import assert from 'node:assert/strict';
import { readFileSync, statSync } from 'node:fs';
import { truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { startDmioServe, runToolOk } from './helpers/dmio-serve.js';
import { attachLoop, detachLoop, requireLoopOrSkip } from './helpers/loop.js';
import { requireTools, unixUri } from './helpers/nbdkit.js';
import { tempDir } from './helpers/tmp.js';

const MiB = 1024 * 1024;

/** Runs a short verified fio job over the first `sizeBytes` of `uri`, with `dir` as its cwd. */
async function fioVerify(dir: string, uri: string, sizeBytes: number): Promise<void> {
  const previous = process.cwd();
  process.chdir(dir);
  try {
    const { stdout } = await runToolOk('fio', ['--name=v', '--ioengine=nbd', `--uri=${uri}`,
      '--rw=randwrite', '--bs=4k', '--iodepth=16', `--size=${sizeBytes}`, '--verify=crc32c',
      '--do_verify=1', '--verify_state_save=0', '--output-format=json'], 60_000);
    const job = (JSON.parse(stdout.slice(stdout.indexOf('{'))) as { jobs: Array<{ error: number }> }).jobs[0];
    assert.equal(job?.error, 0, `fio through ${uri}`);
  } finally {
    process.chdir(previous);
  }
}

/** Writes each table, serves them as exports named after them, and runs fio on each. */
async function serveAndVerify(dir: string, tables: Record<string, string>): Promise<void> {
  const socket = join(dir, 's.sock');
  const args: string[] = [];
  for (const [name, text] of Object.entries(tables)) {
    const path = join(dir, `${name}.table`);
    await writeFile(path, text);
    args.push('--export', `${name}=table:${path}`);
  }
  const served = await startDmioServe(['null:1M', '--socket', socket, ...args]);
  try {
    for (const name of Object.keys(tables)) await fioVerify(dir, unixUri(socket, name), 2 * MiB);
  } finally {
    assert.equal(await served.stop(), 0);
  }
}

async function images(t: TestContext, ...names: string[]): Promise<{ dir: string; paths: string[] }> {
  const dir = await tempDir(t);
  const paths = names.map((name) => join(dir, name));
  for (const path of paths) {
    await writeFile(path, '');
    await truncate(path, 16 * MiB);
  }
  return { dir, paths };
}

test('fio verify through linear, striped, mirror and writecache tables of image files', async (t) => {
  if (!requireTools(t, 'fio')) return;
  const { dir, paths: [a, b, origin, cache] } = await images(t, 'a.img', 'b.img', 'origin.img', 'cache.img');
  await truncate(cache as string, 2 * MiB);
  await serveAndVerify(dir, {
    linear: `# two pieces, the first on b\n0 2048 linear ${b} 0\n2048 2048 linear ${a} 2048\n`,
    striped: `0 8192 striped 2 16 ${a} 8192 ${b} 12288\n`,
    mirror: `0 4096 mirror core 2 1024 nosync 2 ${a} 24576 ${b} 24576\n`,
    // A 2 MiB cache holds about 500 blocks: writeback runs while fio writes.
    writecache: `0 4096 writecache s ${origin} ${cache} 4096 4 high_watermark 30 low_watermark 10\n`,
  });
  const aBytes = readFileSync(a as string);
  const bBytes = readFileSync(b as string);
  // fio's data is where the maps put it: striped chunk 0 on a at sector 8192, chunk 1 on b at
  // 12288; the mirror's legs are identical.
  assert.ok(aBytes.subarray(8192 * 512, 8192 * 512 + 8192).some((byte) => byte !== 0));
  assert.ok(bBytes.subarray(12288 * 512, 12288 * 512 + 8192).some((byte) => byte !== 0));
  const mirrorA = aBytes.subarray(24576 * 512, (24576 + 4096) * 512);
  assert.ok(mirrorA.some((byte) => byte !== 0));
  assert.ok(mirrorA.equals(bBytes.subarray(24576 * 512, (24576 + 4096) * 512)));
});

test('fio verify through linear, striped, mirror and writecache tables on a loop device', async (t) => {
  if (!requireTools(t, 'fio') || !requireLoopOrSkip(t)) return;
  const { dir, paths: [loopImage, file, origin] } = await images(t, 'loop.img', 'file.img', 'origin.img');
  const loop = await attachLoop(loopImage as string);
  try {
    // The linear table names the loop device as the kernel's tables do, MAJOR:MINOR.
    const rdev = statSync(loop).rdev;
    const majorMinor = `${Math.floor(rdev / 256) & 0xfff}:${(rdev & 0xff) | ((Math.floor(rdev / 4096) & 0xfff00))}`;
    await serveAndVerify(dir, {
      linear: `0 4096 linear ${majorMinor} 4096\n`,
      striped: `0 8192 striped 2 8 ${loop} 8192 ${file} 8192\n`,
      mirror: `0 4096 mirror core 1 1024 2 ${loop} 16384 ${file} 16384 1 handle_errors\n`,
      // The cache is the loop device's last 4 MiB.
      writecache: `0 4096 writecache s ${origin} ${loop} 4096 2 start_sector 24576\n`,
    });
  } finally {
    await detachLoop(loop);
  }
});
