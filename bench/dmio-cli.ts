// Owns finding the `dmio` CLI for workloads 3-5. The CLI runs from the compiled `dist/` (as a
// user runs it), never through tsx, whose loader would add startup time and resident memory
// to every figure. So the bench compiles the library first (`tsc -p tsconfig.build.json`),
// then checks that `dmio copy --help` works; if anything is missing it says what.

import fs from 'node:fs';
import path from 'node:path';
import type { DmioCli } from './context.js';
import { REPO_ROOT, runCommand } from './proc.js';

/** Builds dist/ and returns how to run `dmio`, or why it cannot run. */
export async function locateDmioCli(log: (line: string) => void): Promise<DmioCli> {
  const bin = path.join(REPO_ROOT, 'bin', 'dmio.js');
  if (!fs.existsSync(bin)) return { missing: 'the dmio CLI is not merged yet (no bin/dmio.js)' };
  log('building dist/ for the dmio CLI (tsc -p tsconfig.build.json)');
  const tsc = path.join(REPO_ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
  const build = await runCommand(process.execPath, [tsc, '-p', 'tsconfig.build.json']);
  if (build.exitCode !== 0) {
    const output = (build.stdout + build.stderr).trim().slice(0, 300);
    return { missing: `building dist/ failed: ${output}` };
  }
  const argv = [process.execPath, bin];
  const probe = await runCommand(process.execPath, [bin, 'copy', '--help']);
  if (probe.exitCode !== 0) {
    const why = `${String(probe.exitCode)}: ${probe.stderr.trim().slice(0, 200)}`;
    return { missing: `dmio copy --help exited ${why}` };
  }
  return { argv };
}
