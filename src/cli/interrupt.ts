// Owns what SIGINT and SIGTERM do to a long command (copy, zero): the first one aborts the job
// through an AbortSignal, so kcopyd stops issuing, lets the I/O in flight settle and reports
// how far each destination got; the command then flushes what was written and exits 130
// (SIGINT) or 143 (SIGTERM), never 0. A second signal while that winds down exits at once with
// the same status (the same signal again within 200 ms counts as the first: `timeout` and
// terminals may deliver one twice, to the process and to its group). Outside a job the
// handlers are removed, so signals act as usual. Signals arrive, and the early exit goes,
// through the context (the process, or a test's emitter).

import { tell, type CliContext } from './context.js';

/** Exit status after a signal: 128 + its number, as shells report it. */
const SIGNAL_EXIT_STATUS: Readonly<Record<'SIGINT' | 'SIGTERM', number>> = {
  SIGINT: 130, SIGTERM: 143,
};

/** A repeat of the first signal within this long is taken as the same one, not a second. */
const REPEAT_WINDOW_MS = 200;

/** The watch over one job. */
export interface InterruptWatch {
  /** Aborted when the first signal arrives. */
  readonly signal: AbortSignal;
  /** The signal received, or null. */
  readonly received: 'SIGINT' | 'SIGTERM' | null;
  /** The exit status the signal calls for, or null when none came. */
  exitStatus(): number | null;
  /** Removes the handlers. */
  dispose(): void;
}

/** Starts watching SIGINT and SIGTERM until `dispose()`. */
export function watchInterrupts(cli: CliContext): InterruptWatch {
  const controller = new AbortController();
  let received: 'SIGINT' | 'SIGTERM' | null = null;
  let receivedAtMs = 0;
  const onSignal = (name: 'SIGINT' | 'SIGTERM'): void => {
    // `timeout -s INT` and a terminal's Ctrl-C can deliver one signal twice (to the process,
    // then to its group) within microseconds: a repeat that close is the same interrupt.
    if (received === name && performance.now() - receivedAtMs < REPEAT_WINDOW_MS) return;
    if (received !== null) {
      tell(cli, `dmio: ${name} again; exiting without waiting for I/O in flight\n`);
      cli.exit(SIGNAL_EXIT_STATUS[received]);
      return;
    }
    received = name;
    receivedAtMs = performance.now();
    tell(cli, `dmio: ${name}: stopping; waiting for I/O in flight, then flushing\n`);
    controller.abort(new Error(`interrupted by ${name}`));
  };
  const onInt = (): void => onSignal('SIGINT');
  const onTerm = (): void => onSignal('SIGTERM');
  cli.signals.on('SIGINT', onInt);
  cli.signals.on('SIGTERM', onTerm);
  return {
    signal: controller.signal,
    get received() {
      return received;
    },
    exitStatus: () => (received === null ? null : SIGNAL_EXIT_STATUS[received]),
    dispose() {
      cli.signals.off('SIGINT', onInt);
      cli.signals.off('SIGTERM', onTerm);
    },
  };
}
