// Owns workload 5: the peak resident memory of `dmio copy` for a small and a large copy
// (256 MiB and 4 GiB by default), measured by GNU time (`/usr/bin/time -v`, "Maximum resident
// set size"). The source is a sparse file (reads return zeroes at page-cache speed, so a 4 GiB
// source needs no disk); the destination is a new file, removed afterwards. An empty `node`
// process is measured too, as the floor every Node program starts from.

import fs from 'node:fs';
import type { BenchContext } from '../context.js';
import { peerMissing } from '../context.js';
import type { Role } from '../model.js';
import { runChecked } from '../proc.js';

const TIME = '/usr/bin/time';
const CACHE_NOTE = 'sparse source; destination removed after each run';

/** The case name used in the table and by the targets. */
export function rssCaseName(sizeBytes: number): string {
  if (sizeBytes >= 2 ** 30) return `copy ${sizeBytes / 2 ** 30} GiB`;
  return `copy ${sizeBytes / 2 ** 20} MiB`;
}

/** Runs workload 5. */
export async function runRssWorkload(context: BenchContext): Promise<void> {
  const { options, resources, recorder } = context;
  const missing = peerMissing(context, TIME);
  for (let rep = 0; rep < options.reps; rep += 1) {
    recorder.note(`w5 repetition ${rep + 1}/${options.reps}`);
    for (const sizeBytes of options.rssSizesBytes) {
      const caseName = rssCaseName(sizeBytes);
      if (missing !== null) {
        recorder.skip(5, caseName, 'dmio copy', missing);
        continue;
      }
      const record = (variant: string, role: Role, rssMiB: number): void =>
        recorder.add({ workload: 5, caseName, variant, role, unit: 'MiB', timer: 'wall',
          cache: CACHE_NOTE }, rssMiB);
      record('node -e 0 (floor)', 'diagnostic', await peakRssMiB([process.execPath, '-e', '0']));
      if ('missing' in context.dmioCli) {
        recorder.skip(5, caseName, 'dmio copy', context.dmioCli.missing);
        continue;
      }
      const source = resources.file(`w5-source-${sizeBytes}.img`);
      const target = resources.file('w5-dest.img');
      fs.writeFileSync(source, '');
      fs.truncateSync(source, sizeBytes);
      try {
        const argv = [...context.dmioCli.argv, 'copy', source, target, '--no-progress'];
        record('dmio copy', 'dmio', await peakRssMiB(argv));
      } catch (error) {
        recorder.skip(5, caseName, 'dmio copy', String(error));
      } finally {
        fs.rmSync(target, { force: true });
        fs.rmSync(source, { force: true });
      }
    }
  }
}

/** Runs `argv` under GNU time and returns its peak RSS in MiB. */
async function peakRssMiB(argv: readonly string[]): Promise<number> {
  const result = await runChecked(TIME, ['-v', ...argv]);
  const match = /Maximum resident set size \(kbytes\): (\d+)/.exec(result.stderr);
  if (match === null) throw new Error(`no RSS in time -v output: ${result.stderr.slice(-300)}`);
  return Number(match[1]) / 1024;
}
