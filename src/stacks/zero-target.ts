// Owns the `zero` target: reads return zeros, writes and discards are dropped, write-zeroes
// is refused (as the kernel's dm-zero), flushes succeed. No arguments, empty status and table.

import type { BlockDevice } from '../devices/block-device.js';
import { TableError } from '../errors.js';
import type { Target, TargetDone, TargetIo, TargetLine, TargetPlan } from './target.js';
import { completeLater, targetError } from './target-io.js';

/** A zero target. */
export class ZeroTarget implements Target {
  readonly type = 'zero';
  readonly maxIoSectors = 0;
  readonly devices: readonly BlockDevice[] = [];
  readonly limits = { maxWriteZeroesSectors: 0 };

  map(io: TargetIo, done: TargetDone): void {
    if (io.op === 'read') for (const segment of io.segments) segment.fill(0);
    completeLater(done, io.op === 'write-zeroes' ? targetError('zero', io, 'EOPNOTSUPP') : null);
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

/** Parses the (empty) arguments of `zero`. */
export function parseZero(args: readonly string[], line: TargetLine): TargetPlan {
  if (args.length !== 0) {
    throw new TableError('DMIO_ERR_INVALID_TABLE', line.source, line.lineNumber,
      'zero: no arguments required');
  }
  return { deviceArgs: [], extents: [], create: () => new ZeroTarget() };
}
