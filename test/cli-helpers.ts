// Owns running `dmio` in tests. `runDmio` calls `main(argv, deps)` in-process with captured
// streams, a private signal emitter and, when asked, devices wrapped in the public FaultDevice
// or a gate before --verify's read-back: most CLI tests pin behaviour this way. What needs a
// real process (signals, closed or odd stdout descriptors, exit statuses of the process, the
// `#!` start) runs the built binary with `runDmioProcess` (`npm run build` first; the bin is
// package.json's `bin.dmio`). Also hashes files and device ranges.

import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { readFileSync } from 'node:fs';
import { PassThrough, Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { createRandomDevice } from '../src/index.js';
import { createFaultDevice, type FaultSpec } from '../src/testing.js';
import { main, type CliDeps } from '../src/cli/main.js';

/** The built binary (package.json's `bin.dmio`), for tests that need a process. */
export const DMIO_BIN = fileURLToPath(new URL(`../${(JSON.parse(readFileSync(
  new URL('../package.json', import.meta.url), 'utf8')) as { bin: { dmio: string } }).bin.dmio}`,
import.meta.url));

/** What a run produced. */
export interface CliRun {
  readonly status: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Options of `runDmio` (in-process). */
export interface MainOptions {
  /** Bytes on stdin (default: an empty stdin). */
  readonly input?: Uint8Array | string;
  /** Faults by device spec: each device opened from that spec is wrapped in a FaultDevice. */
  readonly faults?: Readonly<Record<string, FaultSpec>>;
  /** Awaited before --verify reads the destinations back (a test corrupts one here). */
  readonly beforeVerify?: () => Promise<void>;
  /** Signals to deliver to the run: emit 'SIGINT' etc. on it. */
  readonly signals?: EventEmitter;
  /** Wraps every opened device (after `faults`, which it replaces when both are given). */
  readonly wrapDevice?: CliDeps['wrapDevice'];
}

/** Runs `main(args, deps)` in-process and resolves with its status and captured output. */
export async function runDmio(args: readonly string[], options: MainOptions = {}): Promise<CliRun> {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  stdout.on('data', (chunk: Buffer) => out.push(chunk));
  stderr.on('data', (chunk: Buffer) => err.push(chunk));
  const faults = options.faults;
  const deps: CliDeps = {
    stdin: Readable.from(options.input === undefined ? [] : [Buffer.from(options.input)]),
    stdout, stderr,
    signals: options.signals ?? new EventEmitter(),
    exit: (status) => {
      throw new Error(`dmio asked to exit at once with ${status}`);
    },
    ...(faults === undefined ? {} : {
      wrapDevice: (device, spec) => {
        const spec_ = faults[spec];
        return spec_ === undefined ? device : createFaultDevice(device, { ...spec_, name: spec });
      },
    }),
    ...(options.wrapDevice === undefined ? {} : { wrapDevice: options.wrapDevice }),
    ...(options.beforeVerify === undefined ? {} : { beforeVerify: options.beforeVerify }),
  };
  const status = await main(args, deps);
  return {
    status, stdout: Buffer.concat(out).toString('utf8'),
    stderr: Buffer.concat(err).toString('utf8'),
  };
}

/** Options of `runDmioProcess`. */
export interface RunOptions {
  readonly cwd?: string;
  readonly env?: Record<string, string>;
  readonly input?: Uint8Array | string;
  /** Called with the child once it runs (signal tests drive it from here). */
  readonly onSpawn?: (child: ChildProcess) => void;
  /** Execute the bin itself (its `#!` line) rather than `node BIN`. */
  readonly executed?: boolean;
}

/** Spawns the built `dmio` (`node BIN ...args`, or the file itself) and resolves when it exits. */
export function runDmioProcess(args: readonly string[], options: RunOptions = {}):
Promise<CliRun> {
  return new Promise((resolve, reject) => {
    const [program, argv] = options.executed === true ? [DMIO_BIN, args] :
      [process.execPath, [DMIO_BIN, ...args]];
    const child = spawn(program, argv, {
      cwd: options.cwd,
      env: { ...process.env, ...options.env },
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
