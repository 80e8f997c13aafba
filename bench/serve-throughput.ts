// Measures `dmio serve` against its peers: nbdcopy (4 connections) writing a 256 MiB file into,
// and reading it out of, the same image served by `dmio serve FILE`, `nbdkit file FILE` and
// `qemu-nbd -f raw --shared=4 FILE`, each on a private Unix socket; best of 3 runs each way.
// Prints MiB/s and dmio's ratio to the faster peer. Run: node --import tsx bench/serve-throughput.ts
// Not yet a row of `npm run bench` (bench/run.ts); needs nbdcopy, nbdkit and qemu-nbd.

import { execFileSync } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { writeFileSync, rmSync, truncateSync } from 'node:fs';
import path from 'node:path';
import { startDmioServe } from '../test/helpers/dmio-serve.js';
import { makeTempDir, startNbdkit, startQemuNbd, unixUri } from '../test/helpers/nbdkit.js';

const MiB = 1024 * 1024;
const TOTAL_BYTES = 256 * MiB;
const RUNS = 3;

function bestMiBs(args: string[]): number {
  let best = 0;
  for (let run = 0; run < RUNS; run += 1) {
    const started = performance.now();
    execFileSync('nbdcopy', ['--connections=4', ...args], { stdio: 'ignore' });
    best = Math.max(best, TOTAL_BYTES / MiB / ((performance.now() - started) / 1000));
  }
  return best;
}

interface Row { server: string; writeMiBs: number; readMiBs: number }

function measure(server: string, uri: string, source: string): Row {
  return { server, writeMiBs: bestMiBs([source, uri]), readMiBs: bestMiBs([uri, 'null:']) };
}

async function main(): Promise<void> {
  const dir = makeTempDir('dmio-serve-bench-');
  try {
    const source = path.join(dir, 'source.img');
    writeFileSync(source, randomFillSync(Buffer.alloc(TOTAL_BYTES)));
    const image = path.join(dir, 'image.img');
    writeFileSync(image, '');
    truncateSync(image, TOTAL_BYTES);
    const rows: Row[] = [];
    const dmio = await startDmioServe([image, '--socket', path.join(dir, 'dmio.sock')]);
    rows.push(measure('dmio serve', dmio.uri, source));
    await dmio.stop();
    const nbdkit = await startNbdkit(['file', image], { dir: makeTempDir() });
    rows.push(measure('nbdkit file', nbdkit.uri, source));
    await nbdkit.stop();
    const qemu = await startQemuNbd(['-f', 'raw', '--shared=4', '--persistent', image],
      { dir: makeTempDir() });
    rows.push(measure('qemu-nbd -f raw', unixUri(qemu.socketPath), source));
    await qemu.stop();
    const peers = rows.slice(1);
    const bestWrite = Math.max(...peers.map((row) => row.writeMiBs));
    const bestRead = Math.max(...peers.map((row) => row.readMiBs));
    for (const row of rows) {
      console.log(`${row.server.padEnd(16)} write ${row.writeMiBs.toFixed(0).padStart(5)} MiB/s ` +
        `(${(row.writeMiBs / bestWrite).toFixed(2)}x)  read ${row.readMiBs.toFixed(0).padStart(5)} ` +
        `MiB/s (${(row.readMiBs / bestRead).toFixed(2)}x)`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
