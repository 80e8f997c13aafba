// Owns the `error` target: every read, write, discard and write-zeroes fails with EIO; flushes
// succeed (the kernel never sends them to it). No arguments, empty status and table.

import type { BlockDevice } from '../devices/block-device.js';
import { TableError } from '../errors.js';
import type { Target, TargetDone, TargetIo, TargetLine, TargetPlan } from './target.js';
import { completeLater, targetError } from './target-io.js';

/** An error target. */
export class ErrorTarget implements Target {
  readonly type = 'error';
  readonly maxIoSectors = 0;
  readonly devices: readonly BlockDevice[] = [];
  readonly limits = {};

  map(io: TargetIo, done: TargetDone): void {
    completeLater(done, targetError('error target', io));
  }

  flush(done: TargetDone): void {
    completeLater(done, null);
  }

  status(): string {
    return '';
  }

  table(): string {
    return '';
  }

  stop(): Promise<void> {
    return Promise.resolve();
  }
}

/** Parses the (empty) arguments of `error`. */
export function parseError(args: readonly string[], line: TargetLine): TargetPlan {
  if (args.length !== 0) {
    throw new TableError('DMIO_ERR_INVALID_TABLE', line.source, line.lineNumber,
      'error: no arguments required');
  }
  return { deviceArgs: [], extents: [], create: () => new ErrorTarget() };
}
