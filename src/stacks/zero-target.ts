// Owns the `zero` target: reads return zeros, writes and discards are dropped, write-zeroes
// is refused (as the kernel's dm-zero), flushes succeed. No arguments, empty status and table.
// Its extents are one hole that reads as zeros.

import type { ExtentsDone } from '../devices/block-device.js';
import { DevicelessTarget, parseNoArguments } from './deviceless-target.js';
import type { TargetDone, TargetIo, TargetLine, TargetPlan } from './target.js';
import { completeLater, targetError } from './target-io.js';

/** A zero target. */
export class ZeroTarget extends DevicelessTarget {
  readonly type = 'zero';
  readonly limits = { maxWriteZeroesSectors: 0 };

  map(io: TargetIo, done: TargetDone): void {
    if (io.op === 'read') for (const segment of io.segments) segment.fill(0);
    completeLater(done, io.op === 'write-zeroes' ? targetError('zero', io, 'EOPNOTSUPP') : null);
  }

  extents(sector: number, countSectors: number, done: ExtentsDone): void {
    const hole = [{ sector, countSectors, hole: true, zero: true }];
    queueMicrotask(() => done(null, hole));
  }

  /** No arguments and no state: the same anywhere (`Target.tableWith`). */
  tableWith(): string {
    return '';
  }
}

/** Parses the (empty) arguments of `zero`. */
export function parseZero(args: readonly string[], line: TargetLine): TargetPlan {
  return parseNoArguments('zero', args, line, () => new ZeroTarget());
}
