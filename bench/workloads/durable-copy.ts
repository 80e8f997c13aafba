// Owns workload 3's durable cases (issue 17): the cached source copied to 1 and to 3 new files,
// each tool timed to the end of its flush. `dmio copy` flushes by default (one command for all
// destinations); the peers make the same copies one after another: `nbdcopy --flush`,
// `qemu-img convert` followed by `sync -f`, and `dd bs=1M conv=fsync`. Figures are MiB/s of
// source data by the wall clock (dmio's Node start-up included); destinations are removed
// before and after each run and the file system synced untimed, as in the other copy cases.

import type { BenchContext } from '../context.js';
import { peerMissing } from '../context.js';
import type { Role } from '../model.js';
import { repetitionOrder } from '../order.js';
import { removeAndSettle, warmFile } from '../page-cache.js';
import { runChecked } from '../proc.js';

const MiB = 1024 * 1024;
const CACHE_NOTE = 'source read whole before each run; destinations removed and the file ' +
  'system synced before and after (untimed); every tool flushes what it wrote';

/** The case name of a durable copy to `targetCount` destinations. */
export function durableCaseName(targetCount: number): string {
  return `durable copy → ${targetCount} dest${targetCount === 1 ? '' : 's'}`;
}

/** The dmio row of the durable cases. */
export const DURABLE_DMIO_VARIANT = 'dmio copy';

interface DurableCopier {
  readonly label: string;
  readonly role: Role;
  /** The commands making every copy, in order, or why they cannot run. */
  commands(source: string, targets: readonly string[]): string[][] | string;
}

function copiers(context: BenchContext): DurableCopier[] {
  const cli = context.dmioCli;
  const each = (command: string, argv: (source: string, target: string) => string[][]) =>
    (source: string, targets: readonly string[]): string[][] | string =>
      peerMissing(context, command) ?? targets.flatMap((target) => argv(source, target));
  return [
    { label: DURABLE_DMIO_VARIANT, role: 'dmio', commands: (source, targets) =>
      'missing' in cli ? cli.missing :
        [[...cli.argv, 'copy', source, ...targets, '--json', '--no-progress']] },
    { label: 'nbdcopy --flush', role: 'peer',
      commands: each('nbdcopy', (s, t) => [['nbdcopy', '--flush', s, t]]) },
    { label: 'qemu-img convert + sync -f', role: 'peer', commands: each('qemu-img', (s, t) =>
      [['qemu-img', 'convert', '-f', 'raw', '-O', 'raw', s, t], ['sync', '-f', t]]) },
    { label: 'dd conv=fsync', role: 'peer', commands: each('dd', (s, t) =>
      [['dd', `if=${s}`, `of=${t}`, 'bs=1M', 'conv=fsync', 'status=none']]) },
  ];
}

/** Runs the durable case to `targetCount` destinations once for every copier. */
export async function runDurableCopyCase(
  context: BenchContext, source: string, targetCount: number, rep: number,
): Promise<void> {
  const caseName = durableCaseName(targetCount);
  const targets = Array.from({ length: targetCount },
    (_, index) => context.resources.file(`w3-durable-${index}.img`));
  for (const copier of repetitionOrder(copiers(context), rep)) {
    const commands = copier.commands(source, targets);
    if (typeof commands === 'string') {
      context.recorder.skip(3, caseName, copier.label, commands);
      continue;
    }
    try {
      const seconds = await timed(source, targets, commands);
      context.recorder.add({ workload: 3, caseName, variant: copier.label, role: copier.role,
        unit: 'MiB/s', timer: 'wall', cache: CACHE_NOTE }, context.options.sizeBytes / MiB / seconds);
    } catch (error) {
      context.recorder.skip(3, caseName, copier.label, String(error));
    }
  }
}

async function timed(
  source: string, targets: readonly string[], commands: readonly string[][],
): Promise<number> {
  warmFile(source);
  await removeAndSettle(targets);
  try {
    const startMs = performance.now();
    for (const [file = '', ...args] of commands) await runChecked(file, args);
    return (performance.now() - startMs) / 1000;
  } finally {
    await removeAndSettle(targets);
  }
}
