// The one limiter every layer bounds its work with: requests and held bytes admitted, FIFO
// start order with no overtaking, refusal of an entry that would overflow the FIFO, the
// all-or-nothing question `admitsAll`, and the reject path of `takeWaiting`.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { InflightLimiter, type LimiterEntry } from './inflight-limiter.js';

function recorder() {
  const started: string[] = [];
  const entry = (name: string, heldBytes: number): LimiterEntry => ({ heldBytes,
    start: () => started.push(name),
    reject: (error) => started.push(`x${name}:${error.message}`) });
  return { started, entry };
}

describe('InflightLimiter', () => {
  test('bounds requests and bytes, starts waiters in FIFO order, refuses overflow', () => {
    const limiter = new InflightLimiter({ requestsMax: 2, bytesMax: 100, waitingMax: 2 });
    const { started, entry } = recorder();
    assert.ok(limiter.admit(entry('a', 60)));
    assert.ok(limiter.admit(entry('b', 60)));  // waits: bytes
    assert.ok(limiter.admit(entry('c', 10)));  // waits: FIFO, though it would fit
    assert.equal(limiter.admit(entry('d', 10)), false);
    assert.deepEqual(started, ['a']);
    assert.equal(limiter.waitingCount, 2);
    limiter.release(60);
    assert.deepEqual(started, ['a', 'b', 'c']);
    assert.equal(limiter.requests, 2);
    assert.equal(limiter.bytes, 70);
    // An entry larger than bytesMax still runs alone.
    limiter.release(60);
    limiter.release(10);
    assert.ok(limiter.admit(entry('big', 1000)));
    assert.deepEqual(started.at(-1), 'big');
  });

  test('tryAcquire takes room only when nothing waits, and never queues', () => {
    const limiter = new InflightLimiter({ requestsMax: 1, bytesMax: 10, waitingMax: 1 });
    const { started, entry } = recorder();
    assert.equal(limiter.tryAcquire(5), true);
    assert.equal(limiter.tryAcquire(0), false, 'the one slot is taken');
    assert.equal(limiter.waitingCount, 0, 'a refused tryAcquire queues nothing');
    assert.ok(limiter.admit(entry('queued', 0)));
    limiter.release(5);
    assert.deepEqual(started, ['queued']);
    assert.equal(limiter.tryAcquire(0), false, 'still in flight');
  });

  test('admitsAll answers for a batch in order, admitting nothing', () => {
    const limiter = new InflightLimiter({ requestsMax: 2, bytesMax: 100, waitingMax: 2 });
    assert.equal(limiter.admitsAll([10, 10, 10, 10]), true, 'two start, two wait');
    assert.equal(limiter.admitsAll([10, 10, 10, 10, 10]), false, 'a third would not wait');
    assert.equal(limiter.admitsAll([90, 20, 0, 0]), false, 'the second waits on bytes, and '
      + 'the ones behind it may not overtake');
    assert.equal(limiter.admitsAll([90, 20, 0]), true);
    assert.equal(limiter.requests + limiter.waitingCount, 0, 'nothing admitted');
    const { entry } = recorder();
    limiter.admit(entry('a', 0));
    limiter.admit(entry('b', 0));
    limiter.admit(entry('c', 0));
    assert.equal(limiter.admitsAll([0]), true);
    assert.equal(limiter.admitsAll([0, 0]), false, 'the FIFO holds one more, not two');
  });

  test('takeWaiting hands back the waiters, typed, in order; they are never started', () => {
    class BrokenError extends Error {}
    const limiter = new InflightLimiter<BrokenError>({ requestsMax: 1, bytesMax: 1,
      waitingMax: 4 });
    const started: string[] = [];
    const entry = (name: string): LimiterEntry<BrokenError> => ({ heldBytes: 0,
      start: () => started.push(name),
      reject: (error) => started.push(`${name} rejected: ${error.message}`) });
    limiter.admit(entry('a'));
    limiter.admit(entry('b'));
    limiter.admit(entry('c'));
    for (const waiter of limiter.takeWaiting()) waiter.reject(new BrokenError('gone'));
    limiter.release(0);
    assert.deepEqual(started, ['a', 'b rejected: gone', 'c rejected: gone']);
    assert.equal(limiter.requests, 0);
  });

  test('a release without an admit is a broken invariant', () => {
    const limiter = new InflightLimiter({ requestsMax: 1, bytesMax: 1, waitingMax: 0 });
    assert.throws(() => limiter.release(0), { code: 'ERR_ASSERTION' });
  });
});
