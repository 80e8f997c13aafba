// Owns what an export is to a connection thread, which opens every export again for itself
// (connection-threads.ts): which devices can be opened again, the description the server
// sends a thread, and the opening the thread makes from it.
//
// - A file or block device (`FileDevice`) is opened again through `/proc/self/fd/N` of the
//   server's own descriptor: the same inode, whatever its path has become since.
// - A table (`TableDevice`) whose every target keeps no state (linear, zero, error:
//   `Target.tableWith`) over such devices is opened again from its own canonical text, each
//   device named `@N` and opened again as above. Other targets keep state that one instance
//   must own: a mirror its region states, a writecache its metadata, striped the per-leg error
//   counts its status reports; a table with one is served on the main thread only.
// Whatever the thread opens must be the same file (device and inode, recorded when the server
// was made, so a descriptor closed and reused since is caught) with the same size and logical
// block, and a device the server opened read-only is opened read-only again.

import { statSync } from 'node:fs';
import { openFileDevice, FileDevice } from '../devices/file-device.js';
import type { BlockDevice } from '../devices/block-device.js';
import type { FileEngine } from '../devices/file-engine.js';
import { openTableText } from '../stacks/open-table.js';
import { TableDevice } from '../stacks/table-device.js';

/** A file or block device as a thread opens it again. */
export interface ThreadFile {
  /** The server's device's name, for messages. */
  readonly name: string;
  /** `/proc/self/fd/N` of the server's own opening (FileDevice.reopenPath). */
  readonly reopenPath: string;
  /** `dev:ino` of the file behind it, as the server opened it. */
  readonly identity: string;
  readonly readOnly: boolean;
  readonly direct: boolean;
  /** What the thread's opening must match. */
  readonly sizeSectors: number;
  readonly logicalBlockBytes: number;
}

/** An export as a thread opens it again. */
export interface ThreadExport {
  readonly name: string;
  readonly description: string;
  readonly readOnly: boolean;
  /** The device itself when it is a file or block device. */
  readonly file: ThreadFile | null;
  /** Else a table: its name, its canonical text, naming device `files[N]` as `@N`. */
  readonly table: {
    readonly name: string;
    readonly text: string;
    readonly files: readonly ThreadFile[];
  } | null;
  /** What the thread's opening must match. */
  readonly sizeSectors: number;
  readonly logicalBlockBytes: number;
  /** The export's ThreadWriteGate state. */
  readonly gateState: SharedArrayBuffer;
}

/**
 * True when a server's connection threads (`NbdServerOptions.threads`) can serve `device`:
 * an open file or block device (`FileDevice`), or an open table whose targets are all linear,
 * zero or error over such devices. Each thread opens it again for itself.
 */
export function threadableDevice(device: BlockDevice): boolean {
  if (device instanceof FileDevice) return !device.closed;
  if (!(device instanceof TableDevice) || device.closed) return false;
  return device.targets.every((target) => target.tableWith !== undefined &&
    target.devices.every((leg) => leg instanceof FileDevice && !leg.closed));
}

/**
 * How a thread opens `device` (which `threadableDevice` accepted) again. Made when the server
 * is made: the files' identities are taken then.
 */
export function describeForThread(
  name: string, description: string, readOnly: boolean, device: BlockDevice,
  gateState: SharedArrayBuffer,
): ThreadExport {
  const base = { name, description, readOnly, gateState, sizeSectors: device.sizeSectors,
    logicalBlockBytes: device.limits.logicalBlockBytes };
  if (device instanceof FileDevice) return { ...base, file: threadFile(device), table: null };
  const table = device as TableDevice;
  const legs: FileDevice[] = [];
  const idOf = (leg: BlockDevice): string => {
    let index = legs.indexOf(leg as FileDevice);
    if (index < 0) index = legs.push(leg as FileDevice) - 1;
    return `@${index}`;
  };
  const targets = table.targets;
  const lines = table.segmentStatus().map((segment, index) => {
    const target = targets[index];
    const args = target?.tableWith?.(target.devices.map(idOf));
    if (args === undefined) throw new Error(`table segment ${index} cannot be opened again`);
    return `${segment.startSector} ${segment.lengthSectors} ${segment.target} ${args}`.trimEnd();
  });
  return { ...base, file: null,
    table: { name: table.name, text: lines.join('\n'), files: legs.map(threadFile) } };
}

/**
 * Opens an export again in a thread, on `engine`. Throws when it cannot, or when what it opened
 * differs from the server's device (another file, another size or logical block); nothing is
 * left open then.
 */
export async function openInThread(entry: ThreadExport, engine: FileEngine): Promise<BlockDevice> {
  const readOnly = entry.readOnly;
  let device: BlockDevice;
  const table = entry.table;
  if (entry.file !== null) {
    device = await openFile(entry.file, readOnly, engine);
  } else if (table !== null) {
    device = await openTableText(table.text, (spec) => {
      const file = table.files[Number(spec.slice(1))];
      if (!spec.startsWith('@') || file === undefined) {
        throw new Error(`no device ${spec} for a thread's table`);
      }
      return openFile(file, readOnly, engine);
    }, { readOnly, name: table.name });
  } else {
    throw new Error(`export '${entry.name}' has nothing to open`);
  }
  if (device.sizeSectors !== entry.sizeSectors ||
      device.limits.logicalBlockBytes !== entry.logicalBlockBytes) {
    await device.close();
    throw new Error(`export '${entry.name}' changed size or block size when opened again`);
  }
  return device;
}

/**
 * Closes what a thread opened for its exports, then the engine they ran on; a device that
 * will not close is passed over (the thread is ending, and each close is tried).
 */
export async function closeThreadDevices(
  devices: readonly BlockDevice[], engine: FileEngine,
): Promise<void> {
  for (const device of devices) await device.close().catch(() => undefined);
  engine.close();
}

function threadFile(device: FileDevice): ThreadFile {
  return { name: device.name, reopenPath: device.reopenPath, identity: identityOf(device.reopenPath),
    readOnly: device.readOnly, direct: device.direct, sizeSectors: device.sizeSectors,
    logicalBlockBytes: device.limits.logicalBlockBytes };
}

/** `dev:ino` of the file a path leads to. */
function identityOf(path: string): string {
  const stats = statSync(path, { bigint: true });
  return `${stats.dev}:${stats.ino}`;
}

/**
 * Opens a file again and checks it is what the server opened: the same file, size and block.
 * Read-only when the export is, or when the server's opening was.
 */
async function openFile(file: ThreadFile, readOnly: boolean, engine: FileEngine): Promise<FileDevice> {
  const device = await openFileDevice(file.reopenPath,
    { readOnly: readOnly || file.readOnly, direct: file.direct, engine });
  let changed: string | null = null;
  try {
    if (identityOf(device.reopenPath) !== file.identity) changed = 'is another file now';
    else if (device.sizeSectors !== file.sizeSectors) changed = 'changed size';
    else if (device.limits.logicalBlockBytes !== file.logicalBlockBytes) changed = 'changed block size';
  } catch (error) {
    changed = `cannot be checked (${(error as Error).message})`;
  }
  if (changed !== null) {
    await device.close();
    throw new Error(`${file.name} ${changed} since the server opened it`);
  }
  return device;
}
