// Owns workload 2: write the data size sequentially in 1 MiB pieces to 3 files at once. dmio
// issues one 3-region `dmIo` per piece; the peers are fio (one job per file, in one group),
// three `dd` runs one after another and three at once, and plain Node with one callback
// `fs.write` per file. The files exist at full size; before each run their dirty pages are
// written back (fdatasync), so every run overwrites cached, clean pages and inherits no
// writeback. No run includes an fsync. Figures are MiB/s of source data (size / time).

import type { BenchContext } from '../context.js';
import { peerMissing } from '../context.js';
import { runFio } from '../fio.js';
import type { Role, Timer } from '../model.js';
import { flushFile } from '../page-cache.js';
import { repetitionOrder } from '../order.js';
import { ENGINE_LABEL, runChecked, runWorker, type Engine } from '../proc.js';
import { isWorkerError } from '../workers/jobs.js';

const CHUNK_BYTES = 1024 * 1024;
const MIRRORS = 3;
/** Pieces in flight for dmio, Node and fio io_uring. */
const DEPTH = 8;
const CACHE_NOTE = 'targets cached and clean (fdatasync before each run); no fsync timed';

const MIRROR_LABELS = {
  'dmio': (tag: string) => `dmio 3-region dmIo, kmem ${tag}`,
  'dmio-bvec': (tag: string) => `dmio 3-region dmIo, one bvec ${tag}`,
  'fs-cb': (tag: string) => `node fs cb ×3 ${tag}`,
} as const;

/** The case name used in the table and by the targets. */
export const MIRROR_CASE = `1M seq write → ${MIRRORS} files`;

/** Runs workload 2. */
export async function runMirrorWriteWorkload(context: BenchContext): Promise<void> {
  const { options, resources, recorder } = context;
  const paths = Array.from({ length: MIRRORS },
    (_, index) => resources.dataFile(`w2-mirror-${index}.img`, options.sizeBytes));
  const sizeMiB = options.sizeBytes / CHUNK_BYTES;
  const record = (
    variant: string, role: Role, timer: Timer, seconds: number, cpuUs: number | null = null,
  ): void =>
    recorder.add({ workload: 2, caseName: MIRROR_CASE, variant, role, unit: 'MiB/s', timer,
      cache: CACHE_NOTE }, sizeMiB / seconds, cpuUs === null ? null : cpuUs / sizeMiB);
  const prepare = (): void => paths.forEach(flushFile);
  for (let rep = 0; rep < options.reps; rep += 1) {
    recorder.note(`w2 repetition ${rep + 1}/${options.reps}`);
    const runners: Array<() => Promise<void>> = [
      () => runDdVariants(context, paths, prepare, record),
      () => runFioVariants(context, paths, prepare, record),
      ...options.engines.flatMap((engine) => (['dmio', 'dmio-bvec', 'fs-cb'] as const).map(
        (variant) => () => runNodeVariant(context, paths, engine, variant, prepare, record))),
    ];
    // Another order each repetition (`repetitionOrder`).
    for (const runner of repetitionOrder(runners, rep)) await runner();
  }
}

type RecordFn = (
  variant: string, role: Role, timer: Timer, seconds: number, cpuUs?: number | null,
) => void;

async function runNodeVariant(
  context: BenchContext, paths: readonly string[], engine: Engine,
  variant: keyof typeof MIRROR_LABELS, prepare: () => void, record: RecordFn,
): Promise<void> {
  const { options, recorder } = context;
  const label = MIRROR_LABELS[variant](ENGINE_LABEL[engine]);
  prepare();
  const [result] = await runWorker([{ kind: 'mirror-write', variant, paths,
    sizeBytes: options.sizeBytes, chunkBytes: CHUNK_BYTES, depth: DEPTH }], engine);
  if (result === undefined || isWorkerError(result)) {
    recorder.skip(2, MIRROR_CASE, label, result?.error ?? 'no result');
  } else {
    record(label, variant === 'fs-cb' ? 'peer' : 'dmio', 'in-process', result.elapsedMs / 1000,
      result.cpuUs);
  }
}

async function runDdVariants(
  context: BenchContext, paths: readonly string[], prepare: () => void, record: RecordFn,
): Promise<void> {
  const missing = peerMissing(context, 'dd');
  if (missing !== null) {
    context.recorder.skip(2, MIRROR_CASE, 'dd ×3', missing);
    return;
  }
  const count = String(context.options.sizeBytes / CHUNK_BYTES);
  const dd = (path: string): Promise<unknown> => runChecked('dd', ['if=/dev/zero', `of=${path}`,
    'bs=1M', `count=${count}`, 'conv=notrunc', 'status=none']);
  prepare();
  let startMs = performance.now();
  for (const path of paths) await dd(path);
  record('dd ×3 one after another', 'peer', 'wall', (performance.now() - startMs) / 1000);
  prepare();
  startMs = performance.now();
  await Promise.all(paths.map(dd));
  record('dd ×3 at once', 'peer', 'wall', (performance.now() - startMs) / 1000);
}

async function runFioVariants(
  context: BenchContext, paths: readonly string[], prepare: () => void, record: RecordFn,
): Promise<void> {
  for (const engine of ['io_uring', 'psync']) {
    const variant = `fio ${engine} 3 jobs`;
    const missing = peerMissing(context, 'fio');
    if (missing !== null) {
      context.recorder.skip(2, MIRROR_CASE, variant, missing);
      continue;
    }
    prepare();
    try {
      const result = await runFio({ paths, rw: 'write', blockBytes: CHUNK_BYTES, engine,
        depth: engine === 'psync' ? 1 : DEPTH, jobsPerFile: 1, direct: false,
        sizeBytes: context.options.sizeBytes, timing: null });
      record(variant, 'peer', 'in-process', result.runtimeMs / 1000);
    } catch (error) {
      context.recorder.skip(2, MIRROR_CASE, variant, String(error));
    }
  }
}
