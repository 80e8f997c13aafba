// Measures device stacks through `dmio serve` against the same storage served plainly: nbdcopy
// (4 connections) writing and reading 128 MiB through `dmio serve FILE`, a one-line linear
// table over FILE, and a 2-leg mirror (core log, nosync) over two files; and fio 4 KiB random
// writes (iodepth 16, 5 s) to a writecache whose cache is RAM (`mem:`) and whose origin is an
// nbdkit file export behind `--filter=delay` (2 ms per write), against that origin alone.
// Prints MiB/s or IOPS and the ratios the issue sets (linear >= 0.9x, mirror >= 0.8x of the raw
// file; writecache >= 5x the origin). Run: node --import tsx bench/stacks-throughput.ts
// Not a row of `npm run bench` (bench/run.ts); needs nbdcopy, nbdkit and fio.

import { execFileSync } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { rmSync, truncateSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { startDmioServe } from '../test/helpers/dmio-serve.js';
import { makeTempDir, startNbdkit } from '../test/helpers/nbdkit.js';

const MiB = 1024 * 1024;
const TOTAL_BYTES = 128 * MiB;
const RUNS = 2;

function bestMiBs(args: string[]): number {
  let best = 0;
  for (let run = 0; run < RUNS; run += 1) {
    const started = performance.now();
    execFileSync('nbdcopy', ['--connections=4', ...args], { stdio: 'ignore' });
    best = Math.max(best, TOTAL_BYTES / MiB / ((performance.now() - started) / 1000));
  }
  return best;
}

function image(dir: string, name: string, sizeBytes: number): string {
  const file = path.join(dir, name);
  writeFileSync(file, '');
  truncateSync(file, sizeBytes);
  return file;
}

interface Row { readonly name: string; readonly writeMiBs: number; readonly readMiBs: number }

async function served(dir: string, spec: string, source: string, name: string): Promise<Row> {
  const server = await startDmioServe([spec, '--socket', path.join(dir, `${name}.sock`)]);
  try {
    return { name, writeMiBs: bestMiBs([source, server.uri]), readMiBs: bestMiBs([server.uri, 'null:']) };
  } finally {
    await server.stop();
  }
}

function fioIops(dir: string, uri: string): number {
  const output = execFileSync('fio', ['--name=w', '--ioengine=nbd', `--uri=${uri}`, '--rw=randwrite',
    '--bs=4k', '--iodepth=16', '--size=64M', '--time_based', '--runtime=5', '--output-format=json'],
  { cwd: dir, encoding: 'utf8' });
  const job = (JSON.parse(output.slice(output.indexOf('{'))) as { jobs: Array<{ write: { iops: number } }> }).jobs[0];
  return job?.write.iops ?? 0;
}

async function writecacheRatio(dir: string): Promise<{ origin: number; cached: number }> {
  const originFile = image(dir, 'origin.img', 256 * MiB);
  const nbdkit = await startNbdkit(['--filter=delay', 'file', originFile, 'wdelay=2ms'], { dir: makeTempDir() });
  try {
    const origin = fioIops(dir, nbdkit.uri);
    const table = path.join(dir, 'wc.table');
    writeFileSync(table, `0 ${(256 * MiB) / 512} writecache s ${nbdkit.uri} mem:256M 4096 0\n`);
    const server = await startDmioServe([`table:${table}`, '--socket', path.join(dir, 'wc.sock')]);
    try {
      return { origin, cached: fioIops(dir, server.uri) };
    } finally {
      await server.stop();
    }
  } finally {
    await nbdkit.stop();
  }
}

async function main(): Promise<void> {
  const dir = makeTempDir('dmio-stacks-bench-');
  try {
    const source = path.join(dir, 'source.img');
    writeFileSync(source, randomFillSync(Buffer.alloc(TOTAL_BYTES)));
    const a = image(dir, 'a.img', TOTAL_BYTES);
    const b = image(dir, 'b.img', TOTAL_BYTES);
    const sectors = TOTAL_BYTES / 512;
    writeFileSync(path.join(dir, 'linear.table'), `0 ${sectors} linear ${a} 0\n`);
    writeFileSync(path.join(dir, 'mirror.table'), `0 ${sectors} mirror core 2 1024 nosync 2 ${a} 0 ${b} 0\n`);
    const raw = await served(dir, a, source, 'raw file');
    const rows = [raw,
      await served(dir, `table:${path.join(dir, 'linear.table')}`, source, 'linear'),
      await served(dir, `table:${path.join(dir, 'mirror.table')}`, source, 'mirror (2 legs)')];
    for (const row of rows) {
      console.log(`${row.name.padEnd(16)} write ${row.writeMiBs.toFixed(0).padStart(5)} MiB/s ` +
        `(${(row.writeMiBs / raw.writeMiBs).toFixed(2)}x)  read ${row.readMiBs.toFixed(0).padStart(5)} ` +
        `MiB/s (${(row.readMiBs / raw.readMiBs).toFixed(2)}x)`);
    }
    const { origin, cached } = await writecacheRatio(dir);
    console.log(`writecache 4k randwrite ${cached.toFixed(0)} IOPS vs origin alone ${origin.toFixed(0)} ` +
      `IOPS (${(cached / origin).toFixed(1)}x)`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
