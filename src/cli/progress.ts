// Owns progress reporting for long commands, in the form the user chose with `--progress`:
// - auto (the default): a cli-progress bar on stderr with bytes, rate and ETA, only when stderr
//   is a terminal; otherwise nothing, so output piped to files or read by scripts stays clean;
// - `--no-progress`: nothing;
// - `--progress=FD`: lines `N/100` on descriptor FD whenever the percentage changes, as
//   nbdcopy writes them, for GUIs and wrappers;
// - `--progress=json`: one JSON object per line on stderr, at most every 250 ms and once at the
//   end: `{ bytes, totalBytes, bytesPerSecond, destinations: [{ device, state, bytesWritten? }] }`.
// A progress write that fails (a closed descriptor, a full pipe) is dropped: progress never
// fails the command. cli-progress is loaded only when a bar is shown. Descriptors 1 and 2 are
// the context's stdout and stderr: when those are streams a test gave, the lines go to them.

import bytes from 'bytes';
import { fstatSync, writeSync } from 'node:fs';
import type { CliContext, CliOutput } from './context.js';
import type { DestinationReport } from './report.js';
import { UsageError } from './exit-status.js';

/** How progress is shown. */
export type ProgressMode =
  | { readonly kind: 'auto' }
  | { readonly kind: 'none' }
  | { readonly kind: 'json' }
  | { readonly kind: 'fd'; readonly fd: number };

/** A destination's state in the final JSON progress line. */
export interface ProgressDestination {
  readonly device: string;
  readonly state: 'writing' | 'done' | 'failed';
  readonly bytesWritten?: number;
}

/** A progress display for one transfer. */
export interface Progress {
  /** Bytes done so far. */
  update(doneBytes: number): void;
  /** Ends the display; `final` gives each destination's outcome to the JSON form. */
  stop(final?: readonly ProgressDestination[]): void;
}

/** The final progress state of each reported destination. */
export function finalStates(
  destinations: readonly DestinationReport[],
): ProgressDestination[] {
  return destinations.map(({ device, ok, bytesWritten }) => ({
    device, state: ok ? 'done' : 'failed', bytesWritten,
  }));
}

/** Least time between two JSON progress lines. */
const JSON_INTERVAL_MS = 250;

/**
 * Parses commander's value of `--progress[=MODE]` / `--no-progress`; `jsonOnStdout` refuses
 * descriptor 1, where the `--json` outcome goes.
 */
export function parseProgressMode(
  value: string | boolean | undefined, jsonOnStdout = false,
): ProgressMode {
  if (value === undefined || value === true) return { kind: 'auto' };
  if (value === false) return { kind: 'none' };
  if (value === 'json') return { kind: 'json' };
  if (/^\d+$/.test(value)) {
    const fd = Number(value);
    if (fd === 1 && jsonOnStdout) {
      throw new UsageError('--progress=1 with --json: both would go to stdout; use --progress=2');
    }
    try {
      fstatSync(fd);
    } catch {
      throw new UsageError(`--progress=${value}: descriptor ${fd} is not open`);
    }
    return { kind: 'fd', fd };
  }
  throw new UsageError(`--progress: ${JSON.stringify(value)} is neither a descriptor number ` +
    'nor "json"');
}

/** A progress display of `mode` for a transfer of `totalBytes` to `devices`. */
export async function createProgress(
  cli: CliContext, totalBytes: number, mode: ProgressMode, label: string,
  devices: readonly string[] = [],
): Promise<Progress> {
  switch (mode.kind) {
    case 'none':
      return { update: () => undefined, stop: () => undefined };
    case 'fd':
      return percentLines(totalBytes, lineWriter(cli, mode.fd));
    case 'json':
      return jsonLines(totalBytes, lineWriter(cli, 2), devices);
    case 'auto':
      if (!cli.stderr.isTTY || totalBytes === 0) {
        return { update: () => undefined, stop: () => undefined };
      }
      return bar(cli.stderr, totalBytes, label);
  }
}

/**
 * Writes lines to descriptor `fd` (the context's stdout or stderr stream for 1 and 2 when
 * those are not descriptors), dropping any that the descriptor refuses.
 */
function lineWriter(cli: CliContext, fd: number): (text: string) => void {
  const output = fd === 1 ? cli.stdout : fd === 2 ? cli.stderr : null;
  if (output !== null && output.fd === null) return (text) => output.stream.write(text);
  const target = output?.fd ?? fd;
  return (text) => {
    try {
      writeSync(target, text);
    } catch {
      // Progress is advisory: a reader that went away must not fail the copy.
    }
  };
}

function percentLines(totalBytes: number, write: (text: string) => void): Progress {
  let lastPercent = -1;
  const emit = (doneBytes: number): void => {
    const percent = totalBytes === 0 ? 100 : Math.floor((doneBytes * 100) / totalBytes);
    if (percent === lastPercent) return;
    lastPercent = percent;
    write(`${percent}/100\n`);
  };
  emit(0);
  return { update: emit, stop: () => undefined };
}

function jsonLines(
  totalBytes: number, write: (text: string) => void, devices: readonly string[],
): Progress {
  const startMs = performance.now();
  let lastMs = -Infinity;
  let doneBytes = 0;
  const line = (destinations: readonly ProgressDestination[]): void => {
    const seconds = (performance.now() - startMs) / 1000;
    write(`${JSON.stringify({
      bytes: doneBytes, totalBytes,
      bytesPerSecond: seconds > 0 ? Math.round(doneBytes / seconds) : 0,
      destinations,
    })}\n`);
  };
  const writing = devices.map((device): ProgressDestination => ({ device, state: 'writing' }));
  return {
    update(bytesNow: number) {
      doneBytes = bytesNow;
      const nowMs = performance.now();
      if (nowMs - lastMs < JSON_INTERVAL_MS) return;
      lastMs = nowMs;
      line(writing);
    },
    stop(final?: readonly ProgressDestination[]) {
      line(final ?? writing);
    },
  };
}

async function bar(stderr: CliOutput, totalBytes: number, label: string): Promise<Progress> {
  const { default: cliProgress } = await import('cli-progress');
  const startMs = performance.now();
  const progressBar = new cliProgress.SingleBar({
    stream: stderr.stream as NodeJS.WritableStream,
    format: `${label} [{bar}] {percentage}% | {doneText}/{totalText} | {rate}/s | ` +
      'ETA {eta_formatted}',
    hideCursor: true,
    clearOnComplete: true,
  }, cliProgress.Presets.shades_classic);
  const totalText = bytes(totalBytes) ?? String(totalBytes);
  progressBar.start(totalBytes, 0, { doneText: '0B', totalText, rate: '0B' });
  return {
    update(doneBytes: number) {
      const seconds = Math.max((performance.now() - startMs) / 1000, 1e-3);
      progressBar.update(doneBytes, {
        doneText: bytes(doneBytes) ?? String(doneBytes),
        totalText,
        rate: bytes(Math.round(doneBytes / seconds)) ?? '?',
      });
    },
    stop() {
      progressBar.stop();
    },
  };
}
