// Owns running other programs: a peer command timed by its wall clock, and a bench worker (a
// child `node` that runs dmio or plain-`fs` jobs) started with the environment a variant needs.
// libuv reads UV_USE_IO_URING once, at process start, so every engine setting is its own child.

import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import type { WorkerJob, WorkerResult } from './workers/jobs.js';

/** The repository root (bench/ lives directly under it). */
export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** How a child's output and exit looked. */
export interface CommandResult {
  /** Exit code, or null when a signal ended it. */
  readonly exitCode: number | null;
  readonly stdout: string;
  readonly stderr: string;
  /** From spawn to exit, in milliseconds. */
  readonly wallMs: number;
}

/** Options of `runCommand`. */
export interface RunOptions {
  /** Variables added to this process's environment. */
  readonly env?: Readonly<Record<string, string>>;
  /** Kill the child after this long (default 15 minutes). */
  readonly timeoutMs?: number;
}

const COMMAND_TIMEOUT_MS_DEFAULT = 15 * 60 * 1000;

/** Runs `file` with `args` and resolves when it exits; never rejects on a non-zero exit. */
export function runCommand(
  file: string, args: readonly string[], options: RunOptions = {},
): Promise<CommandResult> {
  return new Promise((resolve, reject) => {
    const startMs = performance.now();
    const child = spawn(file, args, {
      cwd: REPO_ROOT, env: { ...process.env, ...options.env }, stdio: ['ignore', 'pipe', 'pipe'],
    });
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    child.stdout.on('data', (chunk: Buffer) => stdout.push(chunk));
    child.stderr.on('data', (chunk: Buffer) => stderr.push(chunk));
    const timer = setTimeout(() => child.kill('SIGKILL'),
      options.timeoutMs ?? COMMAND_TIMEOUT_MS_DEFAULT);
    child.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.on('close', (exitCode) => {
      clearTimeout(timer);
      resolve({
        exitCode, stdout: Buffer.concat(stdout).toString('utf8'),
        stderr: Buffer.concat(stderr).toString('utf8'), wallMs: performance.now() - startMs,
      });
    });
  });
}

/** Runs a command and throws, with its stderr, unless it exits 0. */
export async function runChecked(
  file: string, args: readonly string[], options: RunOptions = {},
): Promise<CommandResult> {
  const result = await runCommand(file, args, options);
  if (result.exitCode !== 0) {
    throw new Error(`${file} ${args.join(' ')} exited ${String(result.exitCode)}: ` +
      result.stderr.trim().slice(0, 2000));
  }
  return result;
}

/** The libuv file-I/O engine a worker runs under. */
export type Engine = 'threadpool' | 'uring';

/** Short names used in variant labels. */
export const ENGINE_LABEL: Readonly<Record<Engine, string>> = { threadpool: 'def', uring: 'uring' };

/**
 * Runs `jobs` in one child `node` whose libuv uses `engine`, one after another, and returns one
 * result per job in order. A job that failed comes back with `error` set; a crashed child
 * turns every job without a result into an error.
 */
export async function runWorker(
  jobs: readonly WorkerJob[], engine: Engine,
): Promise<WorkerResult[]> {
  const script = path.join(REPO_ROOT, 'bench', 'workers', 'main.ts');
  const args = ['--import', 'tsx', script, JSON.stringify(jobs)];
  const result = await runCommand(process.execPath, args, {
    env: { UV_USE_IO_URING: engine === 'uring' ? '1' : '0' },
  });
  const results: WorkerResult[] = [];
  for (const line of result.stdout.split('\n')) {
    if (line.startsWith('{')) results.push(JSON.parse(line) as WorkerResult);
  }
  const why = `worker exited ${String(result.exitCode)}: ${result.stderr.trim().slice(-800)}`;
  while (results.length < jobs.length) results.push({ error: why });
  return results;
}
