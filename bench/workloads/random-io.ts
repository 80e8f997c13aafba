// Owns workload 1: 4 KiB random reads and writes at queue depth 1 and 32, on a cached 1 GiB
// file (buffered) and on a loop device over another cached file (O_DIRECT). For each case it
// runs fio (io_uring, libaio, psync), raw Node `fs` and `dmIo` on the same file, each Node
// variant under the default threadpool and under UV_USE_IO_URING=1 (separate processes). The
// backing file is read whole before every measured run, so every run starts fully cached.

import type { BenchContext } from '../context.js';
import { peerMissing } from '../context.js';
import { runFio } from '../fio.js';
import type { Role } from '../model.js';
import { repetitionOrder } from '../order.js';
import { warmFile } from '../page-cache.js';
import { ENGINE_LABEL, runWorker, type Engine } from '../proc.js';
import type { RandomIoJob, RandomVariant } from '../workers/jobs.js';
import { isWorkerError } from '../workers/jobs.js';

const BLOCK_BYTES = 4096;
/** psync has no queue; depth comes from parallel jobs, at most this many on 2 cores. */
const PSYNC_JOBS_MAX = 4;

/** One measured combination of target, direction and depth. */
interface RandomCase {
  readonly name: string;
  readonly target: 'file' | 'loop';
  /** What is addressed: the file, or the loop device. */
  readonly path: string;
  /** The file read whole before each run. */
  readonly backing: string;
  readonly op: 'read' | 'write';
  readonly depth: number;
}

/** The case name used in the table and by the targets. */
export function randomCaseName(
  op: 'read' | 'write', depth: number, target: 'file' | 'loop',
): string {
  return `4K rand${op} QD${depth} ${target}`;
}

/** Runs workload 1. */
export async function runRandomIoWorkload(context: BenchContext): Promise<void> {
  const { options, resources, recorder } = context;
  const places: { target: 'file' | 'loop'; path: string; backing: string }[] = [];
  if (options.targets.includes('file')) {
    const file = resources.dataFile('w1-file.img', options.sizeBytes);
    places.push({ target: 'file', path: file, backing: file });
  }
  if (options.targets.includes('loop')) {
    const backing = resources.dataFile('w1-loop-backing.img', options.sizeBytes);
    try {
      places.push({ target: 'loop', path: await resources.loopDevice(backing), backing });
    } catch (error) {
      recorder.note(`  w1: loop device unavailable, loop cases skipped: ${String(error)}`);
    }
  }
  for (let rep = 0; rep < options.reps; rep += 1) {
    recorder.note(`w1 repetition ${rep + 1}/${options.reps}`);
    for (const place of places) {
      for (const op of options.ops) {
        for (const depth of options.depths) {
          const name = randomCaseName(op, depth, place.target);
          await runCase(context, { ...place, name, op, depth }, rep);
        }
      }
    }
  }
}

function cacheNote(randomCase: RandomCase): string {
  return randomCase.target === 'file' ?
    'file read whole before each run; buffered I/O on the page cache' :
    'backing file read whole before each run; loop device opened O_DIRECT';
}

/** Runs every variant of a case once, in another order each repetition (`repetitionOrder`). */
async function runCase(context: BenchContext, randomCase: RandomCase, rep: number): Promise<void> {
  const runners: Array<() => Promise<void>> = [
    ...context.options.fioEngines.map((engine) =>
      () => runFioVariant(context, randomCase, engine)),
    ...context.options.engines.map((engine) =>
      () => runNodeVariants(context, randomCase, engine, rep)),
  ];
  for (const runner of repetitionOrder(runners, rep)) await runner();
}

async function runFioVariant(
  context: BenchContext, randomCase: RandomCase, engine: string,
): Promise<void> {
  const { options, recorder } = context;
  const parallel = engine === 'psync' && randomCase.depth > 1;
  const jobsPerFile = parallel ? Math.min(randomCase.depth, PSYNC_JOBS_MAX) : 1;
  const variant = parallel ? `fio psync ×${jobsPerFile} jobs` : `fio ${engine}`;
  const missing = peerMissing(context, 'fio');
  if (missing !== null) {
    recorder.skip(1, randomCase.name, variant, missing);
    return;
  }
  warmFile(randomCase.backing);
  try {
    const result = await runFio({
      paths: [randomCase.path], rw: randomCase.op === 'read' ? 'randread' : 'randwrite',
      blockBytes: BLOCK_BYTES, engine, depth: parallel ? 1 : randomCase.depth, jobsPerFile,
      direct: randomCase.target === 'loop', sizeBytes: options.sizeBytes,
      timing: { durationMs: options.durationMs, warmupMs: options.warmupMs },
    });
    recorder.add({ workload: 1, caseName: randomCase.name, variant, role: 'peer', unit: 'IOPS',
      timer: 'in-process', cache: cacheNote(randomCase) }, result.iops);
  } catch (error) {
    recorder.skip(1, randomCase.name, variant, String(error));
  }
}

/** The Node and dmio variants of a case under `engine`, with their table labels and roles. */
function nodeVariants(
  depth: number, engine: Engine,
): { variant: RandomVariant; label: string; role: Role }[] {
  const tag = ENGINE_LABEL[engine];
  const list: { variant: RandomVariant; label: string; role: Role }[] = [
    { variant: 'fs-cb', label: `node fs cb ${tag}`, role: 'peer' },
    { variant: 'dmio-notify', label: `dmio notify ${tag}`, role: 'dmio' },
    { variant: 'dmio-promise', label: `dmio promise ${tag}`, role: 'dmio' },
    { variant: 'core-thin', label: `dm-io core, thin device ${tag}`, role: 'diagnostic' },
  ];
  if (depth === 1 && engine === 'threadpool') {
    list.push({ variant: 'fs-sync', label: 'node fs sync', role: 'peer' },
      { variant: 'dmio-blocking', label: 'dmio blocking', role: 'dmio' });
  }
  return list;
}

async function runNodeVariants(
  context: BenchContext, randomCase: RandomCase, engine: Engine, rep: number,
): Promise<void> {
  const { options, recorder } = context;
  // One process runs them all, in another order each repetition (`repetitionOrder`).
  const variants = repetitionOrder(nodeVariants(randomCase.depth, engine), rep);
  const jobs: RandomIoJob[] = variants.map(({ variant }) => ({
    kind: 'random-io', variant, path: randomCase.path, direct: randomCase.target === 'loop',
    warmPath: randomCase.backing, op: randomCase.op,
    depth: variant === 'fs-sync' || variant === 'dmio-blocking' ? 1 : randomCase.depth,
    blockBytes: BLOCK_BYTES, spanBytes: options.sizeBytes, warmupMs: options.warmupMs,
    durationMs: options.durationMs, seed: 0x5eed + rep,
  }));
  const results = await runWorker(jobs, engine);
  variants.forEach(({ label, role }, index) => {
    const result = results[index];
    if (result === undefined || isWorkerError(result)) {
      recorder.skip(1, randomCase.name, label, result?.error ?? 'no result');
      return;
    }
    recorder.add({ workload: 1, caseName: randomCase.name, variant: label, role, unit: 'IOPS',
      timer: 'in-process', cache: cacheNote(randomCase) }, (result.ops * 1000) / result.elapsedMs,
    result.cpuUs / result.ops);
  });
}
