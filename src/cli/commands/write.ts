// Owns `dmio write`: one multi-region dm-io write of the input (a file or stdin, at most
// 1 GiB, a whole number of sectors) to the same sector of every device; missing image files
// are created with the size needed. The input is read completely and checked before anything
// is written. The outcome lists every device, as copy does.

import { readFileSync, statSync } from 'node:fs';
import type { Command } from 'commander';
import { dmIoClientCreate, dmIoClientDestroy } from '../../core/client.js';
import { DM_IO_MAX_REGIONS } from '../../constants.js';
import { dmIo } from '../../core/dm-io.js';
import type { BlockDevice } from '../../devices/block-device.js';
import { checkSpec, closeAll } from '../devices.js';
import { printReport } from '../report.js';
import { parseSector, UsageError } from '../usage.js';
import { openDestinations } from './open-regions.js';

/** Largest input `dmio write` takes (1 GiB): it is held in memory for one request. */
const WRITE_INPUT_BYTES_MAX = 1024 * 1024 * 1024;

interface WriteFlags {
  sector?: string;
  input?: string;
  fua?: boolean;
  direct?: boolean;
  json?: boolean;
}

/** Adds `write` to the program. */
export function registerWrite(program: Command, run: (work: () => Promise<number>) => void): void {
  program.command('write')
    .description('write the input to the same sector of every device, as one dm-io request')
    .argument('<device...>',
      `1 to ${DM_IO_MAX_REGIONS} device specs; missing image files are created`)
    .requiredOption('--sector <N>', 'first sector (512-byte units)')
    .option('--input <FILE>', 'read the data from FILE instead of stdin')
    .option('--fua', 'make the write durable before it completes')
    .option('--direct', 'open files and block devices with O_DIRECT')
    .option('--json', 'print one JSON object with the outcome')
    .action((specs: string[], flags: WriteFlags) => run(() => write(specs, flags)));
}

async function write(specs: string[], flags: WriteFlags): Promise<number> {
  if (specs.length > DM_IO_MAX_REGIONS) {
    throw new UsageError(`${specs.length} devices; at most ${DM_IO_MAX_REGIONS}`);
  }
  const sector = parseSector(flags.sector ?? '', '--sector');
  for (const spec of specs) checkSpec(spec, true);
  const data = readInput(flags.input);
  const countSectors = data.length / 512;
  const opened: BlockDevice[] = [];
  const client = dmIoClientCreate();
  try {
    const devices = await openDestinations(specs, sector, countSectors, flags.direct === true,
      opened);
    const startMs = performance.now();
    const { errorBits, errors } = await dmIo({
      op: 'write', mem: { type: 'vm', data }, client, flags: { fua: flags.fua === true },
    }, devices.map((device) => ({ device, sector, count: countSectors })));
    const destinations = specs.map((device, index) => {
      const failed = ((errorBits >> BigInt(index)) & 1n) === 1n;
      return { device, ok: !failed, error: failed ? (errors[index]?.message ?? 'EIO') : null };
    });
    return printReport({ readError: false, writeErrorBits: errorBits, destinations,
      bytes: data.length, seconds: (performance.now() - startMs) / 1000 }, flags.json === true,
    { verb: 'wrote' });
  } finally {
    await dmIoClientDestroy(client);
    await closeAll(opened);
  }
}

function readInput(path: string | undefined): Uint8Array {
  if (path !== undefined) {
    let sizeBytes: number;
    try {
      sizeBytes = statSync(path).size;
    } catch (error) {
      throw new UsageError(`--input ${path}: ${(error as Error).message}`);
    }
    if (sizeBytes > WRITE_INPUT_BYTES_MAX) throw new UsageError(`--input ${path} is over 1 GiB`);
  }
  let data: Buffer;
  try {
    data = readFileSync(path ?? 0);
  } catch (error) {
    throw new UsageError(`cannot read the input: ${(error as Error).message}`);
  }
  if (data.length > WRITE_INPUT_BYTES_MAX) throw new UsageError('the input is over 1 GiB');
  if (data.length === 0 || data.length % 512 !== 0) {
    throw new UsageError(`the input is ${data.length} bytes; ` +
      'it must be a positive multiple of 512');
  }
  return data;
}
