// libuv's file engine as the library reads it, in child processes started with and without
// UV_USE_IO_URING=1, and what it changes: under io_uring a burst of cached reads goes mostly
// through the ring, while on the threadpool every cached read is served inline.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, it } from 'node:test';
import { INLINE_READ_RING_INFLIGHT_MAX } from '../devices/file-inline-read.js';
import { tempDir } from '../../test/helpers/tmp.js';

const execFileAsync = promisify(execFile);
const FIXTURE = fileURLToPath(new URL('../../test/fixtures/inline-engine.ts', import.meta.url));

interface Report { engine: string; inline: number; libuv: number; intact: boolean }

async function runChild(directory: string, uring: boolean): Promise<Report> {
  const env = { ...process.env };
  delete env['UV_USE_IO_URING'];
  if (uring) env['UV_USE_IO_URING'] = '1';
  const { stdout } = await execFileAsync(process.execPath, ['--import', 'tsx', FIXTURE, directory],
    { env });
  return JSON.parse(stdout) as Report;
}

/** True when this kernel lets processes create io_uring rings (the sysctl exists from 6.6). */
function kernelAllowsIoUring(): boolean {
  try {
    return readFileSync('/proc/sys/kernel/io_uring_disabled', 'utf8').trim() === '0';
  } catch {
    return true;
  }
}

describe('libuv file engine', () => {
  it('is the threadpool without UV_USE_IO_URING=1: every cached read is served inline', async (t) => {
    const report = await runChild(await tempDir(t), false);
    assert.deepEqual(report, { engine: 'threadpool', inline: 16, libuv: 0, intact: true });
  });

  it('is io_uring with UV_USE_IO_URING=1: a burst of reads goes mostly to the ring', async (t) => {
    const report = await runChild(await tempDir(t), true);
    if (!kernelAllowsIoUring()) {
      assert.deepEqual(report, { engine: 'threadpool', inline: 16, libuv: 0, intact: true });
      return;
    }
    assert.equal(report.engine, 'io_uring');
    assert.equal(report.intact, true);
    assert.equal(report.inline + report.libuv, 16);
    // The first reads find few requests in flight and are served inline; the rest, queued
    // behind them, go to the ring.
    assert.equal(report.inline, INLINE_READ_RING_INFLIGHT_MAX);
  });
});
