// Inline buffered writes (file-inline-write.ts) on a real file, with the clock and the
// dirty-page headroom under the test's control: which steps are taken (buffered, whole pages,
// at most 1 MiB), that a taken step's bytes are in the file and its callback runs on a later
// turn, the budget of half the headroom read at most every DIRTY_SAMPLE_MS, the back-off after
// a stalled write (doubling, capped, forgotten after a quiet spell), no inline write while
// another writing step runs off the loop on the same device, which devices may write inline
// at all (block devices and local filesystems; not ramfs, standing in for NFS or FUSE, which a
// test cannot mount), and a failing write reporting its error.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { MIB, PAGE_SIZE } from '../constants.js';
import { tempDir } from '../../test/helpers/tmp.js';
import { pattern } from '../../test/helpers/requests.js';
import type { FileTarget } from './file-engine.js';
import { mountScratch } from '../../test/helpers/tmpfs.js';
import { requireLoopOrSkip, withLoopDevice } from '../../test/helpers/loop.js';
import { IoUringEngine } from './file-ring.js';
import { openFileDevice } from './file-device.js';
import { deviceRequest, submitted } from '../../test/helpers/requests.js';
import {
  DIRTY_SAMPLE_MS, INLINE_WRITE_FILESYSTEMS, writesInlineAllowed, INLINE_WRITE_BACKOFF_MAX_MS, INLINE_WRITE_BACKOFF_MS, INLINE_WRITE_BYTES_MAX,
  INLINE_WRITE_STALL_MS, InlineWrites,
} from './file-inline-write.js';
import type { Step, StepResult } from './file-steps.js';

/** A clock the test sets, which can also return queued values (a write's start and end). */
class TestClock {
  now = 0;
  readonly queued: number[] = [];
  readonly read = (): number => this.queued.shift() ?? this.now;
}

interface Harness {
  readonly inline: InlineWrites;
  readonly clock: TestClock;
  readonly target: FileTarget;
  readonly path: string;
  /** Headroom the environment reports, and how often it was asked. */
  headroomBytes: number | null;
  asked: number;
}

async function harness(t: TestContext, flags = 'w+'): Promise<Harness> {
  // On tmpfs, a filesystem written inline wherever the tests run.
  const path = join(await tempDir(t, { parent: '/dev/shm' }), 'inline.img');
  fs.writeFileSync(path, new Uint8Array(4 * MIB));
  const fd = fs.openSync(path, flags);
  t.after(() => fs.closeSync(fd));
  const clock = new TestClock();
  const state: Harness = {
    clock, path, headroomBytes: 64 * MIB, asked: 0,
    target: { fd, direct: false, inlineReads: false,
      stats: { inlineReads: 0, inlineWrites: 0, ringTransfers: 0 } },
    inline: new InlineWrites({
      nowMs: clock.read,
      headroomBytes: () => {
        state.asked += 1;
        return state.headroomBytes;
      },
    }),
  };
  return state;
}

function write(positionBytes: number, ...buffers: Uint8Array[]): Step {
  return { kind: 'write', buffers, positionBytes };
}

/** Tries `step`; resolves with whether it was taken and, if so, its result. */
async function attempt(h: Harness, step: Step): Promise<StepResult | 'not taken'> {
  let synchronous = true;
  let resolve: (result: StepResult) => void = () => undefined;
  const done = new Promise<StepResult>((settle) => {
    resolve = settle;
  });
  const taken = h.inline.tryWrite(h.target, step, (result) => {
    assert.equal(synchronous, false, 'a callback never runs inside tryWrite');
    resolve(result);
  });
  synchronous = false;
  return taken ? done : 'not taken';
}

test('whole-page buffered writes of at most 1 MiB are written inline, on a later turn',
  async (t) => {
    const h = await harness(t);
    const data = pattern(3 * PAGE_SIZE, 5);
    const halves = [data.subarray(0, PAGE_SIZE), data.subarray(PAGE_SIZE)];
    assert.deepEqual(await attempt(h, write(2 * PAGE_SIZE, ...halves)),
      { bytes: data.length, error: null });
    assert.equal(h.target.stats.inlineWrites, 1);
    assert.deepEqual(fs.readFileSync(h.path).subarray(2 * PAGE_SIZE, 5 * PAGE_SIZE),
      Buffer.from(data));
    const largest = pattern(INLINE_WRITE_BYTES_MAX, 6);
    assert.deepEqual(await attempt(h, write(MIB, largest)), { bytes: MIB, error: null });
    assert.deepEqual(fs.readFileSync(h.path).subarray(MIB, 2 * MIB), Buffer.from(largest));
    assert.equal(h.target.stats.inlineWrites, 2);
  });

