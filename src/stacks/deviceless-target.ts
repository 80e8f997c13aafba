// Owns what the targets without devices (`zero`, `error`) share: no arguments, no devices, no
// I/O size limit, flushes that succeed, and empty status and table lines. Each such target
// only says what its requests do.

import type { BlockDevice } from '../devices/block-device.js';
import { TableError } from '../errors.js';
import type { Target, TargetDone, TargetIo, TargetLimits, TargetLine, TargetPlan } from './target.js';
import { completeLater } from './target-io.js';

/** A target with no devices and no arguments; subclasses give `type`, `limits` and `map`. */
export abstract class DevicelessTarget implements Target {
  abstract readonly type: string;
  abstract readonly limits: TargetLimits;
  readonly maxIoSectors = 0;
  readonly devices: readonly BlockDevice[] = [];

  abstract map(io: TargetIo, done: TargetDone): void;

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

/** The plan of a deviceless target `type`, whose table line must carry no arguments. */
export function parseNoArguments(
  type: string, args: readonly string[], line: TargetLine, create: () => Target,
): TargetPlan {
  if (args.length !== 0) {
    throw new TableError('DMIO_ERR_INVALID_TABLE', line.source, line.lineNumber,
      `${type}: no arguments required`);
  }
  return { deviceArgs: [], extents: [], create };
}
