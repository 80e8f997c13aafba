// Owns `dmio write`: the input (a file or stdin, at most 1 GiB, a whole number of sectors)
// written to the same sector of every device, 1 MiB at a time, each chunk one multi-region
// dm-io write; missing image files are created with the size needed, and an existing
// destination (image files too) must hold the region. Nothing is written until the input's
// size is known and fits. A regular input file is judged by its size before it is read and
// then streamed. Any other input (stdin, a pipe, a character device) is read into memory and
// stops the moment it exceeds the room from the sector to the end of the smallest existing
// destination, or the 1 GiB cap. A device that fails is dropped from later chunks; the outcome
// lists every device with the bytes it got, and only a device that got every chunk is ok.
// Then every device written to is flushed (unless --no-flush) before the outcome is told.
// Stdin is the context's: read by descriptor when it has one, else as a stream.

import { existsSync, fstatSync, read as fsRead } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { setTimeout as delay } from 'node:timers/promises';
import type { Readable } from 'node:stream';
import type { Command } from 'commander';
import {
  allocAligned, DM_IO_MAX_REGIONS, dmIo, dmIoClientCreate, dmIoClientDestroy, parseDeviceSpec,
  SECTOR_SIZE, sectorsToBytes, type BlockDevice, type DmIoClient,
} from '../../index.js';
import type { CliContext, RunCommand } from '../context.js';
import { checkSpec, closeAll, openForCli, requireInside } from '../devices.js';
import { flushDevices, flushErrorBits, withFlushErrors } from '../flush.js';
import { printReport, type DestinationReport } from '../report.js';
import { parseSector } from '../usage.js';
import { UsageError } from '../exit-status.js';
import { openDestinations } from './open-regions.js';

/** Largest input `dmio write` takes (1 GiB): a stream input is held in memory until written. */
const WRITE_INPUT_BYTES_MAX = 1024 * 1024 * 1024;
/** Bytes read and written per dm-io request (1 MiB). */
const WRITE_CHUNK_BYTES = 1024 * 1024;
/** Wait before reading again a non-blocking stdin that had nothing yet (EAGAIN). */
const EAGAIN_RETRY_MS = 10;

interface WriteFlags {
  sector?: string;
  input?: string;
  fua?: boolean;
  direct?: boolean;
  json?: boolean;
  flush: boolean;
}

/** Adds `write` to the program. */
export function registerWrite(program: Command, run: RunCommand): void {
  program.command('write')
    .description('write the input to the same sector of every device, one dm-io request ' +
      'per 1 MiB')
    .argument('<device...>',
      `1 to ${DM_IO_MAX_REGIONS} device specs; missing image files are created`)
    .requiredOption('--sector <N>', 'first sector (512-byte units)')
    .option('--input <FILE>', 'read the data from FILE instead of stdin')
    .option('--fua', 'make the write durable before it completes')
    .option('--direct', 'open files and block devices with O_DIRECT')
    .option('--no-flush', 'report success without flushing the devices first')
    .option('--json', 'print one JSON object with the outcome')
    .action((specs: string[], flags: WriteFlags) => run((cli) => write(cli, specs, flags)));
}

async function write(cli: CliContext, specs: string[], flags: WriteFlags): Promise<number> {
  if (specs.length > DM_IO_MAX_REGIONS) {
    throw new UsageError(`${specs.length} devices; at most ${DM_IO_MAX_REGIONS}`);
  }
  const sector = parseSector(flags.sector ?? '', '--sector');
  for (const spec of specs) checkSpec(spec, true);
  const input = await openInput(cli, flags.input);
  const opened: BlockDevice[] = [];
  const client = dmIoClientCreate();
  try {
    const direct = flags.direct === true;
    const chunks = await prepareInput(cli, input, specs, sector, direct);
    // Existing destinations must hold the region; missing image files are created.
    const devices = await openDestinations(cli, specs, sector, chunks.sizeBytes / SECTOR_SIZE,
      direct,
      opened, { growth: 'create-only', writeBehind: flags.flush });
    const startMs = performance.now();
    const outcome = await writeChunks({ chunks, devices, sector, client, fua: flags.fua === true });
    let destinations = destinationReports(specs, outcome, chunks.sizeBytes);
    let errorBits = outcome.errorBits;
    if (flags.flush) {
      // Durable before success: every device written to is flushed, a failed one too.
      const flushErrors = await flushDevices(devices, outcome.writtenBytes.map((writtenBytes) => writtenBytes > 0));
      destinations = withFlushErrors(destinations, flushErrors);
      errorBits |= flushErrorBits(flushErrors);
    }
    return printReport(cli, {
      readError: outcome.inputError !== null, writeErrorBits: errorBits, destinations,
      bytes: chunks.sizeBytes, seconds: (performance.now() - startMs) / 1000,
      flushed: flags.flush,
    }, flags.json === true, { verb: 'wrote', source: { spec: input.name,
      error: outcome.inputError } });
  } finally {
    await dmIoClientDestroy(client);
    await closeAll(opened);
    await input.close();
  }
}

