// Owns temporary directories for tests: each one is created fresh and removed, with everything
// in it, when the test that asked for it ends (pass or fail).

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestContext } from 'node:test';

/** Where a temporary directory lives: the default disk-backed tmp, or tmpfs. */
export interface TempDirOptions {
  /** Parent directory; `/dev/shm` gives a tmpfs directory. Default: `os.tmpdir()`. */
  readonly parent?: string;
}

/** A fresh directory removed after the test `t` finishes. */
export async function tempDir(t: TestContext, options: TempDirOptions = {}): Promise<string> {
  const directory = await mkdtemp(join(options.parent ?? tmpdir(), 'dmio-test-'));
  t.after(() => rm(directory, { recursive: true, force: true }));
  return directory;
}

/** Runs `fn` with a fresh directory and removes the directory afterwards. */
export async function withTempDir<T>(
  fn: (directory: string) => Promise<T>, options: TempDirOptions = {},
): Promise<T> {
  const directory = await mkdtemp(join(options.parent ?? tmpdir(), 'dmio-test-'));
  try {
    return await fn(directory);
  } finally {
    await rm(directory, { recursive: true, force: true });
  }
}
