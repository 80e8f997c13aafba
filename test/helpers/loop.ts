// Owns loop devices for tests. `withLoopDevice` attaches an image file with `losetup -f --show`
// and always detaches it afterwards, whatever `fn` did. Loop devices need root and
// /dev/loop-control: `requireLoopOrSkip` skips a test without them, except where CI=true, where
// a missing loop device is a failure (CI must run these tests, not silently skip them).

import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import type { TestContext } from 'node:test';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

/** Options for `withLoopDevice`. */
export interface LoopOptions {
  /** Logical block size of the loop device (`--sector-size`); default 512. */
  readonly sectorSize?: 512 | 4096;
  /** Attach read-only (`-r`). */
  readonly readOnly?: boolean;
}

/** Why loop devices cannot be used here, or null when they can. */
export function loopUnavailableReason(): string | null {
  if (process.platform !== 'linux') return `loop devices need Linux, not ${process.platform}`;
  if (process.getuid?.() !== 0) return 'loop devices need root';
  if (!existsSync('/dev/loop-control')) return '/dev/loop-control is missing';
  try {
    execFileSync('losetup', ['--version'], { stdio: 'ignore' });
  } catch {
    return 'losetup is not installed';
  }
  return null;
}

/** True when this process can attach loop devices. */
export function loopAvailable(): boolean {
  return loopUnavailableReason() === null;
}

/**
 * Returns true when the test may use loop devices. Otherwise skips `t` with the reason and
 * returns false, or, where `CI=true`, fails the test.
 */
export function requireLoopOrSkip(t: TestContext): boolean {
  const reason = loopUnavailableReason();
  if (reason === null) return true;
  if (process.env.CI === 'true') assert.fail(`CI must run loop-device tests: ${reason}`);
  t.skip(reason);
  return false;
}

/** The same gate for tests that need root but no loop device. */
export function requireRootOrSkip(t: TestContext): boolean {
  if (process.getuid?.() === 0) return true;
  if (process.env.CI === 'true') assert.fail('CI must run root tests as root');
  t.skip('needs root');
  return false;
}

/** Attaches `imagePath` as a loop device and returns its path; pair with `detachLoop`. */
export async function attachLoop(imagePath: string, options: LoopOptions = {}): Promise<string> {
  const args = ['-f', '--show'];
  if (options.sectorSize !== undefined) args.push('--sector-size', String(options.sectorSize));
  if (options.readOnly === true) args.push('-r');
  args.push(imagePath);
  const { stdout } = await execFileAsync('losetup', args);
  const devicePath = stdout.trim();
  assert.match(devicePath, /^\/dev\/loop\d+$/, `losetup printed ${JSON.stringify(stdout)}`);
  return devicePath;
}

/** Detaches a loop device attached by `attachLoop`. */
export async function detachLoop(devicePath: string): Promise<void> {
  await execFileAsync('losetup', ['-d', devicePath]);
}

/** Attaches `imagePath` as a loop device, runs `fn` with its path, then detaches it. */
export async function withLoopDevice<T>(
  imagePath: string, options: LoopOptions, fn: (devicePath: string) => Promise<T>,
): Promise<T> {
  const devicePath = await attachLoop(imagePath, options);
  try {
    return await fn(devicePath);
  } finally {
    await detachLoop(devicePath);
  }
}
