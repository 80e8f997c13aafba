// Owns what the CLI takes from the process it runs in: standard streams (and the descriptors
// behind them, for the checks that must look at the real file: stdout as a block device, stdin
// as a destination), signals and the way out on a second one. `main(argv, deps)` receives these
// as `CliDeps`; anything left out is the process's own. Tests inject streams, a device wrapper
// (the public FaultDevice) and a gate before verify's read-back here, in-process: the shipped
// code reads no environment variable to find test hooks.

import type { Readable, Writable } from 'node:stream';
import type { BlockDevice } from '../index.js';

/** The signals the CLI listens for. */
export type CliSignal = 'SIGINT' | 'SIGTERM' | 'SIGUSR1';

/** Where the CLI listens for signals: `process`, or an emitter a test drives. */
export interface CliSignals {
  on(signal: CliSignal, listener: () => void): unknown;
  off(signal: CliSignal, listener: () => void): unknown;
}

/**
 * What `main` takes from its surroundings; every field defaults to the process's own.
 *
 * @example
 * const stdout = new PassThrough();
 * const status = await main(['info', 'mem:1M', '--json'], { stdout });
 */
export interface CliDeps {
  /** Read by `copy -` and `write` without --input. A stream without an `fd` is read as a stream. */
  readonly stdin?: Readable;
  /** Reports and data. Without a numeric `fd`, descriptor checks on stdout are skipped. */
  readonly stdout?: Writable;
  /** Messages and progress. */
  readonly stderr?: Writable;
  /**
   * Called with every device the CLI opens, with the spec it was opened from; returns the device
   * to use in its place (a test wraps one destination in `createFaultDevice`). The returned
   * device is closed in place of the one given.
   */
  readonly wrapDevice?: (device: BlockDevice, spec: string) => BlockDevice;
  /** Awaited after a copy and before `--verify` reads the destinations back. */
  readonly beforeVerify?: () => Promise<void>;
  /** Where SIGINT, SIGTERM and SIGUSR1 arrive; default `process`. */
  readonly signals?: CliSignals;
  /** Ends the program at once with a status (a second SIGINT); default `process.exit`. */
  readonly exit?: (status: number) => void;
}

/** A writable the CLI prints to, with what it knows about it. */
export interface CliOutput {
  readonly stream: Writable;
  /** The descriptor behind it (1, 2, ...), or null for an injected stream. */
  readonly fd: number | null;
  /** True when it is a terminal. */
  readonly isTTY: boolean;
}

/** `CliDeps` with every default filled in, handed to each command. */
export interface CliContext {
  readonly stdin: Readable;
  /** The descriptor behind stdin (0), or null for an injected stream. */
  readonly stdinFd: number | null;
  readonly stdout: CliOutput;
  readonly stderr: CliOutput;
  readonly signals: CliSignals;
  readonly wrapDevice: ((device: BlockDevice, spec: string) => BlockDevice) | null;
  readonly beforeVerify: (() => Promise<void>) | null;
  exit(status: number): void;
}

/** Fills in the process's own streams, signals and exit for what `deps` leaves out. */
export function cliContext(deps: CliDeps = {}): CliContext {
  const stdin = deps.stdin ?? process.stdin;
  return {
    stdin,
    stdinFd: fdOf(stdin),
    stdout: outputOf(deps.stdout ?? process.stdout),
    stderr: outputOf(deps.stderr ?? process.stderr),
    signals: deps.signals ?? process,
    wrapDevice: deps.wrapDevice ?? null,
    beforeVerify: deps.beforeVerify ?? null,
    exit: deps.exit ?? ((status: number) => process.exit(status)),
  };
}

function outputOf(stream: Writable): CliOutput {
  return { stream, fd: fdOf(stream), isTTY: (stream as { isTTY?: unknown }).isTTY === true };
}

/** The descriptor a Node stream is over (process.stdout's 1, a tty or fs stream's), or null. */
function fdOf(stream: Readable | Writable): number | null {
  const fd = (stream as { fd?: unknown }).fd;
  return typeof fd === 'number' && Number.isInteger(fd) && fd >= 0 ? fd : null;
}

/** Writes `text` to the command's stderr. */
export function tell(cli: CliContext, text: string): void {
  cli.stderr.stream.write(text);
}

/** How a command hands its work to `main`: the work runs with the context and returns a status. */
export type RunCommand = (work: (cli: CliContext) => Promise<number>) => void;
