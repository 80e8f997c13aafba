// Owns how --verify reaches a destination's bytes rather than the page cache: a destination
// named by a path (an image file or block device) is closed and reopened read-only with
// O_DIRECT (plain if the filesystem refuses O_DIRECT, with a note on stderr); in-process and
// network devices are read back through the device already open. Which is which is decided by
// the spec, not by looking inside the device (it may be wrapped). Before the read-back, the
// context's `beforeVerify` runs when given (a test corrupts a destination there). The hashing
// (verify.ts, with Node's crypto) is imported by `createSourceHashes`, when --verify is given.

import { parseDeviceSpec, type BlockDevice } from '../../index.js';
import { tell, type CliContext } from '../context.js';
import { openForCli } from '../devices.js';
import type { SourceHashes } from '../verify.js';

/**
 * The chunk hashes a --verify copy records, for chunks of `chunkSectors` from `firstSector`.
 * verify.ts is imported here, by the copy that verifies, not with the copy command.
 */
export async function createSourceHashes(
  firstSector: number, chunkSectors: number,
): Promise<SourceHashes> {
  const { SourceHashes: Hashes } = await import('../verify.js');
  return new Hashes(firstSector, chunkSectors);
}

/**
 * Returns a device to read destination `index` back from, reopened when its spec is a path; a
 * reopened device is also pushed onto `opened`, the list the command closes at the end.
 */
export async function reopenForVerify(
  cli: CliContext, spec: string, devices: BlockDevice[], index: number, opened: BlockDevice[],
): Promise<BlockDevice> {
  const device = devices[index]!;
  if (parseDeviceSpec(spec).kind !== 'file') return device;
  await device.close();
  let reopened: BlockDevice;
  try {
    reopened = await openForCli(cli, { spec, options: { readOnly: true, direct: true } });
  } catch {
    tell(cli, `dmio: ${spec}: O_DIRECT refused; verifying through the page cache\n`);
    reopened = await openForCli(cli, { spec, options: { readOnly: true } });
  }
  devices[index] = reopened;
  opened.push(reopened);
  return reopened;
}

/** Runs the context's `beforeVerify`, when there is one. */
export async function beforeVerify(cli: CliContext): Promise<void> {
  if (cli.beforeVerify !== null) await cli.beforeVerify();
}
