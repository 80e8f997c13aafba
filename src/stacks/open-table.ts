// Owns opening a table: text (or a `table:` file) to a TableDevice. In order: parse every line
// and every target's arguments (so a bad table is refused before anything is opened), open each
// distinct device argument once, check each target's extents against its device, build the
// targets, check segment alignment against the table's logical block. Whatever fails, every
// device opened and every target built so far is stopped and closed before the error is thrown.
//
// Imports flow one way: this module never imports `open-device.ts`. The caller passes the
// function that opens a non-table device spec (`openDevice` does, from its `table:` dispatch);
// a nested `table:` argument is opened here, recursively, with the chain of table files above
// it, so a table that names itself through its devices is refused (`DMIO_ERR_TABLE_CYCLE`).
// Paths inside a table (files and nested tables) are as `openDevice` sees them: relative ones
// are relative to the process's working directory, not to the table file. A block device may
// also be named `MAJOR:MINOR`, as in the kernel's tables (found through /sys/dev/block).

import { readFileSync, statSync } from 'node:fs';
import { readFile, realpath, stat } from 'node:fs/promises';
import { dmIoClientCreate, dmIoClientDestroy } from '../core/client.js';
import type { BlockDevice } from '../devices/block-device.js';
import { errnoOf, OpenError, TableError } from '../errors.js';
import { closeDevices, TableDevice, type TableSegment } from './table-device.js';
import { parseTableText, type TableLine, type TableSource } from './table-text.js';
import type { Target, TargetPlan } from './target.js';
import { TARGET_TYPES } from './target-types.js';
import { MIB } from '../constants.js';
import { bytesToSectorsExact } from '../units.js';

/** Opens a device spec that is not a `table:` spec. */
export type DeviceOpener = (spec: string, readOnly: boolean) => Promise<BlockDevice>;

/** Options of the table openers. */
export interface OpenTableOptions {
  /** Open every device read-only; targets then write nothing, not even metadata. */
  readOnly?: boolean;
  /** The device's name in messages (default the table's path, or `table:<text>`). */
  name?: string;
  /**
   * Milliseconds now: the flakey target's up/down clock and the writecache's pause timing
   * (default `Date.now`). Delays are real time whatever this says.
   */
  now?: () => number;
  /**
   * Background copies (mirror resync, writecache writeback) run under a kcopyd throttle of this
   * many percent of wall time busy, 1 to 100 (default 100: unthrottled, as the kernel's default).
   */
  copyThrottlePercent?: number;
}

/** Largest table file read, in bytes. */
const TABLE_FILE_BYTES_MAX = MIB;
const TABLE_PREFIX = 'table:';
/** A block device named as the kernel's tables do, `MAJOR:MINOR`. */
const MAJOR_MINOR = /^\d+:\d+$/;

/** A planned line: where it is, what it needs. */
interface PlannedLine {
  readonly line: TableLine;
  readonly plan: TargetPlan;
}

/**
 * Opens the table in file `path` (the device spec `table:PATH`).
 *
 * @throws OpenError when the file cannot be read; TableError (`DMIO_ERR_INVALID_TABLE`,
 * `DMIO_ERR_TABLE_CYCLE`) naming the line at fault; any error of opening a device the table
 * names. Nothing is left open when it throws.
 */
export async function openTableFile(
  path: string, open: DeviceOpener, options: OpenTableOptions = {},
  ancestors: readonly string[] = [],
): Promise<TableDevice> {
  const resolved = await resolveTablePath(path);
  const text = await readTableFile(path);
  return openTableText(text, open, { name: path, ...options }, [...ancestors, resolved], path);
}

/**
 * Opens a table given as text.
 *
 * @throws TableError naming the line; any error of opening a device the table names. Nothing
 * is left open when it throws.
 */
