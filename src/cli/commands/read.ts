// Owns `dmio read`: reads one region of a device with dm-io, 1 MiB at a time into one aligned
// buffer, and writes the bytes to --output (a file, created or truncated) or stdout. Every
// check comes first: the arguments, --output (not a directory, its directory exists, and not
// the device itself by any path, hard link or device node), the device opened and the region
// inside it; only then is the output opened, and a regular file truncated. Stops at the first
// read error (exit 1; bytes before it have been written) or output error (exit 1, an
// `OutputError` told by main).

import { constants, statSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { Command } from 'commander';
import {
  allocAligned, dmIo, dmIoClientCreate, dmIoClientDestroy, SECTOR_SIZE, sectorsToBytes,
  type BlockDevice, type DmIoClient,
} from '../../index.js';
import { tell, type CliContext, type RunCommand } from '../context.js';
import { checkSpec, closeAll, openForCli, requireInside } from '../devices.js';
import {
  pathIdentity, refuseTableOutput, sameIdentity, specIdentity, type StorageIdentity,
} from '../same-storage.js';
import { OutputError, writeStdout } from '../stdout.js';
import { checkStdoutForData } from '../stdout-data.js';
import { parseLengthSectors, parseSector, type LengthOptions } from '../usage.js';
import { EXIT_IO_ERROR, EXIT_OK, UsageError } from '../exit-status.js';

/** Sectors read per dm-io request (1 MiB). */
const READ_CHUNK_SECTORS = (1024 * 1024) / SECTOR_SIZE;

interface ReadFlags extends LengthOptions {
  sector?: string;
  output?: string;
  direct?: boolean;
}

/** Where the bytes go: written in order, then closed. */
interface ReadOutput {
  write(bytes: Uint8Array): Promise<void>;
  close(): Promise<void>;
}

/** Adds `read` to the program. */
export function registerRead(program: Command, run: RunCommand): void {
  program.command('read')
    .description('read one region of a device to a file or stdout')
    .argument('<device>', 'device spec')
    .requiredOption('--sector <N>', 'first sector (512-byte units)')
    .option('--count <SECTORS>', 'sectors to read')
    .option('--length <SIZE>', 'bytes to read, with K/M/G/T suffixes (alternative to --count)')
    .option('--output <FILE>',
      'write here instead of stdout (created or truncated; never the device itself)')
    .option('--direct', 'open the device with O_DIRECT')
    .action((spec: string, flags: ReadFlags) => run((cli) => read(cli, spec, flags)));
}

async function read(cli: CliContext, spec: string, flags: ReadFlags): Promise<number> {
  const sector = parseSector(flags.sector ?? '', '--sector');
  const countSectors = parseLengthSectors(flags);
  if (countSectors === null) throw new UsageError('read needs --count or --length');
  checkSpec(spec, false);
  const deviceIdentity = specIdentity(spec);
  if (flags.output === undefined) checkStdoutForData(cli, spec, deviceIdentity);
  else checkOutputPath(flags.output, spec, deviceIdentity);
  const device = await openForCli(cli, {
    spec, options: { readOnly: true, direct: flags.direct === true },
  });
  const client = dmIoClientCreate();
  try {
    requireInside(device, sector, countSectors, 'device');
    const output = flags.output === undefined ? stdoutOutput(cli) :
      await openOutputFile(flags.output, spec, deviceIdentity);
    let status: number;
    try {
      status = await copyRegion(cli, { spec, client, device, sector, countSectors, output });
    } catch (error) {
      await output.close().catch(() => undefined);
      throw error;
    }
    await output.close();
    return status;
  } finally {
    await dmIoClientDestroy(client);
    await closeAll([device]);
  }
}

/** What `copyRegion` reads and where it writes. */
interface RegionCopy {
  readonly spec: string;
  readonly client: DmIoClient;
  readonly device: BlockDevice;
  readonly sector: number;
  readonly countSectors: number;
  readonly output: ReadOutput;
}

/** Reads the region chunk by chunk into `output`; exit 1 at the first read error. */
async function copyRegion(cli: CliContext, plan: RegionCopy): Promise<number> {
  const { device, client, sector, countSectors, output } = plan;
  const buffer = allocAligned(sectorsToBytes(Math.max(1, Math.min(countSectors,
    READ_CHUNK_SECTORS))));
  for (let done = 0; done < countSectors; done += READ_CHUNK_SECTORS) {
    const sectors = Math.min(READ_CHUNK_SECTORS, countSectors - done);
    const { errorBits, errors } = await dmIo({ op: 'read', mem: { type: 'kmem', data: buffer },
      client }, [{ device, sector: sector + done, count: sectors }]);
    if (errorBits !== 0n) {
      tell(cli, `dmio: reading ${plan.spec} failed: ${errors[0]?.message ?? 'EIO'}\n`);
      return EXIT_IO_ERROR;
    }
    await output.write(buffer.subarray(0, sectorsToBytes(sectors)));
  }
  return EXIT_OK;
}

/**
 * Refuses an --output that cannot be written or is the device being read, before anything
 * is opened: a directory, a missing directory, or the same file or block device.
 */
function checkOutputPath(path: string, spec: string, deviceIdentity: StorageIdentity | null): void {
  let isDirectory: boolean;
  try {
    isDirectory = statSync(path).isDirectory();
  } catch {
    const parent = dirname(path);
    let parentIsDirectory = false;
    try {
      parentIsDirectory = statSync(parent).isDirectory();
    } catch {
      // Reported below.
    }
    if (!parentIsDirectory) {
      throw new UsageError(`--output ${path}: directory ${parent} does not exist`);
    }
    return; // A new file.
  }
  if (isDirectory) throw new UsageError(`--output ${path} is a directory`);
  refuseSameStorage(path, spec, deviceIdentity, pathIdentity(path));
  refuseTableOutput(spec, path);
}

function refuseSameStorage(path: string, spec: string, deviceIdentity: StorageIdentity | null,
  outputIdentity: StorageIdentity | null): void {
  if (!sameIdentity(deviceIdentity, outputIdentity)) return;
  const what = outputIdentity?.kind === 'block' ? 'block device' : 'file';
  throw new UsageError(`--output ${path} is the same ${what} as ${spec}, the device being ` +
    'read; writing it would destroy what is read');
}

/**
 * Opens --output for writing without truncating it, checks once more (on the open file) that
 * it is not the device, and only then truncates a regular file.
 */
async function openOutputFile(path: string, spec: string,
  deviceIdentity: StorageIdentity | null): Promise<ReadOutput> {
  let handle: FileHandle;
  // A block device is opened exclusively, as copy, zero and write open their destinations:
  // a mounted or otherwise held one is refused (EBUSY) instead of written into.
  const block = pathIdentity(path)?.kind === 'block';
  try {
    handle = await open(path, constants.O_WRONLY | (block ? constants.O_EXCL : constants.O_CREAT),
      0o666);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EBUSY') {
      throw new UsageError(`--output ${path} is in use (mounted, or held by another program ` +
        'or a device-mapper table); refusing to write to it');
    }
    throw new UsageError(`cannot open --output ${path}: ${(error as Error).message}`);
  }
  try {
    const stats = await handle.stat({ bigint: true });
    const identity: StorageIdentity | null = stats.isBlockDevice() ?
      { kind: 'block', rdev: stats.rdev } :
      stats.isFile() ? { kind: 'file', dev: stats.dev, ino: stats.ino } : null;
    refuseSameStorage(path, spec, deviceIdentity, identity);
    if (stats.isFile()) await handle.truncate(0);
  } catch (error) {
    await handle.close().catch(() => undefined);
    if (error instanceof UsageError) throw error;
    throw new UsageError(`cannot truncate --output ${path}: ${(error as Error).message}`);
  }
  return fileOutput(path, handle);
}

function fileOutput(path: string, handle: FileHandle): ReadOutput {
  const fail = (error: unknown): never => {
    throw new OutputError(path, error as NodeJS.ErrnoException);
  };
  return {
    write: async (bytes) => {
      for (let doneBytes = 0; doneBytes < bytes.length;) {
        const { bytesWritten } = await handle.write(bytes, doneBytes, bytes.length - doneBytes)
          .catch(fail);
        doneBytes += bytesWritten;
      }
    },
    close: () => handle.close().catch(fail),
  };
}

function stdoutOutput(cli: CliContext): ReadOutput {
  return { write: (bytes) => writeStdout(cli, bytes), close: () => Promise.resolve() };
}
