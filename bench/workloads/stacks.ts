// Owns workload 7: device stacks (issue 19) served by `dmio serve`, against the same storage
// served plainly. nbdcopy (4 connections) writes a cached random file into, and reads to
// `null:` from, `dmio serve FILE` with its default connection threads, `dmio serve FILE
// --threads 0` (served on the event loop), a one-line `linear` table over FILE (served on
// connection threads by default, as a file is), and a 2-leg `mirror` (core log, nosync) over
// FILE and a second file (served on the event loop: a mirror's state has one owner). Each
// stack's ratio is against the raw file served the same way, so it is what the stack costs:
// linear against the threaded file, mirror against the event-loop file. Then fio (nbd engine, 4 KiB
// random writes, iodepth 16, time-based) writes to an `nbdkit file` origin behind
// `--filter=delay` (2 ms per write) alone, and to a `writecache` table whose cache is RAM
// (`mem:`) in front of that origin. The images are the bench size but at most
// STACK_IMAGE_BYTES_MAX, so the workload stays short at the default 1 GiB. Each server runs only
// for its own rows.

import fs from 'node:fs';
import type { BenchContext } from '../context.js';
import { peerMissing } from '../context.js';
import { repetitionOrder } from '../order.js';
import { prepareNbdcopyRun } from '../page-cache.js';
import { runChecked, runCommand } from '../proc.js';
import type { StartedServer } from '../resources.js';

const MiB = 1024 * 1024;
const SECTOR_BYTES = 512;
/** Largest image of the throughput rows (the mirror writes two). */
const STACK_IMAGE_BYTES_MAX = 256 * MiB;
/** nbdcopy connections of the throughput rows. */
const CONNECTIONS = 4;
/** fio's run time per writecache sample (with --quick: 1 s), and the origin's delay per write. */
const FIO_RUNTIME_S = 5;
const FIO_RUNTIME_QUICK_S = 1;
/** Most bytes fio spreads its random writes over. */
const FIO_SPAN_BYTES_MAX = 64 * MiB;
const ORIGIN_WRITE_DELAY = '2ms';

/** The case names of workload 7 (targets.ts finds its rows by them). */
export const STACK_CASES = {
  write: `stacks: nbdcopy write through dmio serve, ${CONNECTIONS} conns`,
  read: `stacks: nbdcopy read through dmio serve, ${CONNECTIONS} conns`,
  writecache: 'stacks: fio 4K randwrite QD16, origin behind a 2 ms delay',
} as const;

/** The variants of workload 7. */
export const STACK_VARIANTS = {
  raw: 'dmio serve FILE --threads 0',
  rawThreaded: 'dmio serve FILE (connection threads)',
  linear: 'dmio serve table: linear',
  mirror: 'dmio serve table: mirror, 2 legs',
  origin: 'nbdkit file --filter=delay (origin alone)',
  writecache: 'dmio serve table: writecache, cache mem:',
} as const;

/** One served device of the throughput rows: its label and its device spec. */
interface ServedStack {
  readonly variant: string;
  readonly spec: string;
  readonly args?: readonly string[];
}

/** Runs workload 7. */
export async function runStacksWorkload(context: BenchContext): Promise<void> {
  const { recorder } = context;
  const cli = context.dmioCli;
  const missing = 'missing' in cli ? cli.missing : peerMissing(context, 'nbdcopy');
  if (missing !== null) {
    for (const name of Object.values(STACK_CASES)) recorder.skip(7, name, 'all', missing);
    return;
  }
  await runThroughputRows(context);
  await runWritecacheRows(context);
}

async function runThroughputRows(context: BenchContext): Promise<void> {
  const { options, resources, recorder } = context;
  const imageBytes = Math.min(options.sizeBytes, STACK_IMAGE_BYTES_MAX);
  const source = resources.dataFile('w7-source.img', imageBytes);
  const legA = sparseImage(context, 'w7-a.img', imageBytes);
  const legB = sparseImage(context, 'w7-b.img', imageBytes);
  const sectors = imageBytes / SECTOR_BYTES;
  const stacks: ServedStack[] = [
    { variant: STACK_VARIANTS.raw, spec: legA, args: ['--threads', '0'] },
    { variant: STACK_VARIANTS.rawThreaded, spec: legA },
    { variant: STACK_VARIANTS.linear,
      spec: table(context, 'w7-linear.table', `0 ${sectors} linear ${legA} 0`) },
    { variant: STACK_VARIANTS.mirror, spec: table(context, 'w7-mirror.table',
      `0 ${sectors} mirror core 2 1024 nosync 2 ${legA} 0 ${legB} 0`) },
  ];
  for (let rep = 0; rep < options.reps; rep += 1) {
    recorder.note(`w7 repetition ${rep + 1}/${options.reps}`);
    for (const stack of repetitionOrder(stacks, rep)) {
      await withServer(context, stack.variant, dmioServeArgv(context, stack.spec, stack.args),
        async (server) => {
          for (const op of ['write', 'read'] as const) {
            await nbdcopyRow(context, stack.variant, server, op, source, legA, imageBytes);
          }
        });
    }
  }
}