export async function openTableText(
  text: string, open: DeviceOpener, options: OpenTableOptions = {},
  ancestors: readonly string[] = [], source: TableSource = '<text>',
): Promise<TableDevice> {
  const readOnly = options.readOnly ?? false;
  const planned = planLines(text, source);
  const { specs, devices } = await openDevices(planned, source, open, options, ancestors);
  const ioClient = dmIoClientCreate();
  const release = (): Promise<void> => dmIoClientDestroy(ioClient);
  const targets: Target[] = [];
  try {
    checkExtents(planned, specs, devices, source);
    for (const { line, plan } of planned) {
      targets.push(await plan.create({
        devices: plan.deviceArgs.map((spec) => devices[specs.indexOf(spec)] as BlockDevice),
        deviceIds: plan.deviceArgs, lengthSectors: line.lengthSectors, ioClient, readOnly,
        now: options.now ?? Date.now, source, lineNumber: line.lineNumber,
        copyThrottlePercent: options.copyThrottlePercent ?? 100,
      }));
    }
    const segments: TableSegment[] = planned.map(({ line }, index) => ({
      startSector: line.startSector, lengthSectors: line.lengthSectors,
      lineNumber: line.lineNumber, target: targets[index] as Target,
    }));
    const device = new TableDevice({
      name: options.name ?? `${TABLE_PREFIX}${source}`, segments, ownedDevices: devices,
      ioClient, release, readOnly,
    });
    checkBlockAlignment(segments, device.limits.logicalBlockBytes, source);
    return device;
  } catch (error) {
    await Promise.allSettled(targets.reverse().map((target) => target.stop()));
    await closeDevices(devices).catch(() => undefined);
    await release();
    throw error;
  }
}

/**
 * The device arguments of the table in file `path` (the device spec `table:PATH`), in order,
 * each once: what its lines' targets would open (nested `table:` specs and `MAJOR:MINOR`
 * names as written). Reads and parses the file synchronously; opens no device. For checks made
 * before anything is opened (the CLI's same-storage refusals).
 *
 * @throws OpenError when the file cannot be read; TableError as `openTableFile` for a bad line.
 */
export function readTableDeviceArgs(path: string): string[] {
  let text: string;
  try {
    const info = statSync(path);
    if (!info.isFile()) throw Object.assign(new Error('not a regular file'), { code: 'EINVAL' });
    if (info.size > TABLE_FILE_BYTES_MAX) {
      throw Object.assign(new Error(`larger than ${TABLE_FILE_BYTES_MAX} bytes`), { code: 'EFBIG' });
    }
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw new OpenError(path, errnoOf(error), `cannot read the table file: ${(error as Error).message}`,
      { cause: error });
  }
  const specs: string[] = [];
  for (const { plan } of planLines(text, path)) {
    for (const spec of plan.deviceArgs) if (!specs.includes(spec)) specs.push(spec);
  }
  return specs;
}

/** Parses the text and every line's target arguments; opens nothing. */
function planLines(text: string, source: TableSource): PlannedLine[] {
  return parseTableText(text, source).map((line) => {
    const parser = TARGET_TYPES.get(line.target);
    if (parser === undefined) {
      throw new TableError('DMIO_ERR_INVALID_TABLE', source, line.lineNumber,
        `unknown target type ${JSON.stringify(line.target)} (known: ${[...TARGET_TYPES.keys()].join(', ')})`);
    }
    return { line, plan: parser(line.args, { source, lineNumber: line.lineNumber,
      lengthSectors: line.lengthSectors }) };
  });
}

/** Opens every distinct device argument once, in order; on failure closes what it opened. */
async function openDevices(
  planned: readonly PlannedLine[], source: TableSource, open: DeviceOpener,
  options: OpenTableOptions, ancestors: readonly string[],
): Promise<{ specs: string[]; devices: BlockDevice[] }> {
  const specs: string[] = [];
  const devices: BlockDevice[] = [];
  try {
    for (const { line, plan } of planned) {
      for (const spec of plan.deviceArgs) {
        if (specs.includes(spec)) continue;
        const device = spec.startsWith(TABLE_PREFIX) ?
          await openNested(spec.slice(TABLE_PREFIX.length), source, line.lineNumber, open,
            options, ancestors) :
          await open(MAJOR_MINOR.test(spec) ? await blockDevicePath(spec, source, line.lineNumber) : spec,
            options.readOnly ?? false);
        specs.push(spec);
        devices.push(device);
      }
    }
  } catch (error) {
    await closeDevices(devices).catch(() => undefined);
    throw error;
  }
  return { specs, devices };
}