// ---- The input ---------------------------------------------------------------------------

/** Where the data comes from. */
interface Input {
  /** `stdin` or the --input path. */
  readonly name: string;
  /** One read of up to `length` bytes at `position` (null: the next bytes of a stream). */
  read(buffer: Uint8Array, offset: number, length: number, position: number | null):
    Promise<number>;
  /**
   * The size of a regular file, or null for a stream (stdin, a pipe, a character device, a
   * file whose size is 0).
   */
  readonly regularSizeBytes: number | null;
  close(): Promise<void>;
}

/** The input, split into the chunks to write, with its size known. */
interface InputChunks {
  readonly sizeBytes: number;
  chunks(): AsyncIterable<Uint8Array>;
}

/** How much a stream may give: the cap, or the room of the smallest existing device. */
interface Room {
  readonly bytes: number;
  /** The device spec that bounds it, or null for the cap. */
  readonly limitedBy: string | null;
  /** The sector written from. */
  readonly fromSector: number;
}

/**
 * Reading the input failed (an I/O error, exit status 1; not bad usage). The message says why,
 * without naming the input, which the report does.
 */
class InputReadError extends Error {}

/** Opens --input (a missing file or a directory is bad usage), or takes stdin. */
async function openInput(cli: CliContext, path: string | undefined): Promise<Input> {
  if (path === undefined) {
    const stdinFd = cli.stdinFd;
    return { name: 'stdin', regularSizeBytes: null,
      read: stdinFd === null ? streamReader(cli.stdin) :
        (buffer, offset, length, position) => readSome(stdinFd, buffer, offset, length, position),
      close: () => Promise.resolve() };
  }
  let handle: FileHandle;
  try {
    handle = await open(path, 'r');
  } catch (error) {
    throw new UsageError(`--input ${path}: ${(error as Error).message}`);
  }
  const stats = fstatSync(handle.fd);
  if (stats.isDirectory()) {
    await handle.close();
    throw new UsageError(`--input ${path} is a directory`);
  }
  return { name: path,
    read: (buffer, offset, length, position) =>
      readSome(handle.fd, buffer, offset, length, position),
    // A file that says it holds nothing may still give bytes (/proc): read it as a stream.
    regularSizeBytes: stats.isFile() && stats.size > 0 ? stats.size : null,
    close: () => handle.close() };
}

/**
 * Checks the input's size against the cap and what a write needs, before anything is
 * written. A regular file is judged by its size (opening the destinations then checks that
 * they hold it) and streamed later. (An input that is also a destination is never overwritten
 * before it is read: its room from a later sector is smaller than it, and from sector 0 each
 * chunk goes back where it was read from.) A stream is read whole, bounded by the room of the
 * existing destinations.
 */
async function prepareInput(cli: CliContext, input: Input, specs: readonly string[], sector: number,
  direct: boolean): Promise<InputChunks> {
  const sizeBytes = input.regularSizeBytes;
  if (sizeBytes !== null) {
    if (sizeBytes > WRITE_INPUT_BYTES_MAX) {
      throw tooLarge(input, { bytes: WRITE_INPUT_BYTES_MAX, limitedBy: null, fromSector: sector },
        sizeBytes);
    }
    checkWholeSectors(sizeBytes);
    return { sizeBytes, chunks: () => fileChunks(input, sizeBytes) };
  }
  const room = await probeRoom(cli, specs, sector, direct);
  const buffered = await bufferStream(input, room).catch((error: unknown) => {
    if (!(error instanceof InputReadError)) throw error;
    throw new Error(`reading ${input.name} failed: ${error.message}; nothing was written`);
  });
  const totalBytes = buffered.reduce((sum, chunk) => sum + chunk.length, 0);
  checkWholeSectors(totalBytes);
  return { sizeBytes: totalBytes, chunks: () => listChunks(buffered) };
}