test('partial pages, more than 1 MiB, O_DIRECT and reads are left to the ring, untouched',
  async (t) => {
    const h = await harness(t);
    const before = fs.readFileSync(h.path);
    const proc = fs.openSync('/proc/self/stat', 'r');
    t.after(() => fs.closeSync(proc));
    const cases: Array<[string, Step, FileTarget]> = [
      ['position inside a page', write(512, pattern(PAGE_SIZE, 1)), h.target],
      ['length not whole pages', write(0, pattern(PAGE_SIZE + 512, 1)), h.target],
      ['over 1 MiB', write(0, pattern(MIB + PAGE_SIZE, 1)), h.target],
      ['empty', write(0), h.target],
      ['O_DIRECT', write(0, pattern(PAGE_SIZE, 1)), { ...h.target, direct: true }],
      ['a device not allowed', write(0, pattern(PAGE_SIZE, 1)),
        { ...h.target, fd: proc }],
      ['a read', { kind: 'read', buffers: [new Uint8Array(PAGE_SIZE)], positionBytes: 0 },
        h.target],
    ];
    for (const [name, step, target] of cases) {
      assert.equal(h.inline.tryWrite(target, step, () => assert.fail(name)), false, name);
    }
    assert.deepEqual(fs.readFileSync(h.path), before, 'nothing written');
    assert.equal(h.target.stats.inlineWrites, 0);
  });

test('the budget is half the headroom, read again after DIRTY_SAMPLE_MS', async (t) => {
  const h = await harness(t);
  h.headroomBytes = 2 * MIB; // A budget of 1 MiB: four writes of 256 KiB.
  const quarter = pattern(MIB / 4, 2);
  for (let index = 0; index < 4; index += 1) {
    assert.notEqual(await attempt(h, write(index * quarter.length, quarter)), 'not taken');
  }
  assert.equal(await attempt(h, write(MIB, quarter)), 'not taken', 'budget spent');
  assert.equal(h.asked, 1, 'the headroom is read once per DIRTY_SAMPLE_MS');
  h.clock.now = DIRTY_SAMPLE_MS;
  h.headroomBytes = 0; // Now at the freerun point: nothing inline.
  assert.equal(await attempt(h, write(MIB, quarter)), 'not taken');
  assert.equal(h.asked, 2);
  h.clock.now = 2 * DIRTY_SAMPLE_MS;
  h.headroomBytes = null; // Unreadable: nothing inline either.
  assert.equal(await attempt(h, write(MIB, quarter)), 'not taken');
  h.clock.now = 3 * DIRTY_SAMPLE_MS;
  h.headroomBytes = MIB;
  assert.notEqual(await attempt(h, write(MIB, quarter)), 'not taken');
  assert.equal(h.inline.counters.samples, 4);
});

test('a stalled write sends writes to the ring for a back-off that doubles, capped, then resets',
  async (t) => {
    const h = await harness(t);
    const page = pattern(PAGE_SIZE, 3);
    /** A write that starts at `atMs` and takes `tookMs`; whether it was taken. */
    const writeAt = async (atMs: number, tookMs = 0): Promise<boolean> => {
      h.clock.now = atMs;
      h.clock.queued.push(atMs, atMs + tookMs);
      const taken = (await attempt(h, write(0, page))) !== 'not taken';
      h.clock.queued.length = 0;
      return taken;
    };
    assert.equal(await writeAt(0, INLINE_WRITE_STALL_MS - 1), true, 'under the stall time');
    assert.equal(h.inline.counters.stalls, 0);
    assert.equal(await writeAt(1000, INLINE_WRITE_STALL_MS), true, 'the stalled write completes');
    assert.equal(h.inline.counters.stalls, 1);
    let stalledAt = 1000 + INLINE_WRITE_STALL_MS;
    assert.equal(await writeAt(stalledAt + INLINE_WRITE_BACKOFF_MS - 1), false, 'backing off');
    assert.equal(await writeAt(stalledAt + INLINE_WRITE_BACKOFF_MS, 50), true, 'tried again');
    stalledAt += INLINE_WRITE_BACKOFF_MS + 50;
    assert.equal(await writeAt(stalledAt + 2 * INLINE_WRITE_BACKOFF_MS - 1), false, 'doubled');
    // Stall after stall, the back-off stops growing at its cap.
    for (let round = 0; round < 10; round += 1) {
      const backoffMs = Math.min(INLINE_WRITE_BACKOFF_MAX_MS,
        INLINE_WRITE_BACKOFF_MS * 2 ** (round + 1));
      assert.equal(await writeAt(stalledAt + backoffMs, 20), true, `round ${round}`);
      stalledAt += backoffMs + 20;
    }
    assert.equal(await writeAt(stalledAt + INLINE_WRITE_BACKOFF_MAX_MS - 1), false, 'capped');
    // Fast writes after the back-off; a stall more than the cap after its end starts over.
    assert.equal(await writeAt(stalledAt + INLINE_WRITE_BACKOFF_MAX_MS), true);
    const nearStartMs = stalledAt + 2 * INLINE_WRITE_BACKOFF_MAX_MS - INLINE_WRITE_STALL_MS - 1;
    assert.equal(await writeAt(nearStartMs, INLINE_WRITE_STALL_MS), true,
      'a stall within the cap of the back-off\'s end');
    stalledAt = nearStartMs + INLINE_WRITE_STALL_MS;
    assert.equal(await writeAt(stalledAt + INLINE_WRITE_BACKOFF_MAX_MS - 1), false,
      'so still at the cap');
    const later = stalledAt + 2 * INLINE_WRITE_BACKOFF_MAX_MS + 1;
    assert.equal(await writeAt(later, INLINE_WRITE_STALL_MS), true);
    stalledAt = later + INLINE_WRITE_STALL_MS;
    assert.equal(await writeAt(stalledAt + INLINE_WRITE_BACKOFF_MS - 1), false);
    assert.equal(await writeAt(stalledAt + INLINE_WRITE_BACKOFF_MS), true, 'first back-off again');
    assert.equal(h.inline.counters.stalls, 14);
  });

