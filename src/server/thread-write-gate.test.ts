// The cross-thread write gate, two slots on one thread: writes share it, a merge waits for
// every slot's writes and holds back new ones, and a dead slot's holds can be cleared.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { clearWriteGateSlot, createWriteGateState, ThreadWriteGate } from './thread-write-gate.js';

/** Resolves with true when `promise` settles within `ms`, false otherwise. */
async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((resolve) => { timer = setTimeout(() => resolve(false), ms); });
  const result = await Promise.race([promise.then(() => true), timeout]);
  clearTimeout(timer);
  return result;
}

test('writes of two slots share the gate at once, without waiting', () => {
  const state = createWriteGateState(2);
  const first = new ThreadWriteGate(state, 0).enter(false);
  const second = new ThreadWriteGate(state, 1).enter(false);
  assert.equal(typeof first, 'function', 'granted synchronously');
  assert.equal(typeof second, 'function', 'granted synchronously');
  (first as () => void)();
  (second as () => void)();
});

test('a merge waits for the other slot\'s writes, and new writes wait for the merge', async () => {
  const state = createWriteGateState(2);
  const writer = new ThreadWriteGate(state, 0);
  const merger = new ThreadWriteGate(state, 1);
  const write = writer.enter(false) as () => void;
  const merge = Promise.resolve(merger.enter(true));
  assert.equal(await settlesWithin(merge, 50), false, 'the merge waits for the write');
  write();
  const releaseMerge = await merge;
  const later = Promise.resolve(writer.enter(false));
  assert.equal(await settlesWithin(later, 50), false, 'a new write waits for the merge');
  releaseMerge();
  const releaseLater = await later;
  releaseLater();
  releaseLater(); // A second release is a no-op.
  const again = merger.enter(true);
  assert.equal(await settlesWithin(Promise.resolve(again), 50), true, 'the gate is free again');
  (await again)();
});

test('two merges take turns', async () => {
  const state = createWriteGateState(2);
  const first = await new ThreadWriteGate(state, 0).enter(true);
  const second = Promise.resolve(new ThreadWriteGate(state, 1).enter(true));
  assert.equal(await settlesWithin(second, 50), false, 'the second merge waits');
  first();
  (await second)();
});

test('clearing a dead slot frees its writes and its merge', async () => {
  const state = createWriteGateState(2);
  new ThreadWriteGate(state, 0).enter(false); // Never released: its thread "dies".
  const merge = Promise.resolve(new ThreadWriteGate(state, 1).enter(true));
  assert.equal(await settlesWithin(merge, 50), false);
  clearWriteGateSlot(state, 0);
  const releaseMerge = await merge;
  releaseMerge();

  await new ThreadWriteGate(state, 0).enter(true); // The dead slot's merge, never released.
  const write = Promise.resolve(new ThreadWriteGate(state, 1).enter(false));
  assert.equal(await settlesWithin(write, 50), false);
  clearWriteGateSlot(state, 0);
  (await write)();
});
