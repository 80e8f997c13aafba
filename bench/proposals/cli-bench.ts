// PROPOSAL for the CLI owner (not wired in; the bench owns no CLI code): `dmio bench DEVICE`,
// the issue's "dmio bench for users' own devices". To adopt: move this file to
// src/cli/commands/bench.ts, fix the import paths (`../../src/cli/` -> `../`, other
// `../../src/` -> `../../`), and add `registerBench(program, run);` after
// `registerInfo(program, run);` in src/cli/main.ts.
//
// Owns `dmio bench`: measures a device through the library, the way an application would use
// it — 4 KiB random reads at queue depth 1 and 32 (`dmIo` notify form, aligned memory) and
// 1 MiB sequential reads — and, only with --write, the same as writes (destructive). It prints
// IOPS and MiB/s, and says which libuv engine ran, because UV_USE_IO_URING=1 multiplies small
// random I/O by 2-4x on Linux (docs/performance.md).

import type { Command } from 'commander';
import { performance } from 'node:perf_hooks';
import { dmIo } from '../../src/core/dm-io.js';
import { dmIoClientCreate, dmIoClientDestroy } from '../../src/core/client.js';
import { allocAligned } from '../../src/memory/aligned.js';
import type { BlockDevice } from '../../src/devices/block-device.js';
import { checkSpec, closeAll, openForCli } from '../../src/cli/devices.js';
import { EXIT_OK, UsageError } from '../../src/cli/usage.js';

interface BenchFlags { seconds: string; direct?: boolean; write?: boolean; json?: boolean }

/** Adds `bench` to the program. */
export function registerBench(program: Command, run: (work: () => Promise<number>) => void): void {
  program.command('bench')
    .description('measure 4K random and 1M sequential I/O on a device through dm-io')
    .argument('<device>', 'device spec (path, file:, mem:, nbd://...)')
    .option('--seconds <N>', 'seconds per measurement', '2')
    .option('--direct', 'open files and block devices with O_DIRECT')
    .option('--write', 'also measure writes: DESTROYS the device\'s data')
    .option('--json', 'print one JSON object')
    .action((spec: string, flags: BenchFlags) => run(() => bench(spec, flags)));
}

async function bench(spec: string, flags: BenchFlags): Promise<number> {
  const seconds = Number(flags.seconds);
  if (!(seconds > 0 && seconds <= 600)) throw new UsageError('--seconds: from 0 to 600');
  checkSpec(spec, false);
  const device = await openForCli({ spec, options: {
    readOnly: flags.write !== true, direct: flags.direct === true } });
  const results: Record<string, number> = {};
  try {
    for (const op of flags.write === true ? ['read', 'write'] as const : ['read'] as const) {
      for (const depth of [1, 32]) {
        results[`4k-rand${op}-qd${depth}-iops`] =
          await measure(device, op, 4096, depth, seconds, true);
      }
      results[`1m-seq${op}-mibps`] = await measure(device, op, 1 << 20, 8, seconds, false) / 1024;
    }
  } finally {
    await closeAll([device]);
  }
  const engine = process.env.UV_USE_IO_URING === '1' ? 'io_uring' : 'threadpool';
  if (flags.json === true) {
    process.stdout.write(`${JSON.stringify({ device: spec, engine, seconds, results })}\n`);
  } else {
    for (const [name, value] of Object.entries(results)) {
      process.stdout.write(`${name.padEnd(24)} ${value.toFixed(0)}\n`);
    }
    const hint = engine === 'threadpool' ?
      ' (UV_USE_IO_URING=1 usually multiplies small random I/O; see docs/performance.md)' : '';
    process.stdout.write(`libuv engine: ${engine}${hint}\n`);
  }
  return EXIT_OK;
}

/** Operations per second (random) or KiB per second (sequential) with `depth` in flight. */
async function measure(
  device: BlockDevice, op: 'read' | 'write', blockBytes: number, depth: number, seconds: number,
  random: boolean,
): Promise<number> {
  const client = dmIoClientCreate({ inflightMax: Math.max(128, depth) });
  const memory = allocAligned(depth * blockBytes);
  const blockSectors = blockBytes / 512;
  const blocks = Math.floor(device.sizeSectors / blockSectors);
  if (blocks < 1) throw new UsageError(`the device is smaller than ${blockBytes} bytes`);
  let next = 0;
  let done = 0;
  const endMs = performance.now() + seconds * 1000;
  try {
    await new Promise<void>((resolve, reject) => {
      let active = depth;
      const issue = (slot: number): void => {
        const block = random ? Math.floor(Math.random() * blocks) : next++ % blocks;
        const data = memory.subarray(slot * blockBytes, (slot + 1) * blockBytes);
        dmIo({ op, mem: { type: 'kmem', data }, client, notify: { fn: (errorBits) => {
          if (errorBits !== 0n) { reject(new Error(`${op} failed at block ${block}`)); return; }
          done += 1;
          if (performance.now() < endMs) issue(slot);
          else if (--active === 0) resolve();
        } } }, [{ device, sector: block * blockSectors, count: blockSectors }]);
      };
      for (let slot = 0; slot < depth; slot += 1) issue(slot);
    });
  } finally {
    await dmIoClientDestroy(client);
  }
  return (done * (random ? 1 : blockBytes / 1024)) / seconds;
}
