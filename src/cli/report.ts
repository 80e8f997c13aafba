// Owns what a command prints when it ends: with --json, exactly one object on stdout
// `{ readError, writeErrorBits, destinations: [{ device, ok, bytesWritten, error }], bytes,
// seconds }`; otherwise one summary line on stdout and one line per failure on stderr. When
// stdout carries the data (`copy SOURCE -`), the object or summary goes to stderr instead. A
// destination counts as done ("ok") only when every byte of the region reached it (and it
// verified, when asked); every other destination is named with the bytes it did get. It also
// turns the outcome into the exit status: 1 when the source or any destination failed, else 0.

import bytes from 'bytes';
import { tell, type CliContext } from './context.js';
import { hexBits } from './usage.js';
import { EXIT_IO_ERROR, EXIT_OK } from './exit-status.js';

/** One destination's outcome. */
export interface DestinationReport {
  /** The device spec as given on the command line. */
  readonly device: string;
  /**
   * True only when every byte of the region was written to it from a source read without
   * error (and the verification, if asked, matched).
   */
  readonly ok: boolean;
  /** Bytes of the region that were written to it successfully. */
  readonly bytesWritten: number;
  /** Why it is not ok, or `null`. */
  readonly error: string | null;
}

/** A command's outcome. */
export interface RunReport {
  readonly readError: boolean;
  readonly writeErrorBits: bigint;
  readonly destinations: readonly DestinationReport[];
  readonly bytes: number;
  readonly seconds: number;
  /** copy only: copy_file_range calls that moved data without reading it into memory. */
  readonly offloadCalls?: number;
  /** Whether the destinations were flushed before the report (absent: not applicable). */
  readonly flushed?: boolean;
  /** The signal that stopped the job early, or null/absent. */
  readonly interrupted?: 'SIGINT' | 'SIGTERM' | null;
}

/** What the human summary says. */
export interface ReportText {
  /** Such as "copied" or "zeroed". */
  readonly verb: string;
  /** The source and its error message, when there is a source. */
  readonly source?: { readonly spec: string; readonly error: string | null };
  /** True when the destinations were read back and compared (`copy --verify`). */
  readonly verified?: boolean;
  /** Where the object or summary goes: stdout (default), or stderr when stdout holds data. */
  readonly channel?: 'stdout' | 'stderr';
  /** Why the destinations were not flushed, when `flushed` is false (default `--no-flush`). */
  readonly notFlushedWhy?: string;
  /**
   * Destinations whose failure is told elsewhere (a failed stdout, which `main` names once
   * with its errno): no failure line here; the object still has them.
   */
  readonly failuresToldElsewhere?: readonly number[];
}

/** Prints the outcome and returns the exit status. */
export function printReport(
  cli: CliContext, report: RunReport, json: boolean, text: ReportText,
): number {
  const failed = report.readError || report.destinations.some((d) => !d.ok);
  const out = text.channel === 'stderr' ? cli.stderr.stream : cli.stdout.stream;
  if (json) {
    out.write(`${JSON.stringify({
      readError: report.readError,
      writeErrorBits: hexBits(report.writeErrorBits),
      destinations: report.destinations,
      bytes: report.bytes,
      seconds: Number(report.seconds.toFixed(6)),
      ...(report.offloadCalls === undefined ? {} : { offloadCalls: report.offloadCalls }),
      ...(report.flushed === undefined ? {} : { flushed: report.flushed }),
      ...(report.interrupted == null ? {} : { interrupted: report.interrupted }),
    })}\n`);
  } else {
    const rate = report.seconds > 0 ? bytes(Math.round(report.bytes / report.seconds)) : '-';
    const okCount = report.destinations.filter((d) => d.ok).length;
    const verified = text.verified === true ? `; ${okCount} verified by reading back` : '';
    const flushed = report.flushed === false ?
      `; not flushed (${text.notFlushedWhy ?? '--no-flush'})` : '';
    const interrupted = report.interrupted == null ? '' :
      `; interrupted by ${report.interrupted}`;
    out.write(`${text.verb} ${bytes(report.bytes)} (${report.bytes} bytes) to ` +
      `${okCount} of ${report.destinations.length} destination(s) in ` +
      `${report.seconds.toFixed(3)} s (${rate}/s)${verified}${flushed}${interrupted}\n`);
  }
  if (report.readError && text.source !== undefined) {
    tell(cli, `dmio: reading ${text.source.spec} failed: ` +
      `${text.source.error ?? 'I/O error'}\n`);
  }
  const toldElsewhere = new Set(text.failuresToldElsewhere ?? []);
  for (const [index, destination] of report.destinations.entries()) {
    if (!destination.ok && !toldElsewhere.has(index)) {
      tell(cli, `dmio: ${destination.device} FAILED with ` +
        `${writtenText(destination.bytesWritten, report.bytes)}: ${destination.error}\n`);
    }
  }
  return failed ? EXIT_IO_ERROR : EXIT_OK;
}

/** "12MB of 64MB written" (exact byte counts when the rounded sizes would read the same). */
function writtenText(writtenBytes: number, totalBytes: number): string {
  const written = bytes(writtenBytes) ?? String(writtenBytes);
  const total = bytes(totalBytes) ?? String(totalBytes);
  return written === total && writtenBytes !== totalBytes ?
    `${writtenBytes} of ${totalBytes} bytes written` : `${written} of ${total} written`;
}
