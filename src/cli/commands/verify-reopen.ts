// Owns how --verify reaches a destination's bytes rather than the page cache: an image file or
// block device is closed and reopened read-only with O_DIRECT (plain if the filesystem refuses
// O_DIRECT, with a note on stderr); in-process and network devices are read back through the
// device already open. Also the test gate: with DMIO_TEST_VERIFY_GATE=1 the command prints
// "dmio: verify gate" on stderr and waits for one line on stdin before verifying, so a test can
// corrupt a destination between the copy and its verification.

import { createInterface } from 'node:readline';
import type { BlockDevice } from '../../devices/block-device.js';
import { openForCli } from '../devices.js';

/** The environment variable of the verify gate test hook. */
export const VERIFY_GATE_ENV = 'DMIO_TEST_VERIFY_GATE';

/**
 * Returns a device to read destination `index` back from, reopened when it is a file; a
 * reopened device is also pushed onto `opened`, the list the command closes at the end.
 */
export async function reopenForVerify(
  spec: string, devices: BlockDevice[], index: number, opened: BlockDevice[],
): Promise<BlockDevice> {
  const device = devices[index]!;
  const inner = (device as { inner?: BlockDevice }).inner ?? device;
  if (inner.kind !== 'file' && inner.kind !== 'block') return device;
  await device.close();
  let reopened: BlockDevice;
  try {
    reopened = await openForCli({ spec, options: { readOnly: true, direct: true } });
  } catch {
    process.stderr.write(`dmio: ${spec}: O_DIRECT refused; verifying through the page cache\n`);
    reopened = await openForCli({ spec, options: { readOnly: true } });
  }
  devices[index] = reopened;
  opened.push(reopened);
  return reopened;
}

/** Waits for the test gate when it is enabled; otherwise returns at once. */
export async function waitForVerifyGate(): Promise<void> {
  if (process.env[VERIFY_GATE_ENV] !== '1') return;
  process.stderr.write('dmio: verify gate\n');
  const lines = createInterface({ input: process.stdin });
  await new Promise<void>((resolve) => lines.once('line', () => resolve()));
  lines.close();
}
