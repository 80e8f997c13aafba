// Owns what happens when the CLI's output cannot be written: the error a failed output write
// becomes (`OutputError`, exit status 1), how such a failure is told (one line naming the
// output and the errno; EPIPE, a reader that went away, quietly, as other Unix tools do), a
// write to stdout that resolves once the bytes are out, and the watch `main` keeps on stdout
// and stderr so that a failed write there never becomes an unhandled 'error' event. The
// streams are the context's (the process's own, or a test's).

import type { CliContext } from './context.js';

/** Writing the command's output (stdout or `--output FILE`) failed: exit status 1. */
export class OutputError extends Error {
  constructor(
    /** `stdout` or the output file's path. */
    readonly outputName: string,
    readonly failure: NodeJS.ErrnoException,
  ) {
    super(`writing ${outputName} failed: ${failure.message}`);
    this.name = 'OutputError';
  }
}

/** The name `OutputError` uses for standard output. */
export const STDOUT_NAME = 'stdout';

/** The line telling that writing `outputName` failed, or null when it is told quietly (EPIPE). */
export function outputFailureLine(outputName: string, failure: NodeJS.ErrnoException): string | null {
  if (failure.code === 'EPIPE') return null;
  return `dmio: writing ${outputName} failed: ${failure.message}\n`;
}

/** Writes `bytes` to stdout; resolves once written, rejects with an `OutputError`. */
export function writeStdout(cli: CliContext, bytes: Uint8Array): Promise<void> {
  return new Promise((resolve, reject) => {
    cli.stdout.stream.write(bytes, (error) => {
      if (error === null || error === undefined) resolve();
      else reject(new OutputError(STDOUT_NAME, error));
    });
  });
}

/** What `watchStdio` saw. */
export interface StdioWatch {
  /** Waits until every earlier stdout write finished, then returns the first failure, if any. */
  settle(): Promise<NodeJS.ErrnoException | null>;
  /** Removes the listeners. */
  stop(): void;
}

/**
 * Listens for 'error' on stdout (remembering the first) and on stderr (where nothing can be
 * told), so a closed (EBADF), broken (EPIPE) or full (ENOSPC) stream never crashes Node.
 */
export function watchStdio(cli: CliContext): StdioWatch {
  const stdout = cli.stdout.stream;
  const stderr = cli.stderr.stream;
  let first: NodeJS.ErrnoException | null = null;
  const onStdoutError = (error: NodeJS.ErrnoException): void => {
    first ??= error;
  };
  const onStderrError = (): void => undefined;
  stdout.on('error', onStdoutError);
  stderr.on('error', onStderrError);
  return {
    settle: () => new Promise((resolve) => {
      // An empty write completes after every write before it, or fails once stdout has.
      stdout.write('', (error?: NodeJS.ErrnoException | null) => {
        if (error !== null && error !== undefined && error.code !== 'ERR_STREAM_DESTROYED') {
          first ??= error;
        }
        resolve(first);
      });
    }),
    stop: () => {
      stdout.off('error', onStdoutError);
      stderr.off('error', onStderrError);
    },
  };
}
