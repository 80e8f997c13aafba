// libuv's file engine as the library reads it, in child processes started with and without
// UV_USE_IO_URING=1, checked against an independent sign (a kernel SQPOLL thread in the
// process), and what it changes: under io_uring a burst of cached reads goes mostly through the
// ring, while on the threadpool every cached read is served inline.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, it } from 'node:test';
import { INLINE_READ_RING_INFLIGHT_MAX } from '../devices/file-inline-read.js';
import { tempDir } from '../../test/helpers/tmp.js';

const execFileAsync = promisify(execFile);
const FIXTURE = fileURLToPath(new URL('../../test/fixtures/inline-engine.ts', import.meta.url));

interface Report {
  engine: string; sqpollThread: boolean; inline: number; libuv: number; intact: boolean;
}

async function runChild(directory: string, uring: boolean): Promise<Report> {
  const env = { ...process.env };
  delete env['UV_USE_IO_URING'];
  if (uring) env['UV_USE_IO_URING'] = '1';
  const { stdout } = await execFileAsync(process.execPath, ['--import', 'tsx', FIXTURE, directory],
    { env });
  return JSON.parse(stdout) as Report;
}

/** What a child must report, given whether libuv really runs an SQPOLL ring in it. */
function expectedFor(report: Report): Report {
  return report.sqpollThread ?
    { engine: 'io_uring', sqpollThread: true, inline: INLINE_READ_RING_INFLIGHT_MAX,
      libuv: 16 - INLINE_READ_RING_INFLIGHT_MAX, intact: true } :
    { engine: 'threadpool', sqpollThread: false, inline: 16, libuv: 0, intact: true };
}

describe('libuv file engine', () => {
  it('is the threadpool without UV_USE_IO_URING=1: every cached read is inline', async (t) => {
    const report = await runChild(await tempDir(t), false);
    assert.deepEqual(report, {
      engine: 'threadpool', sqpollThread: false, inline: 16, libuv: 0, intact: true,
    });
  });

  it('follows libuv with UV_USE_IO_URING=1: on its ring, most of a burst goes there', async (t) => {
    const report = await runChild(await tempDir(t), true);
    // Where the kernel allows io_uring (this project's CI does), libuv runs an SQPOLL ring and
    // the first reads, finding few requests in flight, are served inline, the rest by the ring.
    // Where it refuses, libuv stays on its threadpool and every read is inline.
    assert.deepEqual(report, expectedFor(report));
    if (process.env['CI'] === 'true') assert.equal(report.engine, 'io_uring', 'CI runs io_uring');
  });
});