function checkWholeSectors(sizeBytes: number): void {
  if (sizeBytes === 0 || sizeBytes % SECTOR_SIZE !== 0) {
    throw new UsageError(`the input is ${sizeBytes} bytes; ` +
      `it must be a positive multiple of ${SECTOR_SIZE}`);
  }
}

function tooLarge(input: Input, room: Room, sizeBytes: number | null): UsageError {
  const what = sizeBytes === null ? input.name : `${input.name}, ${sizeBytes} bytes`;
  const why = room.limitedBy === null ? 'is over 1 GiB, the most write takes' :
    `runs past the end of ${room.limitedBy} (${room.bytes} bytes fit from sector ` +
    `${room.fromSector})`;
  return new UsageError(`the input (${what}) ${why}; nothing was written`);
}

/**
 * Reads a stream into 1 MiB chunks until its end; throws as soon as it has given more than
 * `room` bytes (at most one byte more is read).
 */
async function bufferStream(input: Input, room: Room): Promise<Buffer[]> {
  const chunks: Buffer[] = [];
  let totalBytes = 0;
  for (;;) {
    const chunk = Buffer.allocUnsafe(WRITE_CHUNK_BYTES);
    let filledBytes = 0;
    while (filledBytes < chunk.length) {
      const wantedBytes = Math.min(chunk.length - filledBytes,
        room.bytes + 1 - totalBytes - filledBytes);
      const gotBytes = await readInput(input, chunk, filledBytes, wantedBytes, null);
      if (gotBytes === 0) break;
      filledBytes += gotBytes;
      if (totalBytes + filledBytes > room.bytes) throw tooLarge(input, room, null);
    }
    if (filledBytes > 0) chunks.push(chunk.subarray(0, filledBytes));
    totalBytes += filledBytes;
    if (filledBytes < chunk.length) return chunks;
  }
}

/** Reads a regular file in chunks into one aligned buffer, each chunk yielded once read. */
async function* fileChunks(input: Input, sizeBytes: number): AsyncGenerator<Uint8Array> {
  const buffer = allocAligned(Math.min(WRITE_CHUNK_BYTES, sizeBytes));
  for (let offsetBytes = 0; offsetBytes < sizeBytes; offsetBytes += buffer.length) {
    const lengthBytes = Math.min(buffer.length, sizeBytes - offsetBytes);
    for (let filledBytes = 0; filledBytes < lengthBytes;) {
      const gotBytes = await readInput(input, buffer, filledBytes, lengthBytes - filledBytes,
        offsetBytes + filledBytes);
      if (gotBytes === 0) {
        throw new InputReadError(`it ended at ${offsetBytes + filledBytes} bytes, before ` +
          `its size of ${sizeBytes} (it shrank while being written)`);
      }
      filledBytes += gotBytes;
    }
    yield buffer.subarray(0, lengthBytes);
  }
}

async function* listChunks(chunks: readonly Uint8Array[]): AsyncGenerator<Uint8Array> {
  yield* chunks;
}

/** One read(2) of the input; an error becomes an `InputReadError`. */
async function readInput(input: Input, buffer: Uint8Array, offset: number, length: number,
  position: number | null): Promise<number> {
  for (;;) {
    try {
      return await input.read(buffer, offset, length, position);
    } catch (error) {
      // stdin may be a non-blocking pipe shared with the shell: wait for data.
      if ((error as NodeJS.ErrnoException).code === 'EAGAIN') {
        await delay(EAGAIN_RETRY_MS);
        continue;
      }
      throw new InputReadError((error as Error).message);
    }
  }
}

/**
 * Reads a stream (a test's stdin) as `Input.read` does a descriptor: each call takes up to
 * `length` bytes of what the stream gave, 0 at its end. Bytes beyond a call wait for the next.
 */
function streamReader(stream: Readable): Input['read'] {
  const chunks = stream[Symbol.asyncIterator]() as AsyncIterator<Buffer | string>;
  let pending: Buffer = Buffer.alloc(0);
  let ended = false;
  return async (buffer, offset, length) => {
    while (pending.length === 0 && !ended) {
      const next = await chunks.next();
      if (next.done === true) ended = true;
      else pending = Buffer.from(next.value);
    }
    const taken = Math.min(length, pending.length);
    buffer.set(pending.subarray(0, taken), offset);
    pending = pending.subarray(taken);
    return taken;
  };
}

