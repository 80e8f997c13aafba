// Owns the `error` target: every read, write, discard and write-zeroes fails with EIO; flushes
// succeed (the kernel never sends them to it). No arguments, empty status and table.

import { DevicelessTarget, parseNoArguments } from './deviceless-target.js';
import type { TargetDone, TargetIo, TargetLine, TargetPlan } from './target.js';
import { completeLater, targetError } from './target-io.js';

/** An error target. */
export class ErrorTarget extends DevicelessTarget {
  readonly type = 'error';
  readonly limits = {};

  map(io: TargetIo, done: TargetDone): void {
    completeLater(done, targetError('error target', io));
  }

  /** No arguments and no state: the same anywhere (`Target.tableWith`). */
  tableWith(): string {
    return '';
  }
}

/** Parses the (empty) arguments of `error`. */
export function parseError(args: readonly string[], line: TargetLine): TargetPlan {
  return parseNoArguments('error', args, line, () => new ErrorTarget());
}
