// The copy slots on their own: at most COPY_SLOTS_MAX pieces of work run, the rest start in
// submission order as slots are released, a release given twice frees one slot, and work that
// throws when started at once gives its slot back and the throw reaches the caller; an instance
// of its own is independent of the default one.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  COPY_SLOTS_MAX, CopySlots, copySlotsInUse, defaultCopySlots, type ReleaseSlot,
} from './copy-slots.js';
import { isDmIoError } from '../errors.js';

const slots = defaultCopySlots();
const withCopySlot = (work: (release: ReleaseSlot) => void): void => slots.run(work);

describe('copy slots', () => {
  it('runs at most COPY_SLOTS_MAX at once and starts the rest in submission order', () => {
    assert.ok(COPY_SLOTS_MAX >= 2);
    const started: number[] = [];
    const releases = new Map<number, ReleaseSlot>();
    const total = COPY_SLOTS_MAX + 3;
    for (let index = 0; index < total; index += 1) {
      withCopySlot((release) => {
        started.push(index);
        releases.set(index, release);
      });
    }
    assert.deepEqual(started, [...Array(COPY_SLOTS_MAX).keys()]);
    assert.deepEqual(copySlotsInUse(), { running: COPY_SLOTS_MAX, waiting: 3 });
    // Releasing the second one started hands its slot to the first waiting, not a later one.
    releases.get(1)!();
    releases.get(1)!(); // a second release of the same slot frees nothing more
    assert.deepEqual(started.slice(COPY_SLOTS_MAX), [COPY_SLOTS_MAX]);
    assert.deepEqual(copySlotsInUse(), { running: COPY_SLOTS_MAX, waiting: 2 });
    for (let index = 0; index < total; index += 1) {
      if (index !== 1) releases.get(index)?.();
    }
    // Later releases started the last two in order; releasing those (done above, as they were
    // registered before the loop reached them) leaves nothing running.
    assert.deepEqual(started, [...Array(total).keys()]);
    for (const release of releases.values()) release();
    assert.deepEqual(copySlotsInUse(), { running: 0, waiting: 0 });
  });

  it('work that throws when started at once gives its slot back to the caller', () => {
    assert.throws(() => withCopySlot(() => {
      throw new Error('cannot start');
    }), /cannot start/);
    assert.deepEqual(copySlotsInUse(), { running: 0, waiting: 0 });
    let ran = false;
    withCopySlot((release) => {
      ran = true;
      release();
    });
    assert.equal(ran, true);
    assert.deepEqual(copySlotsInUse(), { running: 0, waiting: 0 });
  });

  it('an instance of its own bounds only its own work; bad sizes are typed errors', () => {
    const own = new CopySlots(1);
    const releases: ReleaseSlot[] = [];
    own.run((release) => releases.push(release));
    own.run((release) => releases.push(release));
    assert.deepEqual(own.inUse, { running: 1, waiting: 1 });
    assert.deepEqual(copySlotsInUse(), { running: 0, waiting: 0 }, 'the default is untouched');
    releases[0]!();
    assert.deepEqual(own.inUse, { running: 1, waiting: 0 });
    releases[1]!();
    assert.deepEqual(own.inUse, { running: 0, waiting: 0 });
    for (const bad of [0, 1.5, -1]) {
      assert.throws(() => new CopySlots(bad), (error: unknown) =>
        isDmIoError(error) && error.code === 'DMIO_ERR_OUT_OF_RANGE');
    }
  });
});
