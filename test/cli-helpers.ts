// Owns running the real `dmio` binary in tests: spawn bin/dmio.cjs (forced onto the TypeScript
// source, so a stale dist/ is never what is tested), collect stdout, stderr and the exit
// status, and hash files and device ranges.

import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { createRandomDevice } from '../src/devices/pattern-devices.js';

/** The binary under test. */
export const DMIO_BIN = fileURLToPath(new URL(`../${(JSON.parse(readFileSync(
  new URL('../package.json', import.meta.url), 'utf8')) as { bin: { dmio: string } }).bin.dmio}`,
import.meta.url));

/** What a run of the binary produced. */
export interface CliRun {
  readonly status: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Options of `runDmio`. */
export interface RunOptions {
  readonly cwd?: string;
  readonly env?: Record<string, string>;
  readonly input?: Uint8Array | string;
  /** Called with the child once it runs (the verify gate test drives stdin from here). */
  readonly onSpawn?: (child: ChildProcess) => void;
  /** Execute bin/dmio.cjs itself (its `#!` line and launcher) rather than `node bin/dmio.cjs`. */
  readonly executed?: boolean;
}

/** Spawns `node bin/dmio.cjs ...args` (or the file itself) and resolves when it exits. */
export function runDmio(args: readonly string[], options: RunOptions = {}): Promise<CliRun> {
  return new Promise((resolve, reject) => {
    const [program, argv] = options.executed === true ? [DMIO_BIN, args] :
      [process.execPath, [DMIO_BIN, ...args]];
    const child = spawn(program, argv, {
      cwd: options.cwd,
      env: { ...process.env, DMIO_CLI_FROM_SOURCE: '1', ...options.env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (text: string) => { stdout += text; });
    child.stderr.setEncoding('utf8').on('data', (text: string) => { stderr += text; });
    child.on('error', reject);
    child.on('close', (status) => resolve({ status, stdout, stderr }));
    options.onSpawn?.(child);
    if (options.onSpawn === undefined) child.stdin.end(options.input ?? '');
  });
}

/** sha256 of a whole file, or of `lengthBytes` from `offsetBytes`. */
export function fileHash(path: string, offsetBytes = 0, lengthBytes?: number): string {
  const bytes = readFileSync(path);
  const end = lengthBytes === undefined ? bytes.length : offsetBytes + lengthBytes;
  return createHash('sha256').update(bytes.subarray(offsetBytes, end)).digest('hex');
}

/** sha256 of the bytes `random:SIZE,seed=N` holds in `[offsetBytes, offsetBytes + lengthBytes)`. */
export function randomHash(seed: number, sizeBytes: number, offsetBytes: number,
  lengthBytes: number): string {
  const device = createRandomDevice({ sizeBytes, seed });
  const bytes = new Uint8Array(lengthBytes);
  const error = device.submitSync({
    op: 'read', sector: offsetBytes / 512, countSectors: lengthBytes / 512, segments: [bytes],
    ioprio: 0, flags: { sync: false, preflush: false, fua: false },
  });
  if (error !== null) throw error;
  return createHash('sha256').update(bytes).digest('hex');
}

/** Parses the one JSON object a `--json` run prints. */
export function jsonOf(run: CliRun): Record<string, unknown> {
  const lines = run.stdout.trim().split('\n');
  if (lines.length !== 1) throw new Error(`expected one line of JSON, got: ${run.stdout}`);
  return JSON.parse(lines[0]!) as Record<string, unknown>;
}
