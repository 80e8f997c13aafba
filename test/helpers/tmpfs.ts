// Owns small scratch mounts for tests: a tmpfs for a file system that runs out of space, or
// another kind (ramfs) for behaviour that depends on the file system. Each one is mounted on a
// fresh directory and unmounted and removed when the test ends. Mounting needs root: without
// it the test is skipped, except where CI=true, where it fails.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { requireRootOrSkip } from './loop.js';

/** Mounts a tmpfs of `sizeMiB` on a fresh directory for test `t`; null when skipped. */
export function mountSmallTmpfs(t: TestContext, sizeMiB: number): string | null {
  return mountScratch(t, 'tmpfs', ['-o', `size=${sizeMiB}m`]);
}

/** Mounts a file system of `fsType` (no device) on a fresh directory for `t`; null when skipped. */
export function mountScratch(
  t: TestContext, fsType: 'tmpfs' | 'ramfs', options: readonly string[] = [],
): string | null {
  if (!requireRootOrSkip(t)) return null;
  const dir = mkdtempSync(join(tmpdir(), `dmio-${fsType}-`));
  const mounted = spawnSync('mount', ['-t', fsType, ...options, fsType, dir]);
  if (mounted.status !== 0) rmdirSync(dir);
  assert.equal(mounted.status, 0, mounted.stderr?.toString());
  t.after(() => {
    spawnSync('umount', [dir]);
    rmdirSync(dir);
  });
  return dir;
}