function readSome(fd: number, buffer: Uint8Array, offset: number, length: number,
  position: number | null): Promise<number> {
  return new Promise((resolve, reject) => {
    fsRead(fd, buffer, offset, length, position, (error, bytesRead) => {
      if (error === null) resolve(bytesRead);
      else reject(error);
    });
  });
}

// ---- The devices -------------------------------------------------------------------------

/** True when the spec names an image file that does not exist yet (to be created). */
function isMissingFile(spec: string): boolean {
  const parsed = parseDeviceSpec(spec);
  return parsed.kind === 'file' && !existsSync(parsed.path);
}

/**
 * How much a stream may give: every device that exists is opened read-only just to learn its
 * size (the sector must be inside it), then closed; the smallest room from `sector`, or the
 * cap, bounds the input. The devices are opened for writing only once the input is known.
 */
async function probeRoom(cli: CliContext, specs: readonly string[], sector: number,
  direct: boolean): Promise<Room> {
  let room: Room = { bytes: WRITE_INPUT_BYTES_MAX, limitedBy: null, fromSector: sector };
  for (const spec of specs) {
    if (isMissingFile(spec)) continue;
    const device = await openForCli(cli, { spec, options: { readOnly: true, direct } });
    try {
      requireInside(device, sector, 0, 'destination');
      const bytes = sectorsToBytes(device.sizeSectors - sector);
      if (bytes < room.bytes) room = { bytes, limitedBy: spec, fromSector: sector };
    } finally {
      await closeAll([device]);
    }
  }
  return room;
}

function devicesAt(devices: readonly BlockDevice[], index: number): BlockDevice {
  const device = devices[index];
  if (device === undefined) throw new Error(`no device opened at ${index}`);
  return device;
}

// ---- Writing -----------------------------------------------------------------------------

interface WritePlan {
  readonly chunks: InputChunks;
  readonly devices: readonly BlockDevice[];
  readonly sector: number;
  readonly client: DmIoClient;
  readonly fua: boolean;
}

/** What every device got. */
interface WriteOutcome {
  readonly writtenBytes: readonly number[];
  /** The first error of each device, or null. */
  readonly errors: ReadonlyArray<string | null>;
  /** Bit d set ⇔ device d failed on some chunk (OR of every chunk's bits, by device). */
  readonly errorBits: bigint;
  /** Why reading the input stopped early, or null. */
  readonly inputError: string | null;
}

/**
 * Writes chunk after chunk to every device that has not failed yet, one dm-io request each;
 * stops when the input ends, fails, or no device is left.
 */
async function writeChunks(plan: WritePlan): Promise<WriteOutcome> {
  const writtenBytes = plan.devices.map(() => 0);
  const errors: Array<string | null> = plan.devices.map(() => null);
  let errorBits = 0n;
  let offsetBytes = 0;
  try {
    for await (const chunk of plan.chunks.chunks()) {
      const live = plan.devices.flatMap((_, index) => (errors[index] === null ? [index] : []));
      if (live.length === 0) break;
      const result = await dmIo({
        op: 'write', mem: { type: 'vm', data: chunk }, client: plan.client,
        flags: { fua: plan.fua },
      }, live.map((index) => ({ device: devicesAt(plan.devices, index),
        sector: plan.sector + offsetBytes / SECTOR_SIZE, count: chunk.length / SECTOR_SIZE })));
      for (const [region, index] of live.entries()) {
        if (((result.errorBits >> BigInt(region)) & 1n) === 1n) {
          errors[index] = result.errors[region]?.message ?? 'EIO';
          errorBits |= 1n << BigInt(index);
        } else {
          writtenBytes[index] = (writtenBytes[index] ?? 0) + chunk.length;
        }
      }
      offsetBytes += chunk.length;
    }
  } catch (error) {
    if (!(error instanceof InputReadError)) throw error;
    return { writtenBytes, errors, errorBits, inputError: error.message };
  }
  return { writtenBytes, errors, errorBits, inputError: null };
}

/** One report per device: ok only when every byte of the input reached it. */
function destinationReports(specs: readonly string[], outcome: WriteOutcome,
  sizeBytes: number): DestinationReport[] {
  return specs.map((device, index) => {
    const bytesWritten = outcome.writtenBytes[index] ?? 0;
    const error = outcome.errors[index] ?? null;
    if (error !== null) return { device, ok: false, bytesWritten, error };
    if (bytesWritten < sizeBytes) {
      return { device, ok: false, bytesWritten,
        error: 'incomplete: the write stopped when reading the input failed' };
    }
    return { device, ok: true, bytesWritten, error: null };
  });
}
