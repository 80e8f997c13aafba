// Owns the progress display: a cli-progress bar on stderr with bytes, rate and ETA, shown only
// when stderr is a terminal and progress was not turned off. Otherwise every call is a no-op,
// so output piped to files or read by scripts stays clean. cli-progress (with readline and its
// string-width helpers) is loaded only when a bar is shown, not on every start.

import bytes from 'bytes';

/** A progress display for one transfer. */
export interface Progress {
  /** Bytes done so far. */
  update(doneBytes: number): void;
  /** Removes the bar. */
  stop(): void;
}

/** A bar on stderr when it is a TTY and `enabled`; a silent stand-in otherwise. */
export async function createProgress(
  totalBytes: number, enabled: boolean, label: string,
): Promise<Progress> {
  if (!enabled || process.stderr.isTTY !== true || totalBytes === 0) {
    return { update: () => undefined, stop: () => undefined };
  }
  const { default: cliProgress } = await import('cli-progress');
  const startMs = performance.now();
  const bar = new cliProgress.SingleBar({
    stream: process.stderr,
    format: `${label} [{bar}] {percentage}% | {doneText}/{totalText} | {rate}/s | ` +
      'ETA {eta_formatted}',
    hideCursor: true,
    clearOnComplete: true,
  }, cliProgress.Presets.shades_classic);
  const totalText = bytes(totalBytes) ?? String(totalBytes);
  bar.start(totalBytes, 0, { doneText: '0B', totalText, rate: '0B' });
  return {
    update(doneBytes: number) {
      const seconds = Math.max((performance.now() - startMs) / 1000, 1e-3);
      bar.update(doneBytes, {
        doneText: bytes(doneBytes) ?? String(doneBytes),
        totalText,
        rate: bytes(Math.round(doneBytes / seconds)) ?? '?',
      });
    },
    stop() {
      bar.stop();
    },
  };
}
