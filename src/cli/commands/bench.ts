// Owns `dmio bench`: measures a user's own device through the library, the way an application
// uses it — 4 KiB random reads at queue depth 1 and 32 (`dmIo` notify form, aligned memory) and
// 1 MiB sequential reads, plus, only with --write, the same as writes (destructive). It prints
// IOPS and MiB/s and names the libuv engine, because UV_USE_IO_URING=1 multiplies small random
// I/O on Linux (docs/performance.md). `npm run bench` is the comparison with the peers; this is
// the quick look at one device.

import type { Command } from 'commander';
import { performance } from 'node:perf_hooks';
import {
  allocAligned, dmIo, dmIoClientCreate, dmIoClientDestroy, PAGE_SIZE, SECTOR_SIZE,
  type BlockDevice, type DmIoError,
} from '../../index.js';
import type { CliContext, RunCommand } from '../context.js';
import { checkSpec, closeAll, openForCli } from '../devices.js';
import { EXIT_OK, UsageError } from '../exit-status.js';

/** Longest measurement one run may ask for, so a typo cannot run for hours. */
const BENCH_SECONDS_MAX = 600;
/** Bytes of one random request: a page, as applications' small I/O. */
const RANDOM_BLOCK_BYTES = PAGE_SIZE;
/** Bytes of one sequential request (1 MiB). */
const SEQUENTIAL_BLOCK_BYTES = 1024 * 1024;

interface BenchFlags { seconds: string; direct?: boolean; write?: boolean; json?: boolean }

/** Adds `bench` to the program. */
export function registerBench(program: Command, run: RunCommand): void {
  program.command('bench')
    .description('measure 4K random and 1M sequential I/O on a device through dm-io')
    .argument('<device>', 'device spec (path, file:, mem:, nbd://...)')
    .option('--seconds <N>', 'seconds per measurement', '2')
    .option('--direct', 'open files and block devices with O_DIRECT')
    .option('--write', 'also measure writes: DESTROYS the device\'s data')
    .option('--json', 'print one JSON object')
    .action((spec: string, flags: BenchFlags) => run((cli) => bench(cli, spec, flags)));
}

async function bench(cli: CliContext, spec: string, flags: BenchFlags): Promise<number> {
  const seconds = Number(flags.seconds);
  if (!(seconds > 0 && seconds <= BENCH_SECONDS_MAX)) {
    throw new UsageError(`--seconds: a number above 0 and at most ${BENCH_SECONDS_MAX}`);
  }
  checkSpec(spec, false);
  const device = await openForCli(cli, { spec, options: {
    readOnly: flags.write !== true, direct: flags.direct === true } });
  const results: Record<string, number> = {};
  try {
    for (const op of flags.write === true ? ['read', 'write'] as const : ['read'] as const) {
      for (const depth of [1, 32]) {
        const rate = await measure(device, op, RANDOM_BLOCK_BYTES, depth, seconds);
        results[`4k-rand${op}-qd${depth}-iops`] = rate.opsPerSecond;
      }
      const sequential = await measure(device, op, SEQUENTIAL_BLOCK_BYTES, 8, seconds, false);
      results[`1m-seq${op}-mibps`] = sequential.opsPerSecond;
    }
  } finally {
    await closeAll([device]);
  }
  report(cli, spec, seconds, results, flags.json === true);
  return EXIT_OK;
}

function report(
  cli: CliContext, spec: string, seconds: number, results: Record<string, number>, json: boolean,
): void {
  const out = cli.stdout.stream;
  const engine = process.env['UV_USE_IO_URING'] === '1' ? 'io_uring' : 'threadpool';
  if (json) {
    out.write(`${JSON.stringify({ device: spec, engine, seconds, results })}\n`);
    return;
  }
  for (const [name, value] of Object.entries(results)) {
    out.write(`${name.padEnd(24)} ${value.toFixed(0)}\n`);
  }
  const hint = engine === 'threadpool' ?
    ' (UV_USE_IO_URING=1 usually multiplies small random I/O; see docs/performance.md)' : '';
  out.write(`libuv engine: ${engine}${hint}\n`);
}

/**
 * Runs `depth` requests of `blockBytes` in a closed loop for `seconds`, at random block
 * positions or sequentially (wrapping at the end). Returns operations per second, or MiB per
 * second for 1 MiB blocks. A failed request stops every slot and throws its typed error.
 */
async function measure(
  device: BlockDevice, op: 'read' | 'write', blockBytes: number, depth: number, seconds: number,
  random = true,
): Promise<{ opsPerSecond: number }> {
  const blockSectors = blockBytes / SECTOR_SIZE;
  const blocks = Math.floor(device.sizeSectors / blockSectors);
  if (blocks < 1) throw new UsageError(`the device is smaller than ${blockBytes} bytes`);
  const client = dmIoClientCreate({ inflightMax: Math.max(128, depth) });
  const memory = allocAligned(depth * blockBytes);
  let next = 0;
  let done = 0;
  let failure: DmIoError | null = null;
  const startMs = performance.now();
  const endMs = startMs + seconds * 1000;
  try {
    await new Promise<void>((resolve) => {
      let active = depth;
      const issue = (slot: number): void => {
        const block = random ? Math.floor(Math.random() * blocks) : next++ % blocks;
        const data = memory.subarray(slot * blockBytes, (slot + 1) * blockBytes);
        dmIo({ op, mem: { type: 'kmem', data }, client, notify: { fn: (errorBits, _c, result) => {
          if (errorBits !== 0n) failure ??= result.errors[0] ?? null;
          else done += 1;
          if (failure === null && performance.now() < endMs) issue(slot);
          else if (--active === 0) resolve();
        } } }, [{ device, sector: block * blockSectors, count: blockSectors }]);
      };
      for (let slot = 0; slot < depth; slot += 1) issue(slot);
    });
  } finally {
    await dmIoClientDestroy(client);
  }
  if (failure !== null) throw failure;
  const elapsedSeconds = (performance.now() - startMs) / 1000;
  const units = random ? done : (done * blockBytes) / (1024 * 1024);
  return { opsPerSecond: units / elapsedSeconds };
}
