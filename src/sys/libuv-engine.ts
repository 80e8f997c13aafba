// Owns one fact about this process: whether libuv runs file operations through io_uring. Node
// 20 does so only when started with UV_USE_IO_URING=1 and the kernel lets it create a ring;
// libuv then owns `anon_inode:[io_uring]` descriptors, which is how the fact is read (the
// variable alone is not enough: a kernel or sandbox that refuses io_uring leaves libuv on its
// threadpool). Read once, on first use: libuv decides when its loop starts, never later.

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
  if (process.platform !== 'linux' || process.env['UV_USE_IO_URING'] !== '1') return 'threadpool';
  try {
    for (const name of fs.readdirSync('/proc/self/fd')) {
      if (readLink(`/proc/self/fd/${name}`) === 'anon_inode:[io_uring]') return 'io_uring';
    }
  } catch {
    // No /proc: assume the threadpool, the safe answer (inline reads stay on).
  }
  return 'threadpool';
}

function readLink(path: string): string | null {
  try {
    return fs.readlinkSync(path);
  } catch {
    return null; // The descriptor was the directory listing's own, now closed.
  }
}
