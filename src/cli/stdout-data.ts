// Owns the checks made before a command sends device data to stdout (`dmio read` without
// --output, `dmio copy SOURCE -`): stdout must not be the device being read (the output would
// overwrite what is still to be read), and must not be a block device, which Node turns into a
// stream that silently drops every write (the command would report bytes that went nowhere).
// Both are usage errors (exit 2), found before anything is read or written. The checks look
// at the descriptor behind the context's stdout; a test's stream has none and is not checked.

import { fstatSync, type BigIntStats } from 'node:fs';
import type { CliContext } from './context.js';
import { sameIdentity, statsIdentity, type StorageIdentity } from './same-storage.js';
import { UsageError } from './exit-status.js';

/** What the descriptor behind stdout is, or null when it is closed or there is none. */
export function fstatStdout(cli: CliContext): BigIntStats | null {
  if (cli.stdout.fd === null) return null;
  try {
    return fstatSync(cli.stdout.fd, { bigint: true });
  } catch {
    return null;
  }
}

/**
 * Refuses stdout as the destination of data read from `spec` (whose identity is
 * `deviceIdentity`): a block device, or the same storage as the device. Returns what stdout is.
 */
export function checkStdoutForData(
  cli: CliContext, spec: string, deviceIdentity: StorageIdentity | null,
): BigIntStats | null {
  const stats = fstatStdout(cli);
  if (stats === null) return null;
  if (stats.isBlockDevice()) {
    throw new UsageError('stdout is a block device, which Node writes as a stream that drops ' +
      'every byte: name the device instead (dmio copy SOURCE /dev/X, or --output /dev/X)');
  }
  if (sameIdentity(deviceIdentity, statsIdentity(stats))) {
    throw new UsageError(`stdout is ${spec} itself, the device being read: writing it would ` +
      'destroy what is still to be read');
  }
  return stats;
}
