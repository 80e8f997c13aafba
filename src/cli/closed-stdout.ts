// Owns keeping a closed stdout closed. When a shell starts dmio with stdout closed
// (`dmio read ... >&-`), Node opens /dev/null read-write on fd 1 before any JavaScript runs, so
// the command's output would vanish and count as delivered (exit 0). `keepClosedStdoutClosed`
// puts a read-only /dev/null on fd 1 instead: every write to stdout then fails with EBADF, as it
// would on the closed descriptor, and fd 1 stays taken, so no file the command opens later can
// land there and receive stdout's bytes.
//
// Node's stand-in is told from a user's `>/dev/null` by its access mode (/proc/self/fdinfo/1):
// a shell opens `>/dev/null` write-only, Node opens read-write. Nothing else tells them apart
// (Node sets close-on-exec on fd 1 either way), so a caller that passes /dev/null opened
// read-write is treated as a closed stdout: `1<>/dev/null`, and Node's `spawn` with stdout
// 'ignore' (libuv opens /dev/null read-write). docs/cli.md says so.

import { closeSync, openSync, readFileSync, readlinkSync } from 'node:fs';

/** The descriptor of standard output. */
const STDOUT_FD = 1;
/** The access-mode bits of open(2) flags, and the read-write mode Node opens /dev/null with. */
const O_ACCMODE = 0o3;
const O_RDWR = 0o2;

/** True when fd 1 is /dev/null opened read-write: what Node puts on a closed stdout. */
export function stdoutIsNodeStandIn(): boolean {
  let target: string;
  let fdinfo: string;
  try {
    target = readlinkSync(`/proc/self/fd/${STDOUT_FD}`);
    if (target !== '/dev/null') return false;
    fdinfo = readFileSync(`/proc/self/fdinfo/${STDOUT_FD}`, 'latin1');
  } catch {
    return false; // No /proc: nothing can be told, leave stdout as it is.
  }
  const flags = /^flags:\s*([0-7]+)$/m.exec(fdinfo);
  if (flags?.[1] === undefined) return false;
  return (Number.parseInt(flags[1], 8) & O_ACCMODE) === O_RDWR;
}

/**
 * Makes writes to stdout fail with EBADF when the process was started with stdout closed
 * (see the header). Call once at process start, before anything opens a file or touches
 * `process.stdout`.
 */
export function keepClosedStdoutClosed(): void {
  if (!stdoutIsNodeStandIn()) return;
  closeSync(STDOUT_FD);
  // open(2) returns the lowest free descriptor: fd 0 is open (Node guarantees 0-2), so this
  // is fd 1 again, now read-only.
  const fd = openSync('/dev/null', 'r');
  if (fd !== STDOUT_FD) {
    throw new Error(`reopening a closed stdout read-only gave fd ${fd}, not ${STDOUT_FD}`);
  }
}