/** Opens a nested `table:` argument, refusing one that leads back to a table above it. */
async function openNested(
  path: string, source: TableSource, lineNumber: number, open: DeviceOpener,
  options: OpenTableOptions, ancestors: readonly string[],
): Promise<TableDevice> {
  const resolved = await resolveTablePath(path);
  if (ancestors.includes(resolved)) {
    const chain = [...ancestors.slice(ancestors.indexOf(resolved)), resolved].join(' -> ');
    throw new TableError('DMIO_ERR_TABLE_CYCLE', source, lineNumber,
      `table:${path} leads back to a table above it (${chain})`);
  }
  const { name: _name, ...inherited } = options;
  return openTableFile(path, open, inherited, ancestors);
}

/** Every extent a target uses lies inside its device and on its logical blocks. */
function checkExtents(
  planned: readonly PlannedLine[], specs: readonly string[], devices: readonly BlockDevice[],
  source: TableSource,
): void {
  for (const { line, plan } of planned) {
    for (const extent of plan.extents) {
      const spec = plan.deviceArgs[extent.device] as string;
      const device = devices[specs.indexOf(spec)] as BlockDevice;
      const fail = (reason: string): never => {
        throw new TableError('DMIO_ERR_INVALID_TABLE', source, line.lineNumber,
          `${line.target}: device ${spec} ${reason}`);
      };
      if (extent.sector + extent.countSectors > device.sizeSectors) {
        fail(`too small for target: sectors ${extent.sector}+${extent.countSectors} ` +
          `beyond its ${device.sizeSectors} sectors`);
      }
      const blockSectors = bytesToSectorsExact(device.limits.logicalBlockBytes);
      if (extent.sector % blockSectors !== 0 || extent.countSectors % blockSectors !== 0) {
        fail(`not aligned to its ${device.limits.logicalBlockBytes}-byte logical block: ` +
          `sectors ${extent.sector}+${extent.countSectors}`);
      }
    }
  }
}

/** Every segment starts and ends on the table's logical block. */
function checkBlockAlignment(
  segments: readonly TableSegment[], logicalBlockBytes: number, source: TableSource,
): void {
  const blockSectors = bytesToSectorsExact(logicalBlockBytes);
  for (const segment of segments) {
    if (segment.startSector % blockSectors !== 0 || segment.lengthSectors % blockSectors !== 0) {
      throw new TableError('DMIO_ERR_INVALID_TABLE', source, segment.lineNumber,
        `segment ${segment.startSector}+${segment.lengthSectors} is not aligned to the ` +
        `table's ${logicalBlockBytes}-byte logical block`);
    }
  }
}

/** The device node of block device `MAJOR:MINOR`, from /sys/dev/block/MAJOR:MINOR/uevent. */
async function blockDevicePath(majorMinor: string, source: TableSource, lineNumber: number): Promise<string> {
  try {
    const uevent = await readFile(`/sys/dev/block/${majorMinor}/uevent`, 'utf8');
    const name = /^DEVNAME=(.+)$/m.exec(uevent)?.[1];
    if (name !== undefined) return `/dev/${name}`;
  } catch {
    // Reported below.
  }
  throw new TableError('DMIO_ERR_INVALID_TABLE', source, lineNumber,
    `device lookup failed: no block device ${majorMinor}`);
}

async function resolveTablePath(path: string): Promise<string> {
  try {
    return await realpath(path);
  } catch (error) {
    throw new OpenError(path, errnoOf(error), 'cannot resolve the table file', { cause: error });
  }
}

async function readTableFile(path: string): Promise<string> {
  try {
    const info = await stat(path);
    if (!info.isFile()) throw Object.assign(new Error('not a regular file'), { code: 'EINVAL' });
    if (info.size > TABLE_FILE_BYTES_MAX) {
      throw Object.assign(new Error(`larger than ${TABLE_FILE_BYTES_MAX} bytes`), { code: 'EFBIG' });
    }
    return await readFile(path, 'utf8');
  } catch (error) {
    throw new OpenError(path, errnoOf(error), `cannot read the table file: ${(error as Error).message}`,
      { cause: error });
  }
}