async function nbdcopyRow(
  context: BenchContext, variant: string, server: StartedServer, op: 'write' | 'read',
  source: string, image: string, imageBytes: number,
): Promise<void> {
  const caseName = STACK_CASES[op];
  const [from, to] = prepareNbdcopyRun(op, source, image, server.uri);
  try {
    const startMs = performance.now();
    await runChecked('nbdcopy', [`--connections=${CONNECTIONS}`, from, to]);
    const seconds = (performance.now() - startMs) / 1000;
    context.recorder.add({ workload: 7, caseName, variant, role: 'dmio', unit: 'MiB/s',
      timer: 'wall', cache: op === 'write' ?
        'source read whole and the image written back before each run' :
        'image read whole before each run' }, imageBytes / MiB / seconds);
  } catch (error) {
    context.recorder.skip(7, caseName, variant, String(error));
  }
}

async function runWritecacheRows(context: BenchContext): Promise<void> {
  const { options, resources, recorder } = context;
  const caseName = STACK_CASES.writecache;
  const why = peerMissing(context, 'nbdkit') ?? peerMissing(context, 'fio');
  if (why !== null) {
    recorder.skip(7, caseName, 'all', why);
    return;
  }
  const originBytes = Math.min(options.sizeBytes, STACK_IMAGE_BYTES_MAX);
  const origin = sparseImage(context, 'w7-origin.img', originBytes);
  const originSocket = resources.file('w7-origin.sock');
  fs.rmSync(originSocket, { force: true });
  const nbdkit = await resources.server('w7 origin', 'nbdkit', ['--foreground',
    '--exit-with-parent', '--unix', originSocket, '--filter=delay', 'file', origin,
    `wdelay=${ORIGIN_WRITE_DELAY}`], originSocket);
  try {
    const cacheTable = table(context, 'w7-writecache.table',
      `0 ${originBytes / SECTOR_BYTES} writecache s ${nbdkit.uri} mem:${originBytes / MiB}M ` +
      '4096 0');
    for (let rep = 0; rep < options.reps; rep += 1) {
      await fioRow(context, STACK_VARIANTS.origin, 'peer', nbdkit.uri, originBytes);
      await withServer(context, STACK_VARIANTS.writecache, dmioServeArgv(context, cacheTable),
        (server) => fioRow(context, STACK_VARIANTS.writecache, 'dmio', server.uri, originBytes));
    }
  } finally {
    await nbdkit.stop();
  }
}

async function fioRow(
  context: BenchContext, variant: string, role: 'dmio' | 'peer', uri: string, spanBytes: number,
): Promise<void> {
  const caseName = STACK_CASES.writecache;
  const runtimeS = context.options.quick ? FIO_RUNTIME_QUICK_S : FIO_RUNTIME_S;
  const result = await runCommand('fio', ['--name=w7', '--ioengine=nbd', `--uri=${uri}`,
    '--rw=randwrite', '--bs=4k', '--iodepth=16',
    `--size=${Math.min(spanBytes, FIO_SPAN_BYTES_MAX)}`, '--time_based', `--runtime=${runtimeS}`,
    '--output-format=json']);
  const iops = result.exitCode === 0 ? fioWriteIops(result.stdout) : null;
  if (iops === null) {
    context.recorder.skip(7, caseName, variant,
      `fio exited ${String(result.exitCode)}: ${result.stderr.trim().slice(0, 500)}`);
    return;
  }
  context.recorder.add({ workload: 7, caseName, variant, role, unit: 'IOPS', timer: 'in-process',
    cache: 'origin file cached; each fio run writes 4 KiB blocks for the whole run time' }, iops);
}

/** The write IOPS of fio's JSON output, or null when it has none. */
function fioWriteIops(output: string): number | null {
  const start = output.indexOf('{');
  if (start < 0) return null;
  const parsed = JSON.parse(output.slice(start)) as { jobs?: { write?: { iops?: number } }[] };
  const iops = parsed.jobs?.[0]?.write?.iops;
  return typeof iops === 'number' && iops > 0 ? iops : null;
}

/** Runs `body` with a `dmio serve` started from `argv`, stopping it afterwards. */
async function withServer(
  context: BenchContext, variant: string, argv: readonly string[],
  body: (server: StartedServer) => Promise<void>,
): Promise<void> {
  const socketPath = argv[argv.indexOf('--socket') + 1] ?? '';
  fs.rmSync(socketPath, { force: true });
  const [file = '', ...args] = argv;
  let server: StartedServer;
  try {
    server = await context.resources.server(`w7 ${variant}`, file, args, socketPath);
  } catch (error) {
    for (const name of Object.values(STACK_CASES)) {
      context.recorder.skip(7, name, variant, String(error));
    }
    return;
  }
  try {
    await body(server);
  } finally {
    await server.stop();
  }
}

/** The argv of `dmio serve SPEC ...args` on a Unix socket in the scratch directory. */
function dmioServeArgv(
  context: BenchContext, spec: string, args: readonly string[] = [],
): readonly string[] {
  const cli = context.dmioCli;
  if ('missing' in cli) throw new Error(cli.missing);
  const socketPath = context.resources.file(`w7-${Math.random().toString(36).slice(2)}.sock`);
  return [...cli.argv, 'serve', spec, ...args, '--socket', socketPath];
}

/** A new sparse image file of `sizeBytes` in the scratch directory. */
function sparseImage(context: BenchContext, name: string, sizeBytes: number): string {
  const file = context.resources.file(name);
  fs.writeFileSync(file, '');
  fs.truncateSync(file, sizeBytes);
  return file;
}

/** A one-line table file in the scratch directory, as a `table:` device spec. */
function table(context: BenchContext, name: string, line: string): string {
  const file = context.resources.file(name);
  fs.writeFileSync(file, `${line}\n`);
  return `table:${file}`;
}
