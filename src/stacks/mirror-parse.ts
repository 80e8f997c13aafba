// Owns the `mirror` table line: `mirror LOGTYPE #LOGARGS LOGARGS... #LEGS (DEV OFFSET){#LEGS}
// [#FEATURES FEATURE...]`, with log `core REGION [sync|nosync]` or `disk LOGDEV REGION
// [sync|nosync]` and features `handle_errors`, `keep_log` (which needs handle_errors). REGION
// is in sectors, a power of two from 2 to the segment's length; 2 to 9 legs (kcopyd copies to 8
// destinations). Building the target opens the log (a disk log is read, and rewritten unless
// the table is read-only) and starts resync.

import type { BlockDevice } from '../devices/block-device.js';
import { TableError } from '../errors.js';
import { DirtyLog, type SyncMode } from './dirty-log.js';
import { DiskLog, diskLogBufferBytes } from './disk-log.js';
import type { Leg } from './mirror-legs.js';
import { MirrorTarget, type MirrorFeatures } from './mirror-target.js';
import { parseNumberArg } from './table-text.js';
import type { TargetEnv, TargetExtent, TargetLine, TargetPlan } from './target.js';
import { sectorsToBytes } from '../units.js';

const LEGS_MIN = 2;
const LEGS_MAX = 9;

/** The log part of a mirror line. */
interface LogArgs {
  readonly type: 'core' | 'disk';
  readonly logDevice: string | null;
  readonly regionSectors: number;
  readonly syncMode: SyncMode;
}

/** Parses a mirror line's arguments. */
export function parseMirror(args: readonly string[], line: TargetLine): TargetPlan {
  const fail = (reason: string): never => {
    throw new TableError('DMIO_ERR_INVALID_TABLE', line.source, line.lineNumber, `mirror: ${reason}`);
  };
  const number = (index: number, what: string, max?: number): number => {
    const text = args[index];
    if (text === undefined) return fail(`missing ${what}`);
    return parseNumberArg(text, what, line.source, line.lineNumber, max);
  };
  const log = parseLog(args, line, fail, number);
  let index = 2 + (log.type === 'core' ? 1 : 2) + (log.syncMode === 'default' ? 0 : 1);
  const legCount = number(index, 'leg count', 1000);
  if (legCount < LEGS_MIN || legCount > LEGS_MAX) fail(`leg count must be ${LEGS_MIN} to ${LEGS_MAX}, got ${legCount}`);
  index += 1;
  const legArgs: string[] = [];
  const offsets: number[] = [];
  for (let leg = 0; leg < legCount; leg += 1) {
    const deviceArg = args[index];
    if (deviceArg === undefined) fail(`expected ${legCount} DEV OFFSET pairs`);
    legArgs.push(deviceArg as string);
    offsets.push(number(index + 1, `leg ${leg} offset`));
    index += 2;
  }
  const features = parseFeatures(args, index, fail, number);
  const deviceArgs = log.logDevice === null ? legArgs : [...legArgs, log.logDevice];
  const extents: TargetExtent[] = offsets.map((sector, device) => ({
    device, sector, countSectors: line.lengthSectors,
  }));
  return {
    deviceArgs, extents,
    create: (env) => createMirror(env, log, offsets, features),
  };
}

function parseLog(
  args: readonly string[], line: TargetLine, fail: (reason: string) => never,
  number: (index: number, what: string, max?: number) => number,
): LogArgs {
  const type = args[0];
  if (type !== 'core' && type !== 'disk') {
    return fail(`unknown dirty log type ${JSON.stringify(type ?? '')} (core or disk)`);
  }
  const paramCount = number(1, 'log argument count', 1000);
  const base = type === 'core' ? 1 : 2;
  if (paramCount !== base && paramCount !== base + 1) {
    fail(`${type} log takes ${base} or ${base + 1} arguments, got ${paramCount}`);
  }
  const logDevice = type === 'disk' ? args[2] ?? fail('missing log device') : null;
  const regionSectors = number(1 + base, 'region size');
  if (regionSectors < 2 || (regionSectors & (regionSectors - 1)) !== 0 ||
      regionSectors > line.lengthSectors) {
    fail(`invalid region size ${regionSectors} (a power of two from 2 to the target length)`);
  }
  let syncMode: SyncMode = 'default';
  if (paramCount === base + 1) {
    const word = args[2 + base];
    if (word !== 'sync' && word !== 'nosync') return fail(`unknown log argument ${JSON.stringify(word ?? '')}`);
    syncMode = word;
  }
  return { type, logDevice, regionSectors, syncMode };
}

function parseFeatures(
  args: readonly string[], index: number, fail: (reason: string) => never,
  number: (index: number, what: string, max?: number) => number,
): MirrorFeatures {
  if (index === args.length) return { handleErrors: false, keepLog: false };
  const count = number(index, 'feature count', 1000);
  const words = args.slice(index + 1);
  if (words.length < count) fail(`expected ${count} features, got ${words.length}`);
  if (words.length > count) fail('too many mirror arguments');
  for (const word of words) {
    if (word !== 'handle_errors' && word !== 'keep_log') fail(`unrecognised feature ${JSON.stringify(word)}`);
  }
  const handleErrors = words.includes('handle_errors');
  const keepLog = words.includes('keep_log');
  if (keepLog && !handleErrors) fail('keep_log requires handle_errors');
  return { handleErrors, keepLog };
}

async function createMirror(
  env: TargetEnv, logArgs: LogArgs, offsets: readonly number[], features: MirrorFeatures,
): Promise<MirrorTarget> {
  const regionCount = Math.ceil(env.lengthSectors / logArgs.regionSectors);
  const legs: Leg[] = offsets.map((offsetSectors, index) => ({
    index, device: env.devices[index] as BlockDevice, deviceId: env.deviceIds[index] as string, offsetSectors,
    errorCount: 0, health: 'A',
  }));
  let log: DirtyLog;
  if (logArgs.type === 'core') {
    log = new DirtyLog(regionCount, logArgs.regionSectors, logArgs.syncMode);
  } else {
    const device = env.devices[offsets.length] as BlockDevice;
    const deviceId = env.deviceIds[offsets.length] as string;
    const bufferBytes = diskLogBufferBytes(regionCount, device.limits.logicalBlockBytes);
    if (sectorsToBytes(device.sizeSectors) < bufferBytes) {
      throw new TableError('DMIO_ERR_INVALID_TABLE', env.source, env.lineNumber,
        `mirror: log device ${deviceId} too small: ${bufferBytes} bytes needed`);
    }
    log = new DiskLog(regionCount, logArgs.regionSectors, logArgs.syncMode, {
      device, deviceId, client: env.ioClient,
      readOnly: env.readOnly, source: env.source, lineNumber: env.lineNumber,
    });
  }
  await log.resume();
  const mirror = new MirrorTarget(env, log, legs, features);
  mirror.start();
  return mirror;
}
