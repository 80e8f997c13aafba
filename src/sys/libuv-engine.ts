// Owns one fact about this process: whether libuv runs file operations through io_uring. libuv
// does so on a ring with a kernel submission-polling thread (SQPOLL), which it sets up when its
// loop starts if it is allowed to (Node 20.3 to 20.11.0 by default; later Node 20 releases only
// with UV_USE_IO_URING=1); a kernel or sandbox that refuses io_uring leaves it on its
// threadpool, and newer libuv also keeps a ring without SQPOLL for its own polling, which does
// not carry file operations. So the fact is read from the process's io_uring descriptors: one
// whose fdinfo names an SQPOLL thread (`SqThread:` other than -1) is libuv's file ring. Read
// once, on first use: libuv decides when its loop starts, never later.

import fs from 'node:fs';

/** Which engine libuv uses for file operations in this process. */
export type LibuvFileEngine = 'io_uring' | 'threadpool';

/** The answer, once read (a cache of a fact fixed at start-up). */
let engine: LibuvFileEngine | undefined;

/** The engine libuv uses for `fs` calls in this process. */
export function libuvFileEngine(): LibuvFileEngine {
  engine ??= readEngine();
  return engine;
}

function readEngine(): LibuvFileEngine {
  if (process.platform !== 'linux') return 'threadpool';
  try {
    for (const name of fs.readdirSync('/proc/self/fd')) {
      if (isSqpollRing(name)) return 'io_uring';
    }
  } catch {
    // No /proc: assume the threadpool, the safe answer (inline reads stay on).
  }
  return 'threadpool';
}

/** True when descriptor `name` of this process is an io_uring ring with an SQPOLL thread. */
function isSqpollRing(name: string): boolean {
  try {
    if (fs.readlinkSync(`/proc/self/fd/${name}`) !== 'anon_inode:[io_uring]') return false;
    const info = fs.readFileSync(`/proc/self/fdinfo/${name}`, 'utf8');
    const match = /^SqThread:\s*(-?\d+)/m.exec(info);
    return match !== null && match[1] !== '-1';
  } catch {
    return false; // The descriptor was the directory listing's own, now closed.
  }
}
