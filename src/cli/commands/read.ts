// Owns `dmio read`: reads one region of a device with dm-io, 1 MiB at a time into one aligned
// buffer, and writes the bytes to --output (a file, created or truncated) or stdout. Stops at
// the first read error with exit status 1; bytes before it have been written.

import { createWriteStream, type WriteStream } from 'node:fs';
import type { Command } from 'commander';
import { dmIoClientCreate, dmIoClientDestroy } from '../../core/client.js';
import { dmIo } from '../../core/dm-io.js';
import { allocAligned } from '../../memory/aligned.js';
import { checkSpec, closeAll, openForCli, requireInside } from '../devices.js';
import {
  EXIT_IO_ERROR, EXIT_OK, parseLengthSectors, parseSector, UsageError, type LengthOptions,
} from '../usage.js';

/** Sectors read per dm-io request (1 MiB). */
const READ_CHUNK_SECTORS = 2048;

interface ReadFlags extends LengthOptions {
  sector?: string;
  output?: string;
  direct?: boolean;
}

/** Adds `read` to the program. */
export function registerRead(program: Command, run: (work: () => Promise<number>) => void): void {
  program.command('read')
    .description('read one region of a device to a file or stdout')
    .argument('<device>', 'device spec')
    .requiredOption('--sector <N>', 'first sector (512-byte units)')
    .option('--count <SECTORS>', 'sectors to read')
    .option('--length <SIZE>', 'bytes to read, with K/M/G/T suffixes (alternative to --count)')
    .option('--output <FILE>', 'write here instead of stdout (created or truncated)')
    .option('--direct', 'open the device with O_DIRECT')
    .action((spec: string, flags: ReadFlags) => run(() => read(spec, flags)));
}

async function read(spec: string, flags: ReadFlags): Promise<number> {
  const sector = parseSector(flags.sector ?? '', '--sector');
  const countSectors = parseLengthSectors(flags);
  if (countSectors === null) throw new UsageError('read needs --count or --length');
  checkSpec(spec, false);
  const device = await openForCli({
    spec, options: { readOnly: true, direct: flags.direct === true },
  });
  const client = dmIoClientCreate();
  try {
    requireInside(device, sector, countSectors, 'device');
    const output = flags.output === undefined ? process.stdout : createWriteStream(flags.output);
    const buffer = allocAligned(Math.max(1, Math.min(countSectors, READ_CHUNK_SECTORS)) * 512);
    for (let done = 0; done < countSectors; done += READ_CHUNK_SECTORS) {
      const sectors = Math.min(READ_CHUNK_SECTORS, countSectors - done);
      const { errorBits, errors } = await dmIo({ op: 'read', mem: { type: 'kmem', data: buffer },
        client }, [{ device, sector: sector + done, count: sectors }]);
      if (errorBits !== 0n) {
        process.stderr.write(`dmio: reading ${spec} failed: ${errors[0]?.message ?? 'EIO'}\n`);
        await finish(output);
        return EXIT_IO_ERROR;
      }
      await writeAll(output, Buffer.from(buffer.subarray(0, sectors * 512)));
    }
    await finish(output);
    return EXIT_OK;
  } finally {
    await dmIoClientDestroy(client);
    await closeAll([device]);
  }
}

function writeAll(output: NodeJS.WritableStream, bytes: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    output.write(bytes, (error) => (error ? reject(error) : resolve()));
  });
}

function finish(output: NodeJS.WritableStream): Promise<void> {
  if (output === process.stdout) return Promise.resolve();
  return new Promise((resolve, reject) => {
    (output as WriteStream).end((error?: Error | null) => (error ? reject(error) : resolve()));
  });
}
