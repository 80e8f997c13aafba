// Owns workload 3's sparse case (issue 17): a sparse image of the bench size holding 8 MiB of
// random data (128 pieces of 64 KiB, evenly spread; the rest a hole) copied to one new file by
// `dmio copy` and by the peers that keep holes: `cp --sparse=always`, `nbdcopy` and
// `qemu-img convert -O raw` (both detect 4 KiB zero blocks by default). Each run is timed by the
// wall clock (start-up included, nothing synced, as the dense copy case), and the
// destination's allocated bytes (st_blocks) are recorded as a second case, lower is better.

import fs from 'node:fs';
import { randomFillSync } from 'node:crypto';
import type { BenchContext } from '../context.js';
import { peerMissing } from '../context.js';
import type { Role } from '../model.js';
import { repetitionOrder } from '../order.js';
import { warmFile } from '../page-cache.js';
import { runChecked } from '../proc.js';

const MiB = 1024 * 1024;
const PIECE_BYTES = 64 * 1024;
const PIECES = 128;
const CACHE_NOTE = 'source read whole before each run; destination removed before and after';

/** The case names of the sparse rows (targets.ts finds them by these). */
export const SPARSE_CASES = {
  time: 'sparse image (8 MiB of data) → 1 dest',
  allocated: 'sparse image → 1 dest: allocated',
} as const;

/** The dmio row of the sparse cases. */
export const SPARSE_DMIO_VARIANT = 'dmio copy';

interface SparseCopier {
  readonly label: string;
  readonly role: Role;
  /** The command line, or why it cannot run. */
  argv(source: string, target: string): readonly string[] | string;
}

function copiers(context: BenchContext): SparseCopier[] {
  const cli = context.dmioCli;
  return [
    { label: SPARSE_DMIO_VARIANT, role: 'dmio', argv: (s, t) => 'missing' in cli ? cli.missing :
      [...cli.argv, 'copy', s, t, '--json', '--no-progress', '--no-flush'] },
    { label: 'cp --sparse=always', role: 'peer', argv: (s, t) => peerMissing(context, 'cp') ??
      ['cp', '--sparse=always', '--reflink=never', s, t] },
    { label: 'nbdcopy', role: 'peer', argv: (s, t) => peerMissing(context, 'nbdcopy') ??
      ['nbdcopy', s, t] },
    { label: 'qemu-img convert', role: 'peer', argv: (s, t) => peerMissing(context, 'qemu-img') ??
      ['qemu-img', 'convert', '-f', 'raw', '-O', 'raw', s, t] },
  ];
}

/** Runs the sparse case of workload 3 (one run of each copier per repetition). */
export async function runSparseCopyCase(context: BenchContext, rep: number): Promise<void> {
  const source = sparseImage(context);
  const target = context.resources.file('w3-sparse-dest.img');
  for (const copier of repetitionOrder(copiers(context), rep)) {
    const argv = copier.argv(source, target);
    if (typeof argv === 'string') {
      for (const caseName of Object.values(SPARSE_CASES)) {
        context.recorder.skip(3, caseName, copier.label, argv);
      }
      continue;
    }
    await timeCopy(context, copier, argv, source, target);
  }
}

async function timeCopy(
  context: BenchContext, copier: SparseCopier, argv: readonly string[], source: string,
  target: string,
): Promise<void> {
  const [file = '', ...args] = argv;
  warmFile(source);
  fs.rmSync(target, { force: true });
  try {
    const startMs = performance.now();
    await runChecked(file, args);
    const seconds = (performance.now() - startMs) / 1000;
    const allocatedMiB = fs.statSync(target).blocks * 512 / MiB;
    const sizeMiB = context.options.sizeBytes / MiB;
    context.recorder.add({ workload: 3, caseName: SPARSE_CASES.time, variant: copier.label,
      role: copier.role, unit: 'MiB/s', timer: 'wall', cache: CACHE_NOTE }, sizeMiB / seconds);
    context.recorder.add({ workload: 3, caseName: SPARSE_CASES.allocated, variant: copier.label,
      role: copier.role, unit: 'MiB', timer: 'wall', cache: CACHE_NOTE }, allocatedMiB);
  } catch (error) {
    for (const caseName of Object.values(SPARSE_CASES)) {
      context.recorder.skip(3, caseName, copier.label, String(error));
    }
  } finally {
    fs.rmSync(target, { force: true });
  }
}

/** The sparse source, made once per run: the bench size, PIECES pieces of random data. */
function sparseImage(context: BenchContext): string {
  const file = context.resources.file('w3-sparse-source.img');
  if (fs.existsSync(file)) return file;
  const sizeBytes = context.options.sizeBytes;
  const strideBytes = Math.max(PIECE_BYTES, Math.floor(sizeBytes / PIECES / PIECE_BYTES) * PIECE_BYTES);
  const fd = fs.openSync(file, 'w');
  try {
    fs.ftruncateSync(fd, sizeBytes);
    const piece = Buffer.alloc(PIECE_BYTES);
    for (let at = 0; at + PIECE_BYTES <= sizeBytes && at / strideBytes < PIECES; at += strideBytes) {
      randomFillSync(piece);
      fs.writeSync(fd, piece, 0, PIECE_BYTES, at);
    }
  } finally {
    fs.closeSync(fd);
  }
  return file;
}
