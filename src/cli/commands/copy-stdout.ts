// Owns `dmio copy SOURCE -`: stdout as the one destination of a copy. The region goes through
// kcopyd like any copy, into a stream sink device over the context's stdout (writes in offset
// order with writeSeq, each chunk completed once stdout took it, so a slow reader holds the
// copy back in kcopyd's bounded pages). What `-` cannot do is refused first (exit 2, nothing
// opened): another destination with it, `-` as the source too, --verify (stdout cannot be read
// back), --dest-sector (a stream cannot seek), --ignore-errors (kcopyd's write-seq turns it
// off), a terminal as stdout (raw bytes, refused as gzip and xz do), progress lines on
// descriptor 1, stdout being the source's own file, and a block device as stdout (Node's
// stdout drops every write to one; stdout-data.ts). Flushing: a regular file behind stdout is
// made durable with fdatasync(1) (kcopyd's flush: true); a pipe, socket or character device
// has nothing to flush, and the report says so ("flushed": false) rather than claiming one.

import { fdatasync, type BigIntStats } from 'node:fs';
import {
  createStreamSinkDevice, sectorsToBytes, type StreamSinkDevice,
} from '../../index.js';
import type { CliContext } from '../context.js';
import { specIdentity } from '../same-storage.js';
import { checkStdoutForData } from '../stdout-data.js';
import type { ProgressMode } from '../progress.js';
import { STDOUT_NAME } from '../stdout.js';
import { UsageError } from '../exit-status.js';

/** The destination spec that means stdout. */
export const STDOUT_SPEC = '-';

/** The flags of `dmio copy` that matter to a stdout destination. */
export interface StdoutCopyFlags {
  readonly destSector: string;
  readonly verify?: boolean;
  readonly ignoreErrors?: boolean;
}

/** Stdout, opened as a copy's destination. */
export interface StdoutDestination {
  readonly device: StreamSinkDevice;
  /** True when a flush makes the bytes durable: stdout is a regular file. */
  readonly flushes: boolean;
  /** What stdout is, for the summary: `a pipe`, `a terminal`, … */
  readonly what: string;
}

/** Refuses, with exit status 2, every use of `-` as a destination that cannot work. */
export function refuseStdoutUse(
  cli: CliContext, sourceSpec: string, destSpecs: readonly string[], flags: StdoutCopyFlags,
  progressMode: ProgressMode,
): void {
  if (destSpecs.length > 1) {
    throw new UsageError('- (stdout) must be the only destination: a stream cannot be ' +
      'written beside other destinations');
  }
  if (sourceSpec === STDOUT_SPEC) {
    throw new UsageError('copy - -: stdin to stdout is not a copy of a device region ' +
      '(use cat, or head -c SIZE)');
  }
  if (flags.verify === true) {
    throw new UsageError('--verify: stdout cannot be read back (hash it downstream: | sha256sum)');
  }
  if (flags.destSector !== '0') throw new UsageError('--dest-sector: stdout cannot seek');
  if (flags.ignoreErrors === true) {
    throw new UsageError('--ignore-errors: stdout is written in offset order (kcopyd\'s ' +
      'write-seq), which turns it off');
  }
  if (cli.stdout.isTTY) {
    throw new UsageError('stdout is a terminal: the region would be printed as raw bytes ' +
      '(redirect or pipe it, as in - | xz > image.xz)');
  }
  if (progressMode.kind === 'fd' && progressMode.fd === 1) {
    throw new UsageError('--progress=1: stdout carries the data; use --progress=2 (stderr)');
  }
}

/**
 * Opens stdout as the destination of `countSectors` sectors of `sourceSpec`; with `flush`,
 * a regular file behind it gets fdatasync after the last write.
 */
export function openStdoutDestination(
  cli: CliContext, sourceSpec: string, countSectors: number, flush: boolean,
): StdoutDestination {
  const stats = checkStdoutForData(cli, sourceSpec, specIdentity(sourceSpec));
  const stdoutFd = cli.stdout.fd;
  const flushes = flush && stats !== null && stats.isFile();
  const device = createStreamSinkDevice(cli.stdout.stream, {
    sizeBytes: sectorsToBytes(countSectors), name: STDOUT_NAME,
    // Node's stdout (a socket, pipe, terminal or synchronous file stream) is done with a chunk
    // once it calls back, so it may write kcopyd's pages themselves.
    zeroCopy: true,
    ...(flushes && stdoutFd !== null ? { flush: () => fdatasyncOf(stdoutFd) } : {}),
  });
  return { device, flushes, what: describe(stats) };
}

/** The `; …` the summary adds when stdout was not flushed. */
export function notFlushedText(stdout: StdoutDestination, flush: boolean): string {
  return flush ? `stdout is ${stdout.what}: nothing to flush` : '--no-flush';
}

type Stats = BigIntStats;

function describe(stats: Stats | null): string {
  if (stats === null) return 'closed';
  if (stats.isFIFO()) return 'a pipe';
  if (stats.isSocket()) return 'a socket';
  if (stats.isCharacterDevice()) return 'a character device';
  return stats.isBlockDevice() ? 'a block device' : 'a regular file';
}

function fdatasyncOf(fd: number): Promise<void> {
  return new Promise((resolve, reject) => {
    fdatasync(fd, (error) => {
      if (error === null) resolve();
      else reject(error);
    });
  });
}
