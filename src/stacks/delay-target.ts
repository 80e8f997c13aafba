// Owns the `delay` target: `delay DEV OFFSET MS [DEV OFFSET MS [DEV OFFSET MS]]` holds each
// request for MS milliseconds before passing it to its device, like linear otherwise. Three
// classes: reads (first triple), writes, discards and write-zeroes (second, else first) and
// empty flushes (third, else second, else first). A class with delay 0 passes at once. Held
// requests leave in arrival order; each class has one fixed delay, so its order is kept (no
// order between classes). Status: requests held now per class, `R W F`. Stopping releases
// everything held at once, as the kernel's presuspend does.

import type { DmIoClient } from '../core/client.js';
import type { BlockDevice } from '../devices/block-device.js';
import { TableError } from '../errors.js';
import { InflightCounter } from './inflight.js';
import { parseNumberArg } from './table-text.js';
import type {
  Target, TargetDone, TargetEnv, TargetIo, TargetLine, TargetPlan,
} from './target.js';
import { flushDevice, ioToDevice } from './target-io.js';

/** One class's device, offset and delay. */
interface DelayClass {
  readonly device: BlockDevice;
  readonly deviceId: string;
  readonly offsetSectors: number;
  readonly delayMs: number;
  /** Held requests, oldest first: when each is due and how to release it. */
  readonly held: Array<{ readonly dueMs: number; readonly release: () => void }>;
  timer: NodeJS.Timeout | null;
}

/** A delay target. */
export class DelayTarget implements Target {
  readonly type = 'delay';
  readonly maxIoSectors = 0;
  readonly devices: readonly BlockDevice[];
  readonly limits = {};
  readonly #client: DmIoClient;
  /** read, write, flush. */
  readonly #classes: readonly [DelayClass, DelayClass, DelayClass];
  /** Triples given in the table (1, 2 or 3), for `table()`. */
  readonly #tripleCount: number;
  readonly #inflight = new InflightCounter();
  #stopped = false;

  constructor(env: TargetEnv, offsets: readonly number[], delaysMs: readonly number[]) {
    this.#client = env.ioClient;
    this.#tripleCount = offsets.length;
    const make = (index: number): DelayClass => ({
      device: env.devices[index] as BlockDevice, deviceId: env.deviceIds[index] as string,
      offsetSectors: offsets[index] as number, delayMs: delaysMs[index] as number,
      held: [], timer: null,
    });
    const read = make(0);
    const write = make(Math.min(1, offsets.length - 1));
    const flush = make(offsets.length - 1);
    this.#classes = [read, write, flush];
    this.devices = [...new Set([read.device, write.device, flush.device])];
  }

  map(io: TargetIo, done: TargetDone): void {
    const delayClass = io.op === 'read' ? this.#classes[0] : this.#classes[1];
    const tracked = this.#inflight.track(done);
    this.#hold(delayClass, () => ioToDevice(this.#client, delayClass.device,
      delayClass.offsetSectors + io.sector, io, tracked));
  }

  flush(done: TargetDone): void {
    const delayClass = this.#classes[2];
    const tracked = this.#inflight.track(done);
    this.#hold(delayClass, () => flushDevice(this.#client, delayClass.device, tracked));
  }

  #hold(delayClass: DelayClass, release: () => void): void {
    if (delayClass.delayMs === 0 || this.#stopped) {
      release();
      return;
    }
    delayClass.held.push({ dueMs: performance.now() + delayClass.delayMs, release });
    if (delayClass.timer === null) this.#arm(delayClass);
  }

  #arm(delayClass: DelayClass): void {
    const head = delayClass.held[0];
    if (head === undefined) return;
    const waitMs = Math.max(0, head.dueMs - performance.now());
    delayClass.timer = setTimeout(() => {
      delayClass.timer = null;
      this.#releaseDue(delayClass, false);
      this.#arm(delayClass);
    }, waitMs);
  }

  #releaseDue(delayClass: DelayClass, all: boolean): void {
    const nowMs = performance.now();
    let count = 0;
    while (count < delayClass.held.length &&
      (all || (delayClass.held[count]?.dueMs ?? Infinity) <= nowMs)) count += 1;
    const due = delayClass.held.splice(0, count);
    for (const entry of due) entry.release();
  }

  status(): string {
    return this.#classes.map((delayClass) => delayClass.held.length).join(' ');
  }

  table(): string {
    return this.#classes.slice(0, 1)
      .concat(this.#tripleCount >= 2 ? [this.#classes[1]] : [])
      .concat(this.#tripleCount === 3 ? [this.#classes[2]] : [])
      .map((c) => `${c.deviceId} ${c.offsetSectors} ${c.delayMs}`).join(' ');
  }

  stop(): Promise<void> {
    this.#stopped = true;
    for (const delayClass of this.#classes) {
      if (delayClass.timer !== null) clearTimeout(delayClass.timer);
      delayClass.timer = null;
      this.#releaseDue(delayClass, true);
    }
    return this.#inflight.idle();
  }
}

/** Parses 3, 6 or 9 words: `(DEV OFFSET MS){1,3}`. */
export function parseDelay(args: readonly string[], line: TargetLine): TargetPlan {
  if (args.length !== 3 && args.length !== 6 && args.length !== 9) {
    throw new TableError('DMIO_ERR_INVALID_TABLE', line.source, line.lineNumber,
      `delay: requires exactly 3, 6 or 9 arguments, got ${args.length}`);
  }
  const deviceArgs: string[] = [];
  const offsets: number[] = [];
  const delays: number[] = [];
  for (let index = 0; index < args.length; index += 3) {
    deviceArgs.push(args[index] as string);
    offsets.push(parseNumberArg(args[index + 1] as string, 'delay device sector', line.source,
      line.lineNumber));
    delays.push(parseNumberArg(args[index + 2] as string, 'delay (ms)', line.source,
      line.lineNumber, 0xffffffff));
  }
  return {
    deviceArgs,
    extents: offsets.map((sector, device) => ({ device, sector, countSectors: line.lengthSectors })),
    create: (env) => new DelayTarget(env, offsets, delays),
  };
}