test('a write that fails inline reports its error to the callback', async (t) => {
  const h = await harness(t, 'r'); // Read-only descriptor: pwrite fails with EBADF.
  const result = await attempt(h, write(0, pattern(PAGE_SIZE, 4)));
  assert.notEqual(result, 'not taken');
  assert.equal((result as StepResult).bytes, 0);
  assert.equal(((result as StepResult).error as NodeJS.ErrnoException).code, 'EBADF');
  assert.equal(h.target.stats.inlineWrites, 0);
  assert.deepEqual(fs.readFileSync(h.path), Buffer.alloc(4 * MIB), 'nothing written');
});

test('no write runs inline while another step that writes runs off the loop on that device',
  async (t) => {
    const h = await harness(t);
    const other = await harness(t);
    const page = pattern(PAGE_SIZE, 7);
    let completions = 0;
    const first = h.inline.offLoop(h.target, () => {
      completions += 1;
    });
    const second = h.inline.offLoop(h.target, () => {
      completions += 1;
    });
    assert.equal(await attempt(h, write(0, page)), 'not taken', 'behind two steps');
    assert.notEqual(await attempt({ ...other, inline: h.inline }, write(0, page)), 'not taken',
      'another device is not held');
    first({ bytes: 0, error: null });
    assert.equal(await attempt(h, write(0, page)), 'not taken', 'behind one step');
    second({ bytes: 0, error: null });
    assert.equal(completions, 2, 'each marked callback still runs once');
    assert.notEqual(await attempt(h, write(0, page)), 'not taken', 'none left');
    assert.deepEqual(fs.readFileSync(h.path).subarray(0, PAGE_SIZE), Buffer.from(page));
  });

test('which devices may write inline: local filesystems and block devices, not ramfs',
  async (t) => {
    const shm = fs.openSync('/dev/shm', 'r');
    t.after(() => fs.closeSync(shm));
    assert.equal(writesInlineAllowed(shm), true, 'tmpfs');
    assert.equal(INLINE_WRITE_FILESYSTEMS.get(0xef53), 'ext2/3/4');
    const proc = fs.openSync('/proc/self/stat', 'r');
    t.after(() => fs.closeSync(proc));
    assert.equal(writesInlineAllowed(proc), false, 'procfs');
    assert.equal(writesInlineAllowed(-1), false, 'a descriptor that cannot be asked');
    if (!requireLoopOrSkip(t)) return;
    // A loop device over a file on ramfs (off the list): allowed as a block device.
    const dir = mountScratch(t, 'ramfs');
    if (dir === null) return;
    const image = join(dir, 'loop.img');
    fs.writeFileSync(image, new Uint8Array(MIB));
    await withLoopDevice(image, {}, async (loop) => {
      const fd = fs.openSync(loop, 'r');
      try {
        assert.equal(writesInlineAllowed(fd), true, 'a block device');
      } finally {
        fs.closeSync(fd);
      }
    });
    const path = join(dir, 'ram.img');
    fs.writeFileSync(path, new Uint8Array(MIB));
    // Closed in the test itself: `t.after` hooks run in order, the unmount first.
    const engine = new IoUringEngine({ sqPollIdleMs: 0, inlineWrites: true });
    const device = await openFileDevice(path, { engine });
    const page = pattern(PAGE_SIZE, 8);
    try {
      assert.equal(await submitted(device, deviceRequest('write', 8, 8, [page])), null);
      assert.equal(device.stats.inlineWrites, 0, 'ramfs is not on the list: never inline');
      assert.deepEqual(fs.readFileSync(path).subarray(PAGE_SIZE, 2 * PAGE_SIZE),
        Buffer.from(page));
    } finally {
      await device.close();
    }
    // The same engine writes a tmpfs file inline.
    const shmDir = await tempDir(t, { parent: '/dev/shm' });
    fs.writeFileSync(join(shmDir, 'shm.img'), new Uint8Array(MIB));
    const onTmpfs = await openFileDevice(join(shmDir, 'shm.img'), { engine });
    try {
      assert.equal(await submitted(onTmpfs, deviceRequest('write', 8, 8, [page])), null);
      assert.equal(onTmpfs.stats.inlineWrites, 1);
    } finally {
      await onTmpfs.close();
      engine.close();
    }
  });
