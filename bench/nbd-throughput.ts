// Measures NbdDevice throughput against nbdkit memory (allocator=malloc) on a Unix socket and
// compares it with nbdcopy moving the same 256 MiB. Run: node --import tsx bench/nbd-throughput.ts
// Prints MiB/s per configuration; needs nbdkit and nbdcopy.

import { execFileSync } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { openNbdDevice } from '../src/nbd/open-nbd.js';
import type { NbdDevice } from '../src/nbd/nbd-device.js';
import { request, submit } from '../test/helpers/device-io.js';
import { startNbdkit } from '../test/helpers/nbdkit.js';

const MiB = 1024 * 1024;
const TOTAL_BYTES = 256 * MiB;

async function pump(device: NbdDevice, op: 'read' | 'write', source: Buffer, requestBytes: number,
  depth: number): Promise<number> {
  const started = performance.now();
  let nextOffset = 0;
  const worker = async (): Promise<void> => {
    while (nextOffset < TOTAL_BYTES) {
      const offset = nextOffset;
      nextOffset += requestBytes;
      const segment = source.subarray(offset, offset + requestBytes);
      const error = await submit(device, request(op, offset / 512, requestBytes / 512, [segment]), 60000);
      if (error !== null) throw error;
    }
  };
  await Promise.all(Array.from({ length: depth }, worker));
  return TOTAL_BYTES / MiB / ((performance.now() - started) / 1000);
}

async function main(): Promise<void> {
  const data = randomFillSync(Buffer.alloc(TOTAL_BYTES));
  const server = await startNbdkit(['memory', '256M', 'allocator=malloc']);
  const file = path.join(server.dir, 'source.img');
  writeFileSync(file, data);
  const rows: string[] = [];
  for (const [requestBytes, depth, connections] of [[256 * 1024, 16, 1], [MiB, 16, 1],
    [MiB, 32, 4], [32 * MiB, 2, 1]] as const) {
    const device = await openNbdDevice(server.uri, { connections, inflightRequestsMax: 64,
      inflightBytesMax: 64 * MiB });
    const writeMiBs = await pump(device, 'write', data, requestBytes, depth);
    const back = Buffer.alloc(TOTAL_BYTES, 1);  // touched: no page faults inside the timing
    const readMiBs = await pump(device, 'read', back, requestBytes, depth);
    if (!back.equals(data)) throw new Error('read-back mismatch');
    await device.close();
    rows.push(`dmio ${requestBytes / 1024} KiB x QD${depth} x ${connections} conn: ` +
      `write ${writeMiBs.toFixed(0)} MiB/s, read ${readMiBs.toFixed(0)} MiB/s`);
  }
  for (const args of [[file, server.uri], [server.uri, path.join(server.dir, 'out.img')]]) {
    const started = performance.now();
    execFileSync('nbdcopy', args);
    const seconds = (performance.now() - started) / 1000;
    rows.push(`nbdcopy ${args[0] === file ? 'file -> nbd' : 'nbd -> file'}: ${(256 / seconds).toFixed(0)} MiB/s`);
  }
  await server.stop();
  console.log(rows.join('\n'));
}

await main();
