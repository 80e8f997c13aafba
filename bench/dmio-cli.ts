// Owns building dist/ and finding the `dmio` CLI. Workers and the CLI run the compiled dist/
// (as a user runs it), never src/ through tsx, whose loader would add time and resident memory
// to every figure; `buildDist` builds it (`npm run build`) before any workload, and
// `locateDmioCli` checks that `dmio copy --help` works, saying what is missing if not. The CLI
// is executed as a user's shell executes it (bin/dmio.js itself, through its `#!` line).

import fs from 'node:fs';
import path from 'node:path';
import type { DmioCli } from './context.js';
import { REPO_ROOT, runCommand } from './proc.js';

/**
 * Builds dist/ with `npm run build` (tsc, then the CLI's one-file bundle), so neither the
 * workers nor the CLI run a stale build. Returns null on success, else what went wrong.
 */
export async function buildDist(log: (line: string) => void): Promise<string | null> {
  log('building dist/ (npm run build): the bench measures the compiled library and CLI');
  const build = await runCommand('npm', ['run', '--silent', 'build']);
  if (build.exitCode !== 0) {
    return `building dist/ failed: ${(build.stdout + build.stderr).trim().slice(0, 300)}`;
  }
  return null;
}

/** Returns how to run the built `dmio`, or why it cannot run (dist/ is built by the caller). */
export async function locateDmioCli(): Promise<DmioCli> {
  const bin = path.join(REPO_ROOT, 'bin', 'dmio.js');
  if (!fs.existsSync(bin)) return { missing: 'the dmio CLI is not built (no bin/dmio.js)' };
  const argv = [bin];
  const probe = await runCommand(bin, ['copy', '--help']);
  if (probe.exitCode !== 0) {
    const why = `${String(probe.exitCode)}: ${probe.stderr.trim().slice(0, 200)}`;
    return { missing: `dmio copy --help exited ${why}` };
  }
  return { argv };
}
