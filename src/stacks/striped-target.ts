// Owns the `striped` target (RAID-0): `striped N CHUNK (DEV OFFSET){N}`. The segment is cut
// into CHUNK-sector chunks dealt round-robin to the N stripes; pieces never cross a chunk (the
// table device cuts them at `maxIoSectors`). Worked example (3 stripes, chunk 128, offsets 0):
// sector 1000 is chunk 7 (1000 / 128), 104 sectors into it; 7 mod 3 = stripe 1, row 7 / 3 = 2,
// so it lands on stripe 1 at 2 * 128 + 104 = 360. Discards and write-zeroes are cut at chunk
// ends like data. An empty flush goes to every stripe. A failed piece marks its stripe `D` in
// the status (the kernel counts errors per stripe).

import type { DmIoClient } from '../core/client.js';
import type { BlockDevice } from '../devices/block-device.js';
import { TableError } from '../errors.js';
import { parseNumberArg } from './table-text.js';
import type {
  Target, TargetDone, TargetEnv, TargetIo, TargetLine, TargetPlan,
} from './target.js';
import { completeLater, flushDevices, ioToDevice } from './target-io.js';

/** One stripe: its device, offset and errors seen. */
interface Stripe {
  readonly device: BlockDevice;
  readonly deviceId: string;
  readonly offsetSectors: number;
  errorCount: number;
}

/** Where a segment-relative sector lives. */
export interface StripeLocation {
  readonly stripe: number;
  /** Sector on the stripe's device, before its offset. */
  readonly sector: number;
}

/** Maps a segment-relative sector to its stripe and sector (without the stripe's offset). */
export function stripeLocation(sector: number, stripes: number, chunkSectors: number): StripeLocation {
  const chunk = Math.floor(sector / chunkSectors);
  const inChunk = sector % chunkSectors;
  const row = Math.floor(chunk / stripes);
  return { stripe: chunk % stripes, sector: row * chunkSectors + inChunk };
}

/** A striped target. */
export class StripedTarget implements Target {
  readonly type = 'striped';
  readonly maxIoSectors: number;
  readonly devices: readonly BlockDevice[];
  readonly limits = {};
  readonly #client: DmIoClient;
  readonly #stripes: Stripe[];
  readonly #chunkSectors: number;

  constructor(env: TargetEnv, chunkSectors: number, offsetsSectors: readonly number[]) {
    this.#client = env.ioClient;
    this.#chunkSectors = chunkSectors;
    this.maxIoSectors = chunkSectors;
    this.#stripes = offsetsSectors.map((offsetSectors, index) => ({
      device: env.devices[index] as BlockDevice,
      deviceId: env.deviceIds[index] as string,
      offsetSectors, errorCount: 0,
    }));
    this.devices = this.#stripes.map((stripe) => stripe.device);
  }

  map(io: TargetIo, done: TargetDone): void {
    const location = stripeLocation(io.sector, this.#stripes.length, this.#chunkSectors);
    const stripe = this.#stripes[location.stripe] as Stripe;
    ioToDevice(this.#client, stripe.device, stripe.offsetSectors + location.sector, io,
      (error) => {
        if (error !== null && error.code !== 'DMIO_ERR_NOT_SUPPORTED') stripe.errorCount += 1;
        done(error);
      });
  }

  flush(done: TargetDone): void {
    flushDevices(this.#client, this.devices, (outcome) => {
      completeLater(done, outcome.errors.find((error) => error !== undefined) ?? null);
    });
  }

  status(): string {
    const ids = this.#stripes.map((stripe) => stripe.deviceId).join(' ');
    const health = this.#stripes.map((stripe) => (stripe.errorCount > 0 ? 'D' : 'A')).join('');
    return `${this.#stripes.length} ${ids} 1 ${health}`;
  }

  table(): string {
    const pairs = this.#stripes.map((stripe) => `${stripe.deviceId} ${stripe.offsetSectors}`);
    return `${this.#stripes.length} ${this.#chunkSectors} ${pairs.join(' ')}`;
  }

  stop(): Promise<void> {
    return Promise.resolve();
  }
}

/** Parses `N CHUNK (DEV OFFSET){N}`. */
export function parseStriped(args: readonly string[], line: TargetLine): TargetPlan {
  const fail = (reason: string): never => {
    throw new TableError('DMIO_ERR_INVALID_TABLE', line.source, line.lineNumber,
      `striped: ${reason}`);
  };
  if (args.length < 2) fail('not enough arguments (expected N CHUNK DEV OFFSET...)');
  const stripes = parseNumberArg(args[0] as string, 'stripe count', line.source, line.lineNumber);
  if (stripes < 1) fail('invalid stripe count 0');
  const chunkSectors = parseNumberArg(args[1] as string, 'chunk size', line.source,
    line.lineNumber);
  if (chunkSectors < 1) fail('invalid chunk size 0');
  if (line.lengthSectors % stripes !== 0) {
    fail(`target length ${line.lengthSectors} not divisible by number of stripes ${stripes}`);
  }
  const widthSectors = line.lengthSectors / stripes;
  if (widthSectors % chunkSectors !== 0) {
    fail(`target length ${line.lengthSectors} not divisible by chunk size ${chunkSectors} ` +
      `times ${stripes} stripes`);
  }
  if (args.length !== 2 + 2 * stripes) {
    fail(`expected ${stripes} DEV OFFSET pairs, got ${(args.length - 2) / 2}`);
  }
  const deviceArgs: string[] = [];
  const offsets: number[] = [];
  for (let index = 0; index < stripes; index += 1) {
    deviceArgs.push(args[2 + 2 * index] as string);
    offsets.push(parseNumberArg(args[3 + 2 * index] as string, `stripe ${index} offset`,
      line.source, line.lineNumber));
  }
  return {
    deviceArgs,
    extents: offsets.map((sector, device) => ({ device, sector, countSectors: widthSectors })),
    create: (env) => new StripedTarget(env, chunkSectors, offsets),
  };
}
