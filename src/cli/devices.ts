// Owns how the CLI opens devices: the spec grammar of `openDevice`, creation of missing image
// files with the size a command needs, range checks that turn "does not fit" into a usage error
// before anything is written, and one test hook. The hook: when the environment variable
// DMIO_TEST_FAULTS holds a JSON object mapping a device spec to a fault spec (the options of
// `createFaultDevice`, e.g. {"b.img": {"ranges": [{"sector": 0, "countSectors": 8}]}}), that
// device is opened normally and wrapped in the fault injector. It exists so tests of the real
// binary can fail one real destination; nothing else reads it.

import { existsSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import type { BlockDevice } from '../devices/block-device.js';
import { createFaultDevice, type FaultSpec } from '../devices/fault-device.js';
import { openDevice, parseDeviceSpec, type OpenDeviceOptions } from '../devices/open-device.js';
import { UsageError } from './usage.js';

/** The environment variable of the fault-injection test hook. */
export const TEST_FAULTS_ENV = 'DMIO_TEST_FAULTS';

/** How one device is to be opened. */
export interface DeviceOpenPlan {
  readonly spec: string;
  readonly options: OpenDeviceOptions;
}

/** Checks a spec's grammar and, for files to be created, that their directory exists. */
export function checkSpec(spec: string, willCreate: boolean): void {
  let parsed;
  try {
    parsed = parseDeviceSpec(spec);
  } catch (error) {
    throw new UsageError((error as Error).message.replace(/^DMIO_ERR_\w+: /, ''));
  }
  if (parsed.kind !== 'file') return;
  if (existsSync(parsed.path)) {
    if (statSync(parsed.path).isDirectory()) throw new UsageError(`${spec} is a directory`);
    return;
  }
  if (!willCreate) throw new UsageError(`${spec} does not exist`);
  if (!existsSync(dirname(parsed.path))) {
    throw new UsageError(`${spec}: directory ${dirname(parsed.path)} does not exist`);
  }
}

/** True when the spec names a regular file (or a path that does not exist yet). */
export function isFileSpec(spec: string): boolean {
  const parsed = parseDeviceSpec(spec);
  if (parsed.kind !== 'file') return false;
  return !existsSync(parsed.path) || statSync(parsed.path).isFile();
}

/**
 * NBD connections the CLI asks for: 4, as nbdcopy does. The server must allow multi-conn
 * (CAN_MULTI_CONN), else one is used; measured here, reads ran about twice as fast as on one.
 */
const CLI_NBD_CONNECTIONS = 4;

/** Opens one device, applying the test fault hook; open failures become usage errors. */
export async function openForCli(plan: DeviceOpenPlan): Promise<BlockDevice> {
  let device: BlockDevice;
  try {
    device = await openDevice(plan.spec, {
      ...plan.options, nbd: { connections: CLI_NBD_CONNECTIONS, ...plan.options.nbd },
    });
  } catch (error) {
    throw new UsageError(`cannot open ${plan.spec}: ${(error as Error).message}`);
  }
  const faults = testFaults()[plan.spec];
  return faults === undefined ? device : createFaultDevice(device, { ...faults, name: plan.spec });
}

/**
 * Throws a usage error unless `[sector, sector + countSectors)` lies inside `device` and is
 * whole logical blocks of it.
 */
export function requireInside(
  device: BlockDevice, sector: number, countSectors: number, what: string,
): void {
  const blockSectors = device.limits.logicalBlockBytes / 512;
  if (sector % blockSectors !== 0 || countSectors % blockSectors !== 0) {
    throw new UsageError(`${what} ${device.name}: sector ${sector} and count ${countSectors} ` +
      `must be multiples of ${blockSectors} (its ${device.limits.logicalBlockBytes}-byte blocks)`);
  }
  if (sector + countSectors > device.sizeSectors) {
    throw new UsageError(`${what} ${device.name}: sectors ${sector}+${countSectors} run past ` +
      `its end (${device.sizeSectors} sectors)`);
  }
}

function testFaults(): Record<string, FaultSpec> {
  const text = process.env[TEST_FAULTS_ENV];
  if (text === undefined || text === '') return {};
  try {
    return JSON.parse(text) as Record<string, FaultSpec>;
  } catch {
    throw new UsageError(`${TEST_FAULTS_ENV} is not valid JSON`);
  }
}

/** Closes every device, ignoring errors (used on the way out). */
export async function closeAll(devices: readonly BlockDevice[]): Promise<void> {
  await Promise.all(devices.map((device) => device.close().catch(() => undefined)));
}
