// Owns the `linear` target: `linear DEV OFFSET` maps sector S of the segment to DEV at
// OFFSET + S, unchanged in length; flushes go to DEV; no status. Extent queries go to DEV's
// `extents`, shifted by OFFSET (a DEV without one is data).

import type { DmIoClient } from '../core/client.js';
import type { BlockDevice, DeviceExtent, ExtentsDone } from '../devices/block-device.js';
import { TableError } from '../errors.js';
import { parseNumberArg } from './table-text.js';
import type {
  Target, TargetDone, TargetEnv, TargetIo, TargetLine, TargetPlan,
} from './target.js';
import { flushDevice, ioToDevice } from './target-io.js';
import { InflightCounter } from './inflight.js';

/** A linear target: one device at an offset. */
export class LinearTarget implements Target {
  readonly type = 'linear';
  readonly maxIoSectors = 0;
  readonly devices: readonly BlockDevice[];
  readonly limits = {};
  readonly #client: DmIoClient;
  readonly #device: BlockDevice;
  readonly #deviceId: string;
  readonly #offsetSectors: number;
  readonly #inflight = new InflightCounter();

  constructor(env: TargetEnv, offsetSectors: number) {
    this.#client = env.ioClient;
    this.#device = env.devices[0] as BlockDevice;
    this.#deviceId = env.deviceIds[0] as string;
    this.#offsetSectors = offsetSectors;
    this.devices = [this.#device];
  }

  map(io: TargetIo, done: TargetDone): void {
    ioToDevice(this.#client, this.#device, this.#offsetSectors + io.sector, io,
      this.#inflight.track(done));
  }

  flush(done: TargetDone): void {
    flushDevice(this.#client, this.#device, this.#inflight.track(done));
  }

  extents(sector: number, countSectors: number, done: ExtentsDone): void {
    const device = this.#device;
    if (device.extents === undefined) {
      const data = [{ sector, countSectors, hole: false, zero: false }];
      queueMicrotask(() => done(null, data));
      return;
    }
    const offsetSectors = this.#offsetSectors;
    device.extents(offsetSectors + sector, countSectors, this.#inflight.track((error, extents) => {
      done(error, extents.map((extent): DeviceExtent => ({
        ...extent, sector: extent.sector - offsetSectors,
      })));
    }));
  }

  status(): string {
    return '';
  }

  table(): string {
    return this.tableWith([this.#deviceId]);
  }

  tableWith(deviceIds: readonly string[]): string {
    return `${deviceIds[0] as string} ${this.#offsetSectors}`;
  }

  stop(): Promise<void> {
    return this.#inflight.idle();
  }
}

/** Parses `DEV OFFSET`. */
export function parseLinear(args: readonly string[], line: TargetLine): TargetPlan {
  if (args.length !== 2) {
    throw new TableError('DMIO_ERR_INVALID_TABLE', line.source, line.lineNumber,
      `linear: invalid argument count ${args.length} (expected DEV OFFSET)`);
  }
  const [deviceArg, offsetText] = args as [string, string];
  const offsetSectors = parseNumberArg(offsetText, 'linear device sector', line.source,
    line.lineNumber);
  return {
    deviceArgs: [deviceArg],
    extents: [{ device: 0, sector: offsetSectors, countSectors: line.lengthSectors }],
    create: (env) => new LinearTarget(env, offsetSectors),
  };
}
