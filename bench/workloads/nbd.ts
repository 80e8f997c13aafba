// Owns workload 4: read and write a whole nbdkit memory export (Unix socket only) through
// dmio's NBD device, against nbdcopy. The export is filled with random bytes first (so no side
// can skip holes or zeroes), untimed. Reads: nbdcopy to `null:` vs dmio reading into reused
// memory (a worker calling `dmIo`) and `dmio copy` to `null:`. Writes: nbdcopy from a cached
// random file vs `dmio copy` from the same file, and a worker calling `dmIo` from memory (it
// has no file to read, which favours dmio by about 0.1 s per GiB; the label says so). Figures
// are MiB/s.

import type { BenchContext } from '../context.js';
import { peerMissing } from '../context.js';
import type { Role, Timer } from '../model.js';
import { warmFile } from '../page-cache.js';
import { repetitionOrder } from '../order.js';
import { ENGINE_LABEL, runChecked, runWorker, type Engine } from '../proc.js';
import { isWorkerError } from '../workers/jobs.js';

const CHUNK_BYTES = 1024 * 1024;
/** dmio requests in flight; nbdcopy's own default keeps 64 × 256 KiB per connection. */
const DEPTH = 16;

/** Runs workload 4. */
export async function runNbdWorkload(context: BenchContext): Promise<void> {
  const { options, resources, recorder } = context;
  const missing = peerMissing(context, 'nbdkit');
  if (missing !== null) {
    recorder.skip(4, 'NBD read', 'all', missing);
    return;
  }
  const source = resources.dataFile('w4-source.img', options.sizeBytes);
  const uri = await resources.nbdkitMemory('w4', options.sizeBytes);
  if (peerMissing(context, 'nbdcopy') === null) await runChecked('nbdcopy', [source, uri]);
  else recorder.note('  w4: nbdcopy missing, export filled by dmio write only');
  for (let rep = 0; rep < options.reps; rep += 1) {
    recorder.note(`w4 repetition ${rep + 1}/${options.reps}`);
    for (const op of ['write', 'read'] as const) await runNbdCase(context, op, source, uri, rep);
  }
}

/** Runs every variant of a case once, in another order each repetition (`repetitionOrder`). */
async function runNbdCase(
  context: BenchContext, op: 'read' | 'write', source: string, uri: string, rep: number,
): Promise<void> {
  const { options, recorder } = context;
  const caseName = `NBD ${op} (nbdkit memory, Unix socket)`;
  const cache = op === 'read' ? 'export in nbdkit memory' :
    'source file read whole before each run';
  const sizeMiB = options.sizeBytes / CHUNK_BYTES;
  const record = (
    variant: string, role: Role, timer: Timer, seconds: number, cpuUs: number | null = null,
  ): void => recorder.add({ workload: 4, caseName, variant, role, unit: 'MiB/s', timer, cache },
    sizeMiB / seconds, cpuUs === null ? null : cpuUs / sizeMiB);
  const [from, to] = op === 'read' ? [uri, 'null:'] : [source, uri];
  const programs: { label: string; role: Role; argv: readonly string[] | string }[] = [
    {
      label: 'nbdcopy', role: 'peer',
      argv: peerMissing(context, 'nbdcopy') ?? ['nbdcopy', from, to],
    },
    {
      label: 'dmio copy', role: 'dmio',
      argv: 'missing' in context.dmioCli ? context.dmioCli.missing : [...context.dmioCli.argv,
        'copy', from, op === 'read' ? `null:${options.sizeBytes}` : to, '--no-progress'],
    },
  ];
  const runProgram = async (program: (typeof programs)[number]): Promise<void> => {
    if (typeof program.argv === 'string') {
      recorder.skip(4, caseName, program.label, program.argv);
      return;
    }
    const [file = '', ...args] = program.argv;
    if (op === 'write') warmFile(source);
    try {
      const startMs = performance.now();
      await runChecked(file, args);
      record(program.label, program.role, 'wall', (performance.now() - startMs) / 1000);
    } catch (error) {
      recorder.skip(4, caseName, program.label, String(error));
    }
  };
  const runDmIo = async (engine: Engine): Promise<void> => {
    const label = `dmIo ${op} ${op === 'read' ? 'to' : 'from'} memory ${ENGINE_LABEL[engine]}`;
    const [result] = await runWorker([{ kind: 'nbd-stream', op, uri, sizeBytes: options.sizeBytes,
      chunkBytes: CHUNK_BYTES, depth: DEPTH }], engine);
    if (result === undefined || isWorkerError(result)) {
      recorder.skip(4, caseName, label, result?.error ?? 'no result');
    } else {
      record(label, 'dmio', 'in-process', result.elapsedMs / 1000, result.cpuUs);
    }
  };
  const runners: Array<() => Promise<void>> = [
    ...programs.map((program) => () => runProgram(program)),
    ...options.engines.map((engine) => () => runDmIo(engine)),
  ];
  for (const runner of repetitionOrder(runners, rep)) await runner();
}
